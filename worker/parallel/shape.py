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


# Encoder-only families (BERT and its kin, served as embedders, cross-encoders, classifiers): attention
# over the whole input at once, so vLLM keeps no KV cache for them.
ENCODER_ONLY_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "modernbert", "nomic_bert", "distilbert", "electra", "deberta", "deberta-v2",
     "camembert", "mpnet", "new", "gte"}
)
# Older configs name the same numbers differently (DistilBERT: dim, n_heads, n_layers, hidden_dim; GPT-2: n_embd ...).
_ALIASES = {
    "hidden_size": ("dim", "d_model", "n_embd"),
    "num_attention_heads": ("n_heads", "num_heads", "n_head"),
    "num_hidden_layers": ("n_layers", "num_layers", "n_layer"),
    "intermediate_size": ("hidden_dim", "ffn_dim", "d_ff", "n_inner"),
}


def _with_standard_names(config: dict[str, Any]) -> dict[str, Any]:
    named = dict(config)
    for name, aliases in _ALIASES.items():
        if named.get(name) is None:
            named[name] = next((config[alias] for alias in aliases if config.get(alias) is not None), None)
    return named


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a transformer (decoder-only, or an encoder) that tensor parallelism and memory depend on."""

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
    encoder_only: bool = False  # BERT-like: no KV cache, a two-matrix MLP, no lm_head

    @property
    def embedding_copies(self) -> int:
        """Vocabulary-sized matrices: the embedding, plus an lm_head unless tied to it (an encoder has none)."""
        return 1 if self.tie_word_embeddings or self.encoder_only else 2

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
        cfg = _with_standard_names({**config, **text} if isinstance(text, dict) else config)
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            layers = int(cfg["num_hidden_layers"])
        except (KeyError, TypeError, ValueError) as error:
            raise ParallelismError(
                f"config.json lacks {error} (needs hidden_size, num_attention_heads, num_hidden_layers, or "
                "their older names dim/d_model, n_heads, n_layers): only transformer configs can be planned."
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
            encoder_only=cfg.get("model_type") in ENCODER_ONLY_MODEL_TYPES,
        )
