"""Env-configured settings: parsing, defaults, one clear message per bad value, secrets masked."""

from __future__ import annotations

import json

import pytest

from config.errors import SettingsError
from config.settings import load_settings


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


def test_secrets_in_engine_args_are_refused_or_masked_never_echoed(monkeypatch):
    token = "hf_SECRETinENGINEargs456"
    monkeypatch.setenv("MODEL_NAME", "org/model")
    monkeypatch.setenv("ENGINE_ARGS", f'{{"hf_token": "{token}"}}')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hf_token (use HF_TOKEN)" in str(caught.value) and token not in str(caught.value)
    monkeypatch.setenv("ENGINE_ARGS", f'{{"hf_token": "{token}"')  # not JSON: the value is not echoed either
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "ENGINE_ARGS" in str(caught.value) and token not in str(caught.value)
    engine_args = {
        "some_api_key": token,
        "max_num_batched_tokens": 8192,
        "tokenizer_mode": "auto",
        "kv_transfer_config": {"kv_connector_extra_config": {"auth_token": token, "port": 1}},
    }
    monkeypatch.setenv("ENGINE_ARGS", json.dumps(engine_args))
    assert load_settings().masked()["engine_args"] == {
        "some_api_key": "**********",
        "max_num_batched_tokens": 8192,
        "tokenizer_mode": "auto",
        "kv_transfer_config": {"kv_connector_extra_config": {"auth_token": "**********", "port": 1}},
    }


def test_unknown_engine_args_are_named_with_a_suggestion(tiny_model):
    from worker.startup.engine_args import build_engine_args

    settings = load_settings(model_name=str(tiny_model), engine_args={"max_num_seq": 8})
    with pytest.raises(SettingsError) as caught:
        build_engine_args(settings, str(tiny_model), 1, 1)
    assert "max_num_seq" in str(caught.value) and "max_num_seqs" in str(caught.value)


def test_engine_args_reach_vllm(tiny_model):
    from worker.startup.engine_args import build_engine_args

    settings = load_settings(
        model_name=str(tiny_model), dtype="float16", max_model_len=256, engine_args={"max_num_seqs": 8}
    )
    args = build_engine_args(settings, str(tiny_model), 2, 1)
    assert (args.tensor_parallel_size, args.dtype, args.max_model_len, args.max_num_seqs) == (2, "float16", 256, 8)
    assert args.served_model_name == [str(tiny_model)]


# --- OpenAI server options (checked at start by vLLM's own `vllm serve` parser) -------------------


def server_args(**settings):
    from worker.startup.server_args import server_args

    return server_args(load_settings(model_name="org/model", **settings), "org/model")


def test_tool_and_reasoning_parsers_reach_vllms_server_options():
    args = server_args(tool_call_parser="hermes", enable_auto_tool_choice=True, reasoning_parser="qwen3")
    assert (args.tool_call_parser, args.enable_auto_tool_choice) == ("hermes", True)
    assert args.served_model_name == ["org/model"]


def test_openai_server_args_take_vllm_serve_flags():
    args = server_args(
        openai_server_args="--tool-strict-level parameter --default-chat-template-kwargs '{\"enable_thinking\": false}'"
    )
    assert args.tool_strict_level == "parameter"
    assert args.default_chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"tool_call_parser": "no-such-parser"}, ["TOOL_CALL_PARSER='no-such-parser'", "hermes", "llama3_json"]),
        ({"reasoning_parser": "no-such-parser"}, ["REASONING_PARSER='no-such-parser'", "deepseek_r1"]),
        ({"openai_server_args": "--no-such-flag 1"}, ["OPENAI_SERVER_ARGS", "unrecognized arguments: --no-such-flag"]),
        ({"openai_server_args": "--tool-strict-level bogus"}, ["OPENAI_SERVER_ARGS", "invalid choice: 'bogus'"]),
        ({"openai_server_args": "--tensor-parallel-size 2"}, ["not OpenAI server options: tensor_parallel_size", "ENGINE_ARGS"]),
        ({"openai_server_args": "--tool-call-parser hermes"}, ["tool_call_parser (use TOOL_CALL_PARSER)"]),
        ({"openai_server_args": "--enable-log-outputs"}, ["--enable-log-outputs requires --enable-log-requests"]),
        ({"openai_server_args": "'unclosed"}, ["OPENAI_SERVER_ARGS", "No closing quotation"]),
        ({"openai_server_args": "--help"}, ["OPENAI_SERVER_ARGS: --help/--version print and exit"]),
        ({"openai_server_args": "--chat-template /no/such/template.jinja"}, ["OPENAI_SERVER_ARGS", "/no/such/template.jinja"]),
        ({"openai_server_args": "--reasoning-parser qwen3"}, ["reasoning_parser (use REASONING_PARSER)"]),
        ({"openai_server_args": "--tool-parser-plugin /no/such/plugin.py"}, ["/no/such/plugin.py", "could not be imported"]),
    ],
)
def test_bad_openai_server_options_are_settings_errors_naming_the_variable(settings, expected):
    with pytest.raises(SettingsError) as raised:
        server_args(**settings)
    for text in expected:
        assert text in str(raised.value)


def test_auto_tool_choice_without_a_parser_is_refused():
    with pytest.raises(SettingsError) as raised:
        load_settings(model_name="org/model", enable_auto_tool_choice=True)
    assert "ENABLE_AUTO_TOOL_CHOICE=true needs TOOL_CALL_PARSER" in str(raised.value)


def test_engine_args_json_objects_become_vllms_config_classes(tiny_model):
    from vllm.config import StructuredOutputsConfig

    from worker.startup.engine_args import build_engine_args

    settings = load_settings(model_name=str(tiny_model), engine_args={"structured_outputs_config": {"backend": "xgrammar"}})
    args = build_engine_args(settings, str(tiny_model), 1, 1)
    assert isinstance(args.structured_outputs_config, StructuredOutputsConfig)
    assert args.structured_outputs_config.backend == "xgrammar"
    bad = load_settings(model_name=str(tiny_model), engine_args={"structured_outputs_config": {"no_such_field": 1}})
    with pytest.raises(SettingsError) as raised:
        build_engine_args(bad, str(tiny_model), 1, 1)
    assert "ENGINE_ARGS: structured_outputs_config" in str(raised.value) and "no_such_field" in str(raised.value)


def test_a_tool_parser_plugin_registers_the_parser_it_names(tmp_path):
    plugin = tmp_path / "my_tool_parser.py"
    plugin.write_text(
        "from vllm.tool_parsers import ToolParserManager\n"
        "from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser\n"
        "@ToolParserManager.register_module('my_parser')\n"
        "class MyParser(Hermes2ProToolParser):\n"
        "    pass\n"
    )
    args = server_args(tool_call_parser="my_parser", openai_server_args=f"--tool-parser-plugin {plugin}")
    assert (args.tool_call_parser, args.tool_parser_plugin) == ("my_parser", str(plugin))
