"""The TP and memory plan for pooling models: BERT-like encoders (no KV cache; DistilBERT's older field
names) plan like decoders, and the plan says there is no KV cache."""

from __future__ import annotations

import json

import pytest

from config.settings import load_settings
from tests.helpers import FIXTURES
from worker.parallel.gpus import GpuInventory
from worker.parallel.layout import plan_parallelism
from worker.parallel.memory import (
    GB,
    Precision,
    kv_bytes_per_token,
    parameter_count,
    plan_memory,
)
from worker.parallel.rules import valid_tp_sizes
from worker.parallel.shape import ModelShape

POOLING_CONFIGS = FIXTURES / "pooling-configs"
FP32 = Precision("float32", 4, 4, 4)


def config(name: str) -> dict:
    return json.loads((POOLING_CONFIGS / f"{name}.json").read_text())


def pod(count: int, memory_gb: float = 24) -> GpuInventory:
    return GpuInventory(count, (int(memory_gb * GB),) * count, ("NVIDIA L4",) * count, None, "nvml")


def test_bert_is_an_encoder_without_kv_cache_and_its_parameters_count_right():
    bge = ModelShape.from_config(config("BAAI--bge-base-en-v1.5"))
    assert bge.encoder_only and (bge.hidden_size, bge.num_heads, bge.num_layers) == (768, 12, 12)
    assert kv_bytes_per_token(bge, FP32) == 0
    # Published: 109.5M (ours leaves out biases, position/token-type embeddings and the pooler: ~1.5%).
    assert abs(parameter_count(bge) - 109.5e6) / 109.5e6 < 0.03
    # 12 heads, MLP 3072: every divisor of 12.
    assert valid_tp_sizes(config("BAAI--bge-base-en-v1.5")) == [1, 2, 3, 4, 6, 12]


def test_distilbert_config_with_older_field_names_is_planned():
    distil = ModelShape.from_config(config("distilbert--distilbert-base-uncased"))
    assert (distil.hidden_size, distil.num_heads, distil.num_layers, distil.intermediate_size) == (768, 12, 6, 3072)
    assert distil.encoder_only
    # Published: 66M parameters.
    assert abs(parameter_count(distil) - 66e6) / 66e6 < 0.05


def test_an_encoder_fits_whatever_the_context_and_the_plan_says_no_kv_cache():
    bge = ModelShape.from_config(config("BAAI--bge-base-en-v1.5"))
    row = plan_memory(bge, FP32, tp=1, gpu_memory_bytes=24 * GB, gpu_memory_utilization=0.9, max_model_len=512)
    assert row.fits and not row.needs_kv_cache and row.kv_tokens == 0
    assert row.describe_kv_cache() == "no KV cache (encoder-only model)"
    settings = load_settings(model_name="BAAI/bge-base-en-v1.5")
    plan = plan_parallelism(settings, config("BAAI--bge-base-en-v1.5"), pod(1))
    assert plan.tensor_parallel_size == 1 and "no KV cache (encoder-only model)" in plan.summary
    cpu_plan = plan_parallelism(settings, config("BAAI--bge-base-en-v1.5"), GpuInventory(0))
    assert "encoder-only model: no KV cache" in cpu_plan.summary


def test_a_decoder_still_needs_its_kv_cache():
    llama = ModelShape.from_config(json.loads((FIXTURES / "hub-configs" / "meta-llama--Meta-Llama-3-8B.json").read_text()))
    assert not llama.encoder_only and kv_bytes_per_token(llama, FP32) > 0


def test_engine_args_runner_and_convert_values_are_checked_at_start(tiny_model):
    from config.errors import SettingsError
    from tests.helpers import run_local_mode
    from worker.startup.engine_args import check_engine_args

    check_engine_args(load_settings(model_name=str(tiny_model), engine_args={"runner": "pooling", "convert": "embed"}))
    with pytest.raises(SettingsError) as refused:
        check_engine_args(load_settings(model_name=str(tiny_model), engine_args={"convert": "embedding"}))
    assert "ENGINE_ARGS: convert='embedding'" in str(refused.value) and "'embed'" in str(refused.value)
    done = run_local_mode(tiny_model, {"prompt": "hi"}, ENGINE_ARGS='{"runner": "pooler"}')
    assert done.returncode == 2, done.stderr[-2000:]
    assert "ENGINE_ARGS: runner='pooler'" in done.stderr + done.stdout
