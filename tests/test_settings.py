"""Env-configured settings: parsing, defaults, one clear message per bad value, secrets masked."""

from __future__ import annotations

import pytest

from config.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("MODEL_NAME", "TENSOR_PARALLEL_SIZE", "DTYPE", "MAX_MODEL_LEN", "GPU_MEMORY_UTILIZATION",
                 "MAX_CONCURRENCY", "TRUST_REMOTE_CODE", "HF_TOKEN", "ENGINE_ARGS", "WARM_START"):
        monkeypatch.delenv(name, raising=False)


def test_reads_env_vars_with_types(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "meta-llama/Meta-Llama-3-8B-Instruct")
    monkeypatch.setenv("TENSOR_PARALLEL_SIZE", "4")
    monkeypatch.setenv("DTYPE", "bfloat16")
    monkeypatch.setenv("MAX_MODEL_LEN", "8192")
    monkeypatch.setenv("GPU_MEMORY_UTILIZATION", "0.85")
    monkeypatch.setenv("MAX_CONCURRENCY", "128")
    monkeypatch.setenv("TRUST_REMOTE_CODE", "true")
    monkeypatch.setenv("ENGINE_ARGS", '{"max_num_seqs": 64, "enable_prefix_caching": true}')
    settings = load_settings()
    assert settings.model_name == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert settings.tensor_parallel_size == 4
    assert settings.dtype == "bfloat16"
    assert settings.max_model_len == 8192
    assert settings.gpu_memory_utilization == 0.85
    assert settings.max_concurrency == 128
    assert settings.trust_remote_code is True
    assert settings.engine_args == {"max_num_seqs": 64, "enable_prefix_caching": True}


def test_defaults(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "org/model")
    settings = load_settings()
    assert settings.tensor_parallel_size == "auto"
    assert settings.dtype == "auto"
    assert settings.trust_remote_code is False
    assert settings.hf_token is None
    assert settings.max_model_len is None
    assert settings.served_name == "org/model"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, ["MODEL_NAME", "required"]),
        ({"TENSOR_PARALLEL_SIZE": "two"}, ["TENSOR_PARALLEL_SIZE='two'", "'auto' or a whole number"]),
        ({"TENSOR_PARALLEL_SIZE": "0"}, ["TENSOR_PARALLEL_SIZE=0", "'auto' or a whole number"]),
        ({"DTYPE": "fp64"}, ["DTYPE='fp64'", "auto, float16, bfloat16, float32"]),
        ({"GPU_MEMORY_UTILIZATION": "1.5"}, ["GPU_MEMORY_UTILIZATION=", "1.5"]),
        ({"MAX_MODEL_LEN": "-3"}, ["MAX_MODEL_LEN=", "-3"]),
        ({"TRUST_REMOTE_CODE": "perhaps"}, ["TRUST_REMOTE_CODE='perhaps'"]),
        ({"ENGINE_ARGS": "{not json"}, ["ENGINE_ARGS", "JSON object"]),
        ({"ENGINE_ARGS": '{"tensor_parallel_size": 2}'}, ["ENGINE_ARGS", "TENSOR_PARALLEL_SIZE"]),
    ],
)
def test_bad_values_give_one_message_naming_var_value_and_allowed(monkeypatch, env, names):
    if env:
        monkeypatch.setenv("MODEL_NAME", "org/model")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("Invalid worker configuration:")
    for name in names:
        assert name in message


def test_secret_is_masked_in_repr_and_logs_and_errors(monkeypatch):
    token = "hf_SECRETsecretSECRET123"
    monkeypatch.setenv("MODEL_NAME", "org/model")
    monkeypatch.setenv("HF_TOKEN", token)
    settings = load_settings()
    assert settings.hf_token.get_secret_value() == token
    assert token not in repr(settings)
    assert token not in str(settings.masked())
    monkeypatch.setenv("DTYPE", "nope")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert token not in str(caught.value)


def test_unknown_engine_args_are_named_with_a_suggestion(tiny_model):
    from worker.engine import build_engine_args

    settings = load_settings(model_name=str(tiny_model), engine_args={"max_num_seq": 8})
    with pytest.raises(SettingsError) as caught:
        build_engine_args(settings, str(tiny_model), 1, 1)
    assert "max_num_seq" in str(caught.value) and "max_num_seqs" in str(caught.value)


def test_engine_args_reach_vllm(tiny_model):
    from worker.engine import build_engine_args

    settings = load_settings(
        model_name=str(tiny_model), dtype="float16", max_model_len=256, engine_args={"max_num_seqs": 8}
    )
    args = build_engine_args(settings, str(tiny_model), 2, 1)
    assert (args.tensor_parallel_size, args.dtype, args.max_model_len, args.max_num_seqs) == (2, "float16", 256, 8)
    assert args.served_model_name == [str(tiny_model)]
