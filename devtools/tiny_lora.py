"""Make a tiny random LoRA adapter for the tiny model (devtools/tiny_model.py), for local runs and tests.

The files are the PEFT format vLLM loads (adapter_config.json + adapter_model.safetensors with
`base_model.model.<module>.lora_A/lora_B.weight`), written directly: no peft needed, nothing downloaded.
Both A and B are random (PEFT's default leaves B at zero, which would change nothing), scaled so the
adapter visibly changes greedy output.

    python -m devtools.tiny_lora [FOLDER] [--base .models/tiny-llama] [--rank 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from devtools.tiny_model import DEFAULT_PATH as DEFAULT_BASE
from devtools.tiny_model import TINY_LLAMA_CONFIG

DEFAULT_PATH = Path(".models/tiny-lora")
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _module_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each target projection in one decoder layer."""
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    return {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, kv),
        "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (hidden, ffn),
        "mlp.up_proj": (hidden, ffn),
        "mlp.down_proj": (ffn, hidden),
    }


def make_tiny_lora(
    path: str | Path = DEFAULT_PATH, *, base: str | Path = DEFAULT_BASE, rank: int = 8, seed: int = 1
) -> Path:
    """Write a rank-`rank` adapter for the tiny model at `base` into `path` (skipped if there) and return it."""
    path = Path(path)
    if (path / "adapter_config.json").exists() and (path / "adapter_model.safetensors").exists():
        return path

    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(TINY_LLAMA_CONFIG["num_hidden_layers"]):
        for module, (fan_in, fan_out) in _module_shapes(TINY_LLAMA_CONFIG).items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator).to(torch.float16) * 0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator).to(torch.float16) * 0.5
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base),
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(TARGET_MODULES),
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="output folder")
    parser.add_argument("--base", default=str(DEFAULT_BASE), help="the tiny model's folder (recorded in the config)")
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    print(make_tiny_lora(args.path, base=args.base, rank=args.rank))


if __name__ == "__main__":
    main()
