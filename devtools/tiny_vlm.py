"""Make a tiny Idefics3-style vision-language model (random weights, real processor config) for local runs and tests.

A SigLIP-style vision tower (56x56 images, 14x14 patches, pixel shuffle by 2: 4 image tokens per image, no
tiling), a connector and the tiny Llama language model of devtools/tiny_model.py (its tokenizer plus Idefics3's
image tokens), all made here with a fixed seed; nothing is downloaded. head_dim is 32 in both towers (vLLM's CPU
attention needs 32, 64 or 128). Idefics3 because vLLM 0.32's LLaVA, PaliGemma, Qwen2-VL and Gemma 3 modules import
torchvision (directly or via Pixtral), which the CPU build lacks.

    python -m devtools.tiny_vlm [FOLDER]      # default .models/tiny-idefics3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from devtools.tiny_model import SPECIAL_TOKENS, TINY_LLAMA_CONFIG, chatml_tokenizer

DEFAULT_PATH = Path(".models/tiny-idefics3")
IMAGE_TOKEN, FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN = "<image>", "<fake_token_around_image>", "<global-img>"
IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR = 56, 14, 2
IMAGE_TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
# In the prompt an image is <fake_token_around_image><global-img><image> x 4<fake_token_around_image>.
PROMPT_TOKENS_PER_IMAGE = IMAGE_TOKENS_PER_IMAGE + 3

VISION_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH_SIZE,
}

# Image parts become the image token; vLLM sees that this template takes OpenAI-style content lists.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_tiny_vlm(path: str | Path = DEFAULT_PATH, *, seed: int = 0) -> Path:
    """Write the tiny vision-language model to `path` (skipped if it is already there) and return the folder."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "processor_config.json").exists():
        return path

    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
    )

    path.mkdir(parents=True, exist_ok=True)
    image_tokens = [IMAGE_TOKEN, FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, "<end_of_utterance>"]
    tokenizer = chatml_tokenizer(additional_special_tokens=image_tokens)

    text_config = LlamaConfig(
        **{k: v for k, v in TINY_LLAMA_CONFIG.items() if k not in ("architectures", "model_type", "torch_dtype")},
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Idefics3Config(
        vision_config=VISION_CONFIG,
        text_config=text_config.to_dict(),
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]

    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).to(torch.float16)
    with torch.no_grad():
        # As in the tiny model: no special token (EOS, image tokens) is ever generated, so tests get text.
        special_ids = tokenizer.convert_tokens_to_ids([*SPECIAL_TOKENS, *image_tokens])
        model.lm_head.weight[special_ids] = 0
    model.save_pretrained(path, safe_serialization=True)

    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_TOKENS_PER_IMAGE,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    tokenizer_config_path = path / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="output folder")
    args = parser.parse_args()
    print(make_tiny_vlm(args.path))


if __name__ == "__main__":
    main()
