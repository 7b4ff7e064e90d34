"""A model's shape, from its config.json: what decides how it splits across GPUs and how much memory it needs.
(worker.model_files.config_json reads that config.json.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ParallelismError(ValueError):
    """The model cannot run as configured on this pod; the message says what to change."""


@dataclass(frozen=True)
class WeightQuantization:
    """How a quantized checkpoint scales its linear weights: what limits the ways tensor parallelism can cut them.

    A scale covers a block (FP8: `block` = [block_n outputs, block_k inputs]) or a group of `group_size` inputs
    (AWQ/GPTQ). Where vLLM checks it (see worker.parallel.layout), each GPU's share of a dimension that tensor
    parallelism splits must hold whole blocks or groups.
    """

    method: str
    block: tuple[int, int] | None = None
    group_size: int | None = None  # None: one scale per output channel, nothing to cut through

    def describe(self) -> str:
        if self.block:
            return f"{self.method} blocks {self.block[0]}x{self.block[1]}"
        return f"{self.method} groups of {self.group_size}" if self.group_size else self.method

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WeightQuantization | None":
        quant = config.get("quantization_config")
        if not isinstance(quant, dict):
            return None
        method = str(quant.get("quant_method") or "quantized").lower()
        if method == "compressed-tensors":
            weights = _compressed_tensors_weights(quant)
            block, group = weights.get("block_structure"), weights.get("group_size")
        else:
            block, group = quant.get("weight_block_size"), quant.get("group_size") or quant.get("q_group_size")
        return cls(
            method=method,
            block=(int(block[0]), int(block[1])) if isinstance(block, list) and len(block) == 2 else None,
            # -1 (or 0) means per-channel scales: no group to cut through.
            group_size=int(group) if group and int(group) > 0 else None,
        )


def _compressed_tensors_weights(quant: dict[str, Any]) -> dict[str, Any]:
    # llm-compressor puts the scheme under config_groups; every group of one checkpoint uses the same one.
    for group in (quant.get("config_groups") or {}).values():
        if isinstance(group, dict) and isinstance(group.get("weights"), dict):
            return group["weights"]
    return {}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that tensor parallelism and memory depend on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (0 when every layer is mixture-of-experts)
    vocab_size: int
    tie_word_embeddings: bool
    num_experts: int = 0  # routed experts per MoE layer; 0 for a dense model
    moe_intermediate_size: int = 0  # each expert's MLP width
    shared_expert_intermediate_size: int = 0  # Qwen-MoE style always-on expert
    qkv_bias: bool = False
    max_position_embeddings: int | None = None
    torch_dtype: str | None = None
    value_head_dim: int = 0  # MLA (DeepSeek): width of each head's value and output; 0 means head_dim
    quantization: WeightQuantization | None = None  # the checkpoint's own quantization_config

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def attention_output_size(self) -> int:
        """The input width of the attention output projection (o_proj), which TP splits by heads."""
        return self.num_heads * (self.value_head_dim or self.head_dim)

    def describe(self) -> str:
        mlp = (
            f"{self.num_experts} experts x MLP {self.moe_intermediate_size}"
            if self.is_moe
            else f"MLP {self.intermediate_size}"
        )
        quantized = f", {self.quantization.describe()}" if self.quantization else ""
        return f"{self.num_heads} attention heads, {self.num_kv_heads} KV heads, {mlp}{quantized}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelShape":
        # Multimodal configs keep the language model under text_config.
        text = config.get("text_config") if "num_attention_heads" not in config else None
        cfg = {**config, **text} if isinstance(text, dict) else config
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            layers = int(cfg["num_hidden_layers"])
        except (KeyError, TypeError, ValueError) as error:
            raise ParallelismError(
                f"config.json lacks {error} (needs hidden_size, num_attention_heads, num_hidden_layers): "
                "only decoder-only transformer configs can be planned."
            ) from None
        # Models without GQA leave num_key_value_heads out: every head has its own K/V.
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
        intermediate = int(cfg.get("intermediate_size") or 0)
        # Mixtral names its expert width intermediate_size; Qwen-MoE/DeepSeek use moe_intermediate_size.
        moe_intermediate = int(cfg.get("moe_intermediate_size") or (intermediate if experts else 0))
        return cls(
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            # Dense layers inside MoE models (DeepSeek's first_k_dense_replace) are not modelled.
            intermediate_size=0 if experts else intermediate,
            vocab_size=int(cfg.get("vocab_size") or 0),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            num_experts=experts,
            moe_intermediate_size=moe_intermediate,
            shared_expert_intermediate_size=int(cfg.get("shared_expert_intermediate_size") or 0),
            # Qwen2 puts a bias on q/k/v; others say so with attention_bias.
            qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") in ("qwen2", "qwen2_moe"),
            max_position_embeddings=cfg.get("max_position_embeddings"),
            torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
            value_head_dim=int(cfg.get("v_head_dim") or 0),
            quantization=WeightQuantization.from_config(cfg),
        )
