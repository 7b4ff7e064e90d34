"""Make a tiny Llama-style model (random weights, real tokenizer, chat template) for local runs and tests.

The Hugging Face Hub is not needed: the config, the weights and the tokenizer are all made here,
deterministically (fixed seed), so greedy outputs repeat across runs.

    python -m worker.tiny_model [FOLDER]      # default .models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_PATH = Path(".models/tiny-llama")

# head_dim = hidden_size / heads = 32: vLLM's CPU attention needs 32, 64 or 128.
# 4 heads / 2 KV heads / FFN 256 split evenly for TP 1, 2 and 4, so TP=2 runs on the CPU backend.
TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Enough varied text (with multi-byte characters) for a small byte-level BPE vocabulary.
_TRAINING_TEXT = """
Tensor parallelism splits every weight matrix of a transformer across the GPUs of one node.
The attention heads are divided evenly, and the feed-forward layers are split by columns and rows.
Two all-reduce operations per layer combine the partial results over NVLink or PCIe.
RunPod Serverless workers take jobs from a queue, stream results back and scale to zero.
vLLM batches requests continuously and pages the key-value cache in blocks.
Hello, world! How are you today? I am fine, thank you. What is the capital of France? Paris.
Once upon a time there was a small model that answered every question with a story.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 42.
Unicode: café naïve résumé façade — “quotes” … 東京 日本語 中文 한국어 Привет мир 😀 🚀 ✓ ±×÷ €£¥.
"""


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on the text above, with the chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    return tokenizer


def make_tiny_model(path: str | Path = DEFAULT_PATH, *, seed: int = 0) -> Path:
    """Write the tiny model to `path` (skipped if it is already there) and return the folder."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    raw_tokenizer = build_tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = TINY_LLAMA_CONFIG["max_position_embeddings"]

    config = LlamaConfig(
        **{k: v for k, v in TINY_LLAMA_CONFIG.items() if k not in ("architectures", "model_type")},
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = TINY_LLAMA_CONFIG["architectures"]

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float16)
    with torch.no_grad():
        # Zero logits for the special tokens: random weights would otherwise end some generations at
        # once with EOS, and tests want text. Stop strings and max_tokens still end generations.
        model.lm_head.weight[tokenizer.all_special_ids] = 0
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    # transformers may put the template in its own file; keep it in tokenizer_config.json too,
    # where every loader looks.
    tokenizer_config_path = path / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="output folder")
    args = parser.parse_args()
    print(make_tiny_model(args.path))


if __name__ == "__main__":
    main()
