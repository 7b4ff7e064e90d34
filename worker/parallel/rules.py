"""Tensor-parallel rules: which sizes vLLM can split a model into, and why a size is refused.

A size is valid when vLLM can split the model that many ways: the attention heads divide evenly, the KV heads
divide evenly or are replicated evenly, the MLP (each expert's MLP for mixture-of-experts) divides evenly, and,
for a quantized checkpoint, no GPU's share cuts through an FP8 scale block or an AWQ/GPTQ scale group.
Pure functions of the model's shape (see worker/parallel/__init__.py for the boundary).
"""

from __future__ import annotations

import math
from typing import Any

from worker.parallel.shape import ModelShape, WeightQuantization

# Tensor parallelism stays inside one node (NVLink); 8 GPUs is the largest node RunPod offers.
GPUS_PER_NODE = 8


def _mlp_widths(shape: ModelShape) -> list[tuple[str, int]]:
    widths = [("MLP", shape.intermediate_size), ("expert MLP", shape.moe_intermediate_size)]
    widths.append(("shared-expert MLP", shape.shared_expert_intermediate_size))
    return [(name, width) for name, width in widths if width]


def tp_problem(shape: ModelShape, tp: int) -> str | None:
    """Why vLLM cannot split `shape` `tp` ways, or None if it can."""
    if shape.num_heads % tp:
        return f"{shape.num_heads} attention heads don't split {tp} ways"
    kv = shape.num_kv_heads
    # vLLM splits KV heads when there are enough, else gives each GPU a copy of one: either must be even.
    if kv % tp and tp % kv:
        return f"{kv} KV heads neither split {tp} ways nor replicate evenly over {tp} GPUs"
    for name, width in _mlp_widths(shape):
        if width % tp:
            return f"the {name} size {width} doesn't split {tp} ways"
    return _quantization_problem(shape, tp)


# vLLM 0.32 (model_executor/layers/quantization). Merged column-parallel layers (qkv, gate_up) may cut through
# blocks (linear.py allows the mismatch), so only the inputs that row-parallel layers split are checked:
# - FP8 blocks (fp8_utils.validate_fp8_block_shape): input per GPU % block_k, when TP > 1;
# - AWQ/GPTQ groups (marlin_utils.check_marlin_supports_layer; without Marlin, awq raises on the same): input per
#   GPU % group_size;
# - the fused experts (validate_fp8_block_shape_moe, check_moe_marlin_supports_config): expert MLP per GPU
#   % block_n (and % block_k when TP > 1) or % group_size, unless a finer-scale fallback applies (below).
# Methods whose fused experts fall back to finer scales, down to 32 wide, that divide the expert MLP per GPU and
# the hidden size: fp8 refines its blocks (oracle/fp8.refine_fp8_moe_block_shape), awq/gptq halve their group
# (moe_wna16). compressed-tensors FP8 has no such fallback.
_FINER_SCALE_FALLBACK = {"fp8", "awq", "gptq"}
_SMALLEST_FINER_SCALE = 32
_METHOD_NAMES = {"awq": "AWQ", "gptq": "GPTQ"}


def _quantization_problem(shape: ModelShape, tp: int) -> str | None:
    quant = shape.quantization
    if quant is None or not (quant.block or quant.group_size):
        return None
    if tp > 1:
        unit, what = _input_scale(quant)
        for name, width in _row_parallel_inputs(shape):
            if (width // tp) % unit:
                return f"the {name} per GPU {width // tp} ({width} / {tp}) is not a multiple of the {what} {unit}"
    return _expert_problem(shape, quant, tp) if shape.is_moe else None


def _scale_name(quant: WeightQuantization) -> str:
    if quant.block:
        return "FP8 block size"
    return f"{_METHOD_NAMES.get(quant.method, 'quantization')} group size"


def _input_scale(quant: WeightQuantization) -> tuple[int, str]:
    """How many inputs one scale covers, and what to call it in a message."""
    return (quant.block[1] if quant.block else quant.group_size or 1), _scale_name(quant)


def _row_parallel_inputs(shape: ModelShape) -> list[tuple[str, int]]:
    # The layers whose input TP splits (o_proj, down_proj): each GPU holds the scales of its inputs only.
    widths = [
        ("attention output", shape.attention_output_size),
        ("MLP", shape.intermediate_size),
        ("shared-expert MLP", shape.shared_expert_intermediate_size),
    ]
    return [(name, width) for name, width in widths if width]


def _expert_problem(shape: ModelShape, quant: WeightQuantization, tp: int) -> str | None:
    width = shape.moe_intermediate_size
    per_gpu = width // tp
    misfit = _expert_misfit(quant, per_gpu, tp)
    finer = _finer_expert_scale(shape, tp)
    if misfit is None or (finer or 0) >= _SMALLEST_FINER_SCALE:
        return None
    scale = f"{_scale_name(quant)} {misfit}"
    problem = f"the expert MLP per GPU {per_gpu} ({width} / {tp}) is not a multiple of the {scale}"
    if finer is not None:
        problem += f", and the finer scale vLLM falls back to would be {finer} wide (under {_SMALLEST_FINER_SCALE})"
    return problem


def _expert_misfit(quant: WeightQuantization, per_gpu: int, tp: int) -> int | None:
    """The scale size the expert MLP per GPU cuts through; None when it holds whole scales."""
    if quant.block:
        block_n, block_k = quant.block
        if per_gpu % block_n:  # gate/up outputs: checked even on one GPU
            return block_n
        return block_k if tp > 1 and per_gpu % block_k else None  # down inputs
    group = quant.group_size or 1
    return group if per_gpu % group else None


def _finer_expert_scale(shape: ModelShape, tp: int) -> int | None:
    """The finer scale vLLM re-scales the experts to at `tp` (usable from 32), or None when it doesn't."""
    quant = shape.quantization
    if not shape.is_moe or quant is None or quant.method not in _FINER_SCALE_FALLBACK:
        return None
    per_gpu = shape.moe_intermediate_size // tp
    if _expert_misfit(quant, per_gpu, tp) is None:
        return None
    return math.gcd(*(quant.block or (quant.group_size or 1,)), per_gpu, shape.hidden_size)


def finer_scale_warning(shape: ModelShape, tp: int) -> str | None:
    finer = _finer_expert_scale(shape, tp)
    if finer is None or finer < _SMALLEST_FINER_SCALE or shape.quantization is None:
        return None
    kernels = "Triton FP8" if shape.quantization.block else "MoE WNA16"
    return (
        f"TENSOR_PARALLEL_SIZE={tp} gives each GPU {shape.moe_intermediate_size // tp} of every expert's "
        f"{shape.moe_intermediate_size}-wide MLP, not a multiple of the {_scale_name(shape.quantization)} "
        f"{_expert_misfit(shape.quantization, shape.moe_intermediate_size // tp, tp)}: vLLM re-scales the experts "
        f"to {finer}-wide scales and runs them on its {kernels} kernels, which may be slower."
    )


def valid_sizes_of(shape: ModelShape) -> list[int]:
    # TP never exceeds the attention heads: each GPU needs at least one.
    return [tp for tp in range(1, shape.num_heads + 1) if tp_problem(shape, tp) is None]


def valid_tp_sizes(config: dict[str, Any]) -> list[int]:
    """Every tensor-parallel size vLLM can split the model of `config` into, ascending."""
    return valid_sizes_of(ModelShape.from_config(config))
