"""Make tiny models (random weights, real tokenizer) for local runs and tests: a Llama-style generative
model with a chat template, and BERT-style pooling models (an embedder, a cross-encoder, a classifier)
whose task vLLM detects from the architecture, as it does for real ones.

The Hugging Face Hub is not needed: the config, the weights and the tokenizer are all made here,
deterministically (fixed seed), so greedy outputs repeat across runs.

    python -m devtools.tiny_model [FOLDER]                          # default .models/tiny-llama
    python -m devtools.tiny_model --kind embedding [FOLDER]         # or cross-encoder, classifier
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


def build_tokenizer(vocab_size: int = 512, special_tokens: list[str] = SPECIAL_TOKENS):
    """A byte-level BPE tokenizer trained on the text above, with the chat (or BERT) special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    return tokenizer


def chatml_tokenizer(additional_special_tokens: list[str] | None = None):
    """The tiny Llama's tokenizer as transformers wraps it (ChatML's special tokens, the model's context),
    with any further special tokens a model needs (the tiny VLM's image tokens)."""
    from transformers import PreTrainedTokenizerFast

    extra = {"additional_special_tokens": additional_special_tokens} if additional_special_tokens else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        **extra,
    )
    tokenizer.model_max_length = TINY_LLAMA_CONFIG["max_position_embeddings"]
    return tokenizer


def make_tiny_model(path: str | Path = DEFAULT_PATH, *, seed: int = 0) -> Path:
    """Write the tiny model to `path` (skipped if it is already there) and return the folder."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = chatml_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE

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


# BERT-style pooling models: head_dim 128 / 4 = 32 (CPU attention), 2 layers, pairs tokenized as
# "[CLS] a [SEP] b [SEP]" with token types, as a cross-encoder reads them.
TINY_BERT_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "torch_dtype": "float32",
}
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# What each kind is: the transformers class vLLM maps to its pooling model, and the classifier's labels.
POOLING_KINDS = {
    "embedding": ("BertModel", None),
    "cross-encoder": ("BertForSequenceClassification", {0: "LABEL_0"}),  # one logit: a relevance score
    "classifier": ("BertForSequenceClassification", {0: "negative", 1: "neutral", 2: "positive"}),
}
POOLING_PATHS = {kind: Path(f".models/tiny-{kind}") for kind in POOLING_KINDS}


def make_tiny_pooling_model(kind: str, path: str | Path | None = None, *, seed: int = 0) -> Path:
    """Write a tiny BERT embedder, cross-encoder or classifier (`kind`, see POOLING_KINDS) to `path`."""
    path = Path(path or POOLING_PATHS[kind])
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path

    import torch
    import transformers
    from tokenizers import processors
    from transformers import BertConfig, PreTrainedTokenizerFast

    architecture, labels = POOLING_KINDS[kind]
    raw_tokenizer = build_tokenizer(special_tokens=BERT_SPECIAL_TOKENS)
    cls_id, sep_id = raw_tokenizer.token_to_id("[CLS]"), raw_tokenizer.token_to_id("[SEP]")
    raw_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        # A cross-encoder tells query from document by token type.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    tokenizer.model_max_length = TINY_BERT_CONFIG["max_position_embeddings"]
    config = BertConfig(
        **{k: v for k, v in TINY_BERT_CONFIG.items() if k != "torch_dtype"},
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    if labels is not None:
        config.id2label = labels
        config.label2id = {label: index for index, label in labels.items()}
    config.architectures = [architecture]
    config.dtype = TINY_BERT_CONFIG["torch_dtype"]

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help=f"output folder (default {DEFAULT_PATH} or .models/tiny-KIND)")
    parser.add_argument("--kind", choices=["generative", *POOLING_KINDS], default="generative")
    args = parser.parse_args()
    if args.kind == "generative":
        print(make_tiny_model(args.path or DEFAULT_PATH))
    else:
        print(make_tiny_pooling_model(args.kind, args.path))


if __name__ == "__main__":
    main()
