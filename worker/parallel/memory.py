"""Memory plan: parameters, weight bytes per GPU and KV-cache room for a model at a tensor/pipeline size.

Counted as vLLM lays the model out: q/o, the MLP and the experts split `tp` ways; K/V heads split, or are
replicated once there are more GPUs than KV heads; embeddings and lm_head split by vocabulary; norms, biases
and the MoE router are copied to every GPU. Quantization (fp8, int8, 4-bit) shrinks the linear layers only:
embeddings, lm_head and norms stay in the activation dtype.

Why the guide's section 8.1 shows 70B at ~38 / ~20 / ~12 GB per GPU for TP 2 / 4 / 8: 16-bit weights alone are
70.6 / 35.3 / 17.6 GB per GPU, so those figures are 8-bit weights (36.3 / 18.2 / 9.1 GB) plus ~2-3 GB of
activations and CUDA graphs (RUNTIME_RESERVE_BYTES), before any KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from worker.parallel.shape import ModelShape

GB = 10**9

# Per-GPU memory vLLM uses besides weights and KV cache: activations of the profiling batch, CUDA graphs,
# NCCL/cuBLAS workspaces. vLLM measures the real figure at start; this typical one keeps the plan honest.
RUNTIME_RESERVE_BYTES = 2 * GB

# vLLM quantization methods by how many bits a linear-layer weight takes.
_EIGHT_BIT = {"fp8", "fbgemm_fp8", "ptpc_fp8", "modelopt", "experts_int8", "int8", "w8a8", "float8", "fp8_e4m3"}
_FOUR_BIT = {"awq", "awq_marlin", "gptq", "gptq_marlin", "marlin", "bitsandbytes", "modelopt_fp4", "mxfp4", "gguf"}
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
# What an 8-bit --dtype in the CLI means: vLLM has no 8-bit dtype, it quantizes (QUANTIZATION=fp8).
EIGHT_BIT_DTYPES = ("fp8", "int8")


@dataclass(frozen=True)
class Precision:
    """Bytes per value: linear-layer weights, everything else (embeddings, norms), and the KV cache."""

    name: str
    weight_bytes: float
    activation_bytes: int
    kv_bytes: int


def resolve_precision(
    config: dict[str, Any],
    dtype: str = "auto",
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
) -> Precision:
    """The precision vLLM will run `config` at, given the DTYPE / QUANTIZATION settings."""
    dtype = (dtype or "auto").lower()
    if dtype in EIGHT_BIT_DTYPES:
        quantization, dtype = quantization or dtype, "auto"
    config_dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
    # vLLM's "auto" runs float32 checkpoints in 16 bits.
    activation_name = config_dtype if dtype == "auto" else dtype
    activation = _DTYPE_BYTES.get(activation_name, 2)
    if dtype == "auto" and activation == 4:
        activation_name, activation = "bfloat16", 2

    bits = _quantized_bits(config, quantization)
    weight = bits / 8 if bits else activation
    name = f"{quantization or _quant_method(config)} ({bits}-bit weights)" if bits else activation_name
    kv = 1 if (kv_cache_dtype or "auto").lower().startswith("fp8") else activation
    return Precision(name=name, weight_bytes=weight, activation_bytes=activation, kv_bytes=kv)


def _quant_method(config: dict[str, Any]) -> str:
    quant = config.get("quantization_config") or {}
    return str(quant.get("quant_method") or "quantized")


def _quantized_bits(config: dict[str, Any], quantization: str | None) -> int | None:
    quant = config.get("quantization_config") or {}
    declared = quant.get("bits") or quant.get("weight_bits")
    method = (quantization or quant.get("quant_method") or "").lower()
    if not method:
        return None
    if declared and not quantization:
        return int(declared)
    if method in _EIGHT_BIT or "fp8" in method or "int8" in method:
        return 8
    if method in _FOUR_BIT or "4bit" in method or "fp4" in method:
        return 4
    for group in (quant.get("config_groups") or {}).values():  # compressed-tensors
        num_bits = (group.get("weights") or {}).get("num_bits")
        if num_bits:
            return int(num_bits)
    return None


def _kv_heads_per_gpu(shape: ModelShape, tp: int) -> int:
    # vLLM replicates K/V heads when TP exceeds them: each GPU still holds at least one.
    return max(1, shape.num_kv_heads // tp)


def _layer_params(shape: ModelShape, tp: int) -> tuple[float, float]:
    """(linear-layer params, other params) of one decoder layer on one GPU."""
    h, hd = shape.hidden_size, shape.head_dim
    q_heads, kv_heads = shape.num_heads / tp, _kv_heads_per_gpu(shape, tp)
    attention = 2 * h * q_heads * hd + 2 * h * kv_heads * hd  # q and o, k and v
    mlp = (2 if shape.encoder_only else 3) * h * shape.intermediate_size / tp  # (gate,) up, down
    experts = shape.num_experts * 3 * h * shape.moe_intermediate_size / tp
    shared = 3 * h * shape.shared_expert_intermediate_size / tp
    linear = attention + mlp + experts + shared
    router = h * shape.num_experts  # replicated and never quantized
    bias = (q_heads + 2 * kv_heads) * hd if shape.qkv_bias else 0
    return linear, router + bias + 2 * h  # two norms per layer


def _embedding_params(shape: ModelShape, tp: int) -> float:
    return math.ceil(shape.vocab_size / tp) * shape.hidden_size


def parameter_count(shape: ModelShape) -> int:
    """Parameters of the whole model (each counted once)."""
    linear, other = _layer_params(shape, 1)
    embeddings = _embedding_params(shape, 1) * shape.embedding_copies
    return int(shape.num_layers * (linear + other) + embeddings + shape.hidden_size)


def weight_bytes(shape: ModelShape, precision: Precision, tp: int = 1, pp: int = 1) -> int:
    """Weight bytes on the fullest GPU at tensor size `tp` and pipeline size `pp` (the total at 1, 1)."""
    linear, other = _layer_params(shape, tp)
    layers = math.ceil(shape.num_layers / pp)
    embedding = _embedding_params(shape, tp)
    if pp == 1:
        # One stage holds the embedding, the lm_head (unless tied to it) and the final norm.
        ends = embedding * shape.embedding_copies + shape.hidden_size
    else:
        # The first stage holds the embedding, the last the lm_head (its own copy even when tied).
        ends = embedding + shape.hidden_size
    per_layer = linear * precision.weight_bytes + other * precision.activation_bytes
    return int(layers * per_layer + ends * precision.activation_bytes)


def kv_bytes_per_token(shape: ModelShape, precision: Precision, tp: int = 1, pp: int = 1) -> int:
    """KV-cache bytes one token takes on one GPU (K and V, every layer of its stage, its share of KV heads);
    0 for an encoder-only model, which vLLM runs without a KV cache."""
    if shape.encoder_only:
        return 0
    layers = math.ceil(shape.num_layers / pp)
    return 2 * layers * _kv_heads_per_gpu(shape, tp) * shape.head_dim * precision.kv_bytes


def lora_bytes(shape: ModelShape, precision: Precision, *, max_loras: int, max_rank: int, tp: int = 1, pp: int = 1) -> int:
    """GPU bytes vLLM reserves for LoRA on one GPU: `max_loras` slots x rank `max_rank` of A and B matrices for
    every projection of every layer of its stage, in the activation dtype (vLLM's default lora_dtype).

    As vLLM's LoRA layers lay them out: a column-parallel layer (qkv, gate/up) keeps A whole and splits B's
    output `tp` ways; a row-parallel one (o, down) splits A's input and keeps B whole."""
    if max_loras <= 0 or max_rank <= 0:
        return 0
    h, hd = shape.hidden_size, shape.head_dim
    q, kv_per_gpu = shape.num_heads * hd, _kv_heads_per_gpu(shape, tp) * hd
    qkv = 3 * h + q / tp + 2 * kv_per_gpu  # three A slices of h; B holds this GPU's q, k and v outputs
    o = q / tp + h
    mlp = 2 * h + 2 * shape.intermediate_size / tp + shape.intermediate_size / tp + h  # gate/up, then down
    experts = shape.num_experts * (3 * h + 3 * shape.moe_intermediate_size / tp)
    per_layer = (qkv + o + mlp + experts) * max_rank * max_loras
    return int(math.ceil(shape.num_layers / pp) * per_layer * precision.activation_bytes)


@dataclass(frozen=True)
class MemoryRow:
    """How a model fits one GPU of a tensor/pipeline-parallel group."""

    tp: int
    pp: int
    weight_bytes_per_gpu: int
    kv_bytes_per_token: int
    usable_bytes_per_gpu: int  # gpu memory x utilization, less the runtime reserve
    max_model_len: int
    lora_bytes_per_gpu: int = 0  # LoRA adapter slots (max_loras x max_lora_rank), 0 without adapters

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def kv_cache_bytes_per_gpu(self) -> int:
        return max(0, self.usable_bytes_per_gpu - self.weight_bytes_per_gpu - self.lora_bytes_per_gpu)

    @property
    def needs_kv_cache(self) -> bool:
        return self.kv_bytes_per_token > 0

    @property
    def kv_tokens(self) -> int:
        """Tokens of KV cache that fit (each GPU holds its slice of every token); 0 without a KV cache."""
        return self.kv_cache_bytes_per_gpu // self.kv_bytes_per_token if self.needs_kv_cache else 0

    def describe_kv_cache(self) -> str:
        return f"KV cache ~{self.kv_tokens:,} tokens" if self.needs_kv_cache else "no KV cache (encoder-only model)"

    @property
    def weights_fit(self) -> bool:
        return self.weight_bytes_per_gpu + self.lora_bytes_per_gpu < self.usable_bytes_per_gpu

    @property
    def fits(self) -> bool:
        # vLLM refuses to start unless one max-length sequence fits in the KV cache (if the model has one).
        return self.weights_fit and (not self.needs_kv_cache or self.kv_tokens >= self.max_model_len)

    def problem(self) -> str | None:
        adapters = f" + LoRA adapters {format_bytes(self.lora_bytes_per_gpu)}" if self.lora_bytes_per_gpu else ""
        if not self.weights_fit:
            return (
                f"weights{adapters} need {format_bytes(self.weight_bytes_per_gpu + self.lora_bytes_per_gpu)} "
                f"per GPU, {format_bytes(self.usable_bytes_per_gpu)} usable"
            )
        if not self.fits:
            return (
                f"KV cache holds {self.kv_tokens:,} tokens, less than one {self.max_model_len:,}-token sequence"
                + (f" (LoRA adapters take {format_bytes(self.lora_bytes_per_gpu)} per GPU)" if adapters else "")
            )
        return None


def plan_memory(
    shape: ModelShape,
    precision: Precision,
    *,
    tp: int,
    pp: int = 1,
    gpu_memory_bytes: int,
    gpu_memory_utilization: float,
    max_model_len: int,
    max_loras: int = 0,
    max_lora_rank: int = 0,
) -> MemoryRow:
    usable = int(gpu_memory_bytes * gpu_memory_utilization) - RUNTIME_RESERVE_BYTES
    return MemoryRow(
        tp=tp,
        pp=pp,
        weight_bytes_per_gpu=weight_bytes(shape, precision, tp, pp),
        kv_bytes_per_token=kv_bytes_per_token(shape, precision, tp, pp),
        usable_bytes_per_gpu=max(0, usable),
        max_model_len=max_model_len,
        lora_bytes_per_gpu=lora_bytes(shape, precision, max_loras=max_loras, max_rank=max_lora_rank, tp=tp, pp=pp),
    )


def default_max_model_len(shape: ModelShape, configured: int | None) -> int:
    """MAX_MODEL_LEN, else the model's own context length (as vLLM defaults it)."""
    return configured or int(shape.max_position_embeddings or 2048)


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 10**12), ("GB", GB), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
