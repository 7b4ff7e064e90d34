"""Drop-in for users of RunPod's official vLLM worker: every engine argument as an env var (parsed by vLLM's
parser), the official worker's env var names and job fields (config/migration.py, every row tested),
typo hints, and all configuration checked at start."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import pytest

from config.errors import SettingsError
from config.migration import MIGRATION
from config.settings import WorkerSettings, load_settings
from tests.helpers import ROOT, FatalRecorder
from worker.jobs.official_fields import OFFICIAL_JOB_FIELDS
from worker.jobs.request import parse_job_input
from worker.requests.errors import JobError
from worker.startup.checks import check_configuration
from worker.startup.engine_args import (
    engine_arg_env_names,
    parsed_engine_arg_env,
    typo_warnings,
)

SETTINGS = {name.upper() for name in WorkerSettings.model_fields}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No setting, engine argument or official name comes from the test runner's environment, and what a test
    sets (check_all writes os.environ) is gone after it: later test files must not see it."""
    saved = dict(os.environ)
    for name in SETTINGS | set(MIGRATION) | set(engine_arg_env_names()) | {"MODEL", "REVISION", "MAX_NUM_SEQ"}:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_NAME", "org/model")
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def check_all(**env: str) -> WorkerSettings:
    """What start-up checks: settings, engine args, server options."""
    for name, value in env.items():
        os.environ[name] = value
    settings = load_settings()
    check_configuration(settings)
    return settings


# --- every AsyncEngineArgs field as an env var, parsed by vLLM's parser ----------------------------------


def test_engine_arg_env_vars_are_derived_from_vllms_fields():
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    names = engine_arg_env_names()
    assert {"MAX_NUM_SEQS", "ENABLE_PREFIX_CACHING", "KV_CACHE_DTYPE", "SPECULATIVE_CONFIG", "TOKENIZER"} <= set(names)
    assert set(names.values()) <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert "DTYPE" not in names and "MODEL" not in names  # settings (or refused) instead


def test_env_values_are_parsed_as_vllm_serve_parses_its_flags(clean_env):
    clean_env.setenv("MAX_NUM_SEQS", "8")
    clean_env.setenv("ENABLE_PREFIX_CACHING", "false")
    clean_env.setenv("DISABLE_LOG_STATS", "true")
    clean_env.setenv("SPECULATIVE_CONFIG", '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}')
    clean_env.setenv("COMPILATION_CONFIG", '{"mode": 0}')
    clean_env.setenv("ALLOWED_MEDIA_DOMAINS", "a.example b.example")
    parsed = parsed_engine_arg_env()
    assert parsed["max_num_seqs"] == 8 and parsed["enable_prefix_caching"] is False and parsed["disable_log_stats"] is True
    assert parsed["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}
    assert parsed["compilation_config"].mode == 0
    assert parsed["allowed_media_domains"] == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KV_CACHE_DTYPE": "bogus"}, ["KV_CACHE_DTYPE='bogus'", "invalid choice", "fp8_e4m3"]),
        ({"MAX_NUM_SEQS": "many"}, ["MAX_NUM_SEQS='many'", "invalid int value"]),
        ({"ENABLE_PREFIX_CACHING": "maybe"}, ["ENABLE_PREFIX_CACHING='maybe'", "true or false"]),
        ({"SPECULATIVE_CONFIG": "{not json"}, ["SPECULATIVE_CONFIG="]),
        ({"MAX_NUM_SEQS": "8", "ENGINE_ARGS": '{"max_num_seqs": 4}'}, ["MAX_NUM_SEQS and ENGINE_ARGS.max_num_seqs"]),
        ({"MODEL": "org/other"}, ["MODEL: a setting controls it: set MODEL_NAME instead"]),
        ({"REVISION": "main"}, ["set MODEL_REVISION instead"]),
        ({"ENGINE_ARGS": '{"max_num_seq": 3}'}, ["'max_num_seq' (did you mean 'max_num_seqs'?)"]),
    ],
)
def test_bad_engine_arguments_are_one_settings_error_at_start(clean_env, env, expected):
    with pytest.raises(SettingsError) as raised:
        check_all(**env)
    message = str(raised.value)
    assert message.startswith("Invalid worker configuration:")
    for text in expected:
        assert text in message


def test_config_errors_are_built_by_one_helper():
    """"Invalid worker configuration" is written once, in config/errors.py's config_error."""
    found = [
        str(path.relative_to(ROOT))
        for folder in ("config", "worker")
        for path in (ROOT / folder).rglob("*.py")
        if "Invalid worker configuration" in path.read_text()
    ] + (["handler.py"] if "Invalid worker configuration" in (ROOT / "handler.py").read_text() else [])
    assert found == ["config/errors.py"]


# --- typos ----------------------------------------------------------------------------------------------


def test_names_close_to_ours_get_a_did_you_mean(clean_env):
    clean_env.setenv("MAX_NUM_SEQ", "8")
    clean_env.setenv("TENSOR_PARALLEL", "2")
    clean_env.setenv("MAX_CONCURENCY", "8")
    warnings = typo_warnings()
    assert "env var MAX_NUM_SEQ is not a setting of this worker: did you mean MAX_NUM_SEQS?" in warnings
    assert any("TENSOR_PARALLEL " in w and "TENSOR_PARALLEL_SIZE" in w for w in warnings)
    assert any("MAX_CONCURENCY " in w and "MAX_CONCURRENCY" in w for w in warnings)


def test_unrelated_env_vars_stay_quiet(clean_env):
    unrelated = ["PATH", "HOME", "HOSTNAME", "USER", "SHELL", "TERM", "LANG", "PWD", "RUNPOD_POD_ID",
                 "RUNPOD_ENDPOINT_ID", "RUNPOD_WEBHOOK_GET_JOB", "CUDA_VERSION", "NVIDIA_VISIBLE_DEVICES",
                 "HF_HOME", "HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE", "PYTHONPATH", "VIRTUAL_ENV",
                 "NCCL_DEBUG", "MODEL_PATH", "MAX_JOBS", "DEBIAN_FRONTEND", "TZ", "SEED_VALUE"]
    for name in unrelated:
        clean_env.setenv(name, os.environ.get(name, "x"))
    noisy = [w for w in typo_warnings() if any(f"env var {name} " in w for name in unrelated)]
    assert noisy == []


# --- the migration table: every row -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MIGRATION))
def test_every_official_name_works_or_stops_the_worker_saying_what_to_set(clean_env, name):
    entry = MIGRATION[name]
    if entry.kind == "same":
        if name == "LORA_MODULES" and "lora_modules" not in WorkerSettings.model_fields:
            pytest.skip("LORA_MODULES arrives as a setting of its own with issue 12")
        assert name in SETTINGS or name in engine_arg_env_names(), f"{name} is neither a setting nor an engine argument"
    elif entry.kind == "vllm":
        import vllm.envs

        assert name in vllm.envs.environment_variables
    elif entry.kind == "alias":
        clean_env.setenv(name, "7")
        if entry.target in SETTINGS:
            assert str(getattr(check_all(), entry.target.lower())) in ("7", "7.0")
        else:
            assert parsed_engine_arg_env()[engine_arg_env_names()[entry.target]] == "7"
        clean_env.setenv(entry.target, "7")
        with pytest.raises(SettingsError) as raised:
            check_all()
        assert f"{name} and {entry.target} both set it" in str(raised.value)
    else:
        clean_env.setenv(name, "some-value")
        with pytest.raises(SettingsError) as raised:
            check_all()
        message = str(raised.value)
        assert f"{name}: not read by this worker; {entry.becomes}" in message
        for value in entry.accepted:  # values that mean what this worker does anyway pass
            clean_env.setenv(name, value)
            check_all()
        clean_env.delenv(name)
        check_all(**entry.instead)  # what it says to set instead is a valid configuration


@pytest.mark.parametrize("name", sorted(OFFICIAL_JOB_FIELDS))
def test_every_official_job_field_is_honoured_or_refused_with_the_fix(name):
    honoured, instead = OFFICIAL_JOB_FIELDS[name]
    for value in honoured:
        job = parse_job_input({"prompt": "hi", name: value})
        assert job.prompt == "hi" or job.messages[0].content == "hi"
    with pytest.raises(JobError) as raised:
        parse_job_input({"prompt": "hi", name: 3})
    assert raised.value.fields[0].field == f"input.{name}" and raised.value.fix.lower() == instead.lower()


def test_apply_chat_template_sends_a_prompt_as_one_user_message():
    job = parse_job_input({"prompt": "hi", "apply_chat_template": True, "sampling_params": {"max_tokens": 4}})
    assert job.prompt is None and [(m.role, m.content) for m in job.messages] == [("user", "hi")]
    assert parse_job_input({"prompt": "hi", "apply_chat_template": False}).prompt == "hi"


# --- start-up, as the worker runs -------------------------------------------------------------------------


def run_handler(tiny_model, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    full_env = {k: v for k, v in os.environ.items() if k not in SETTINGS | set(engine_arg_env_names())}
    full_env.update({"MODEL_NAME": str(tiny_model), "HF_HUB_OFFLINE": "1", **env})
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "handler.py", "--test_input", '{"input": {"prompt": "hi"}}'],
                            cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=180)
    return result, time.perf_counter() - started


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KV_CACHE_DTYPE": "bogus", "MAX_NUM_SEQ": "8"},
         ["KV_CACHE_DTYPE='bogus'", "invalid choice", "fp8_e4m3",
          "env var MAX_NUM_SEQ is not a setting of this worker: did you mean MAX_NUM_SEQS?"]),
        ({"ENGINE_ARGS": '{"no_such_argument": 1}'}, ["ENGINE_ARGS: unknown vLLM engine argument(s) 'no_such_argument'"]),
    ],
    ids=["kv_cache_dtype", "unknown_engine_args_key"],
)
def test_bad_configuration_exits_2_at_start_without_building_an_engine(tiny_model, env, expected):
    result, seconds = run_handler(tiny_model, **env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    for text in expected:
        assert text in output
    # No job was taken and no engine built (WARM_START is unset: the first job would have built it).
    assert "building the vLLM engine" not in output and "EngineCore" not in output
    print(f"exit 2 after {seconds:.1f} s")


def test_engine_arg_env_vars_and_official_names_reach_a_real_engine(clean_env, tiny_model, loop):
    """MAX_NUM_SEQS=3 reaches the engine's scheduler; OPENAI_SERVED_MODEL_NAME_OVERRIDE=foo is the name
    /v1/models answers with; TOKENIZER_NAME is the tokenizer vLLM loads."""
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    clean_env.setenv("MAX_NUM_SEQS", "3")
    clean_env.setenv("OPENAI_SERVED_MODEL_NAME_OVERRIDE", "foo")
    clean_env.setenv("TOKENIZER_NAME", str(tiny_model))
    settings = check_all(MODEL_NAME=str(tiny_model), ENFORCE_EAGER="true", MAX_MODEL_LEN="256")
    handle = EngineHandle(settings, on_fatal=FatalRecorder())
    try:
        engine = loop.run_until_complete(handle.get())
        assert engine.vllm_config.scheduler_config.max_num_seqs == 3
        assert engine.model_config.tokenizer == str(tiny_model)
        jobs = JobHandler(settings, handle)

        async def models():
            return [chunk async for chunk in jobs.handle({"id": "models", "input": {"openai_route": "/v1/models"}})]

        (listing,) = loop.run_until_complete(models())
        assert [model["id"] for model in listing["data"]] == ["foo"]
    finally:
        handle.shutdown()
        loop.run_until_complete(asyncio.sleep(0))


def test_the_migration_page_names_every_migration_row():
    section = (ROOT / "docs" / "migration.md").read_text()
    assert re.search(r"MAX_NUM_SEQ is not a setting of this worker: did you mean MAX_NUM_SEQS\?", section)
    for name in MIGRATION:
        assert f"`{name}`" in section
