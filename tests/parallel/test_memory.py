"""Memory plan: parameter counts, weight bytes per GPU, KV cache per token and how many tokens fit."""

from __future__ import annotations

import json

import pytest

from tests.helpers import MODEL_CONFIGS
from worker.parallel.memory import (
    GB,
    RUNTIME_RESERVE_BYTES,
    Precision,
    kv_bytes_per_token,
    parameter_count,
    plan_memory,
    resolve_precision,
    weight_bytes,
)
from worker.parallel.shape import ModelShape


def config(name: str) -> dict:
    return json.loads((MODEL_CONFIGS / f"{name}.json").read_text())


def shape(name: str) -> ModelShape:
    return ModelShape.from_config(config(name))


BF16 = Precision("bfloat16", 2, 2, 2)
FP32 = Precision("float32", 4, 4, 4)
FP8 = Precision("fp8", 1, 2, 2)

# Published parameter counts (model cards / safetensors metadata).
PUBLISHED_PARAMS = {
    "meta-llama--Meta-Llama-3-8B": 8.03e9,
    "meta-llama--Meta-Llama-3-70B": 70.55e9,
    "meta-llama--Llama-3.1-405B": 405.85e9,
    "mistralai--Mistral-7B-v0.3": 7.25e9,
    "mistralai--Mixtral-8x7B-v0.1": 46.70e9,
    "Qwen--Qwen2.5-7B-Instruct": 7.62e9,
    "Qwen--Qwen2.5-72B-Instruct": 72.71e9,
    "Qwen--Qwen2.5-0.5B-Instruct": 0.494e9,
    "HuggingFaceTB--SmolLM2-135M-Instruct": 0.1345e9,
}


def test_every_reference_config_has_a_published_count():
    assert {p.stem for p in MODEL_CONFIGS.glob("*.json")} == set(PUBLISHED_PARAMS)


@pytest.mark.parametrize("name, published", PUBLISHED_PARAMS.items())
def test_parameter_count_matches_published(name, published):
    assert parameter_count(shape(name)) == pytest.approx(published, rel=0.005)


def test_llama3_8b_parameters_by_hand():
    # Per layer: q, o 4096x4096 each; k, v 4096x1024 each; gate/up/down 3x4096x14336; two norms.
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    embeddings = 2 * 128256 * 4096  # untied: embedding + lm_head
    assert parameter_count(shape("meta-llama--Meta-Llama-3-8B")) == 32 * layer + embeddings + 4096 == 8_030_261_248


def test_mixtral_counts_every_expert():
    # 8 experts x 3 x 4096 x 14336 per layer, plus the 4096x8 router; only 2 experts run per token,
    # but all 8 sit in memory.
    mixtral = shape("mistralai--Mixtral-8x7B-v0.1")
    assert mixtral.is_moe and mixtral.num_experts == 8
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 8 * 3 * 4096 * 14336 + 4096 * 8 + 2 * 4096
    assert parameter_count(mixtral) == 32 * layer + 2 * 32000 * 4096 + 4096 == 46_702_792_704


def test_tied_embeddings_are_counted_once():
    qwen = shape("Qwen--Qwen2.5-0.5B-Instruct")
    assert qwen.tie_word_embeddings and qwen.qkv_bias
    untied = ModelShape(**{**qwen.__dict__, "tie_word_embeddings": False})
    assert parameter_count(untied) - parameter_count(qwen) == 151936 * 896


# Section 2.1 of the guide: weights alone, in FP16 and FP32.
@pytest.mark.parametrize(
    "name, fp16_gb, fp32_gb",
    [
        ("meta-llama--Meta-Llama-3-8B", 16, 32),
        ("meta-llama--Meta-Llama-3-70B", 140, 280),
        ("meta-llama--Llama-3.1-405B", 810, 1600),
    ],
)
def test_guide_table_2_1(name, fp16_gb, fp32_gb):
    model = shape(name)
    assert weight_bytes(model, BF16) == pytest.approx(fp16_gb * GB, rel=0.10)
    assert weight_bytes(model, FP32) == pytest.approx(fp32_gb * GB, rel=0.10)


def test_guide_table_8_1_is_8bit_weights_plus_runtime_memory():
    # The guide's Llama-3-70B per-GPU figures are far below 16-bit weights / TP ...
    model = shape("meta-llama--Meta-Llama-3-70B")
    guide = {2: 38, 4: 20, 8: 12}
    for tp, gb in guide.items():
        sixteen_bit = weight_bytes(model, BF16, tp)
        assert sixteen_bit > 1.4 * gb * GB
        # ... and match 8-bit weights plus the runtime reserve (activations, CUDA graphs), within 10%.
        assert weight_bytes(model, FP8, tp) + RUNTIME_RESERVE_BYTES == pytest.approx(gb * GB, rel=0.10)


def test_weights_split_evenly_across_tp():
    model = shape("meta-llama--Meta-Llama-3-70B")
    total = weight_bytes(model, BF16)
    for tp in (2, 4, 8):
        assert weight_bytes(model, BF16, tp) * tp == pytest.approx(total, rel=0.01)
    # Past 8 GPUs the 8 KV heads are replicated, so K/V weights stop shrinking.
    assert weight_bytes(model, BF16, 16) * 16 > total * 1.01


def test_pipeline_stages_hold_a_share_of_layers():
    model = shape("meta-llama--Llama-3.1-405B")
    one_stage = weight_bytes(model, BF16, 8, 1)
    two_stages = weight_bytes(model, BF16, 8, 2)
    assert two_stages == pytest.approx(one_stage / 2, rel=0.02)
    assert kv_bytes_per_token(model, BF16, 8, 2) == 2 * 63 * 1 * 128 * 2


def test_kv_cache_per_token_by_hand():
    model = shape("meta-llama--Meta-Llama-3-70B")
    # K and V x 80 layers x 8 KV heads x head dim 128 x 2 bytes.
    assert kv_bytes_per_token(model, BF16) == 2 * 80 * 8 * 128 * 2 == 327_680
    assert kv_bytes_per_token(model, BF16, tp=8) == 327_680 // 8
    assert kv_bytes_per_token(model, BF16, tp=16) == 327_680 // 8  # one replicated KV head per GPU
    fp8_kv = Precision("bfloat16", 2, 2, 1)
    assert kv_bytes_per_token(model, fp8_kv, tp=8) == 327_680 // 16


def test_kv_tokens_that_fit_by_hand():
    model = shape("meta-llama--Meta-Llama-3-70B")
    row = plan_memory(model, BF16, tp=8, gpu_memory_bytes=80 * GB, gpu_memory_utilization=0.9, max_model_len=8192)
    # Per GPU at TP 8: layer = q,o 2x8192x8192/8 + k,v 2x8192x128 + MLP 3x8192x28672/8 + 2 norms x 8192,
    # x 80 layers, + embedding and lm_head 2 x (128256/8) x 8192 + final norm 8192, at 2 bytes.
    layer = 2 * 8192 * 8192 // 8 + 2 * 8192 * 128 + 3 * 8192 * 28672 // 8 + 2 * 8192
    weights = 2 * (80 * layer + 2 * 16032 * 8192 + 8192)
    assert row.weight_bytes_per_gpu == weights == 17_640_734_720
    assert row.usable_bytes_per_gpu == 72 * GB - RUNTIME_RESERVE_BYTES
    assert row.kv_tokens == (70 * GB - weights) // 40_960 == 1_278_302
    assert row.fits and row.problem() is None


def test_does_not_fit():
    model = shape("meta-llama--Meta-Llama-3-70B")
    too_big = plan_memory(model, BF16, tp=2, gpu_memory_bytes=80 * GB, gpu_memory_utilization=0.9,
                          max_model_len=8192)
    assert not too_big.weights_fit and too_big.kv_tokens == 0
    assert too_big.problem() == "weights need 70.6 GB per GPU, 70.0 GB usable"
    # Weights fit but not one full-length sequence of KV cache.
    qwen = shape("Qwen--Qwen2.5-7B-Instruct")
    tight = plan_memory(qwen, BF16, tp=1, gpu_memory_bytes=20 * GB, gpu_memory_utilization=0.9,
                        max_model_len=32768)
    assert tight.weights_fit and not tight.fits
    assert "less than one 32,768-token sequence" in tight.problem()


def test_precision_from_settings():
    llama = config("meta-llama--Meta-Llama-3-8B")
    assert resolve_precision(llama) == Precision("bfloat16", 2, 2, 2)
    assert resolve_precision(llama, "float32") == Precision("float32", 4, 4, 4)
    assert resolve_precision(llama, "float16").weight_bytes == 2
    # vLLM's "auto" runs float32 checkpoints in 16 bits.
    assert resolve_precision({**llama, "torch_dtype": "float32"}).weight_bytes == 2
    fp8 = resolve_precision(llama, quantization="fp8")
    assert (fp8.weight_bytes, fp8.activation_bytes, fp8.kv_bytes) == (1, 2, 2)
    assert resolve_precision(llama, "fp8") == fp8  # the CLI's 8-bit dtype means QUANTIZATION=fp8
    assert resolve_precision(llama, "int8").weight_bytes == 1
    assert resolve_precision(llama, quantization="awq").weight_bytes == 0.5
    assert resolve_precision(llama, kv_cache_dtype="fp8_e4m3").kv_bytes == 1


def test_precision_from_a_quantized_checkpoint():
    llama = config("meta-llama--Meta-Llama-3-8B")
    fp8_checkpoint = {**llama, "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}}
    assert resolve_precision(fp8_checkpoint).weight_bytes == 1
    gptq = {**llama, "quantization_config": {"quant_method": "gptq", "bits": 4}}
    assert resolve_precision(gptq).weight_bytes == 0.5
    compressed = {**llama, "quantization_config": {
        "quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {"num_bits": 8}}}}}
    assert resolve_precision(compressed).weight_bytes == 1


def test_eight_bit_keeps_embeddings_in_16_bit():
    model = shape("meta-llama--Meta-Llama-3-8B")
    embeddings = 2 * 128256 * 4096
    linear = parameter_count(model) - embeddings - (32 * 2 + 1) * 4096
    assert weight_bytes(model, FP8) == linear + 2 * (embeddings + 65 * 4096)
