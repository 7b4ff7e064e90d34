"""Hostile input costs nothing: an input over MAX_INPUT_CHARS or a prompt too long in characters for the context
is refused before it is parsed or tokenized, and text that is not valid Unicode is invalid_input naming the
field, for native jobs and OpenAI routes alike. The 5 MB refusals print their time and the memory they keep
(measured, not asserted: the machine is shared)."""

from __future__ import annotations

import gc
import json
import time

import psutil
import pytest

from tests.helpers import job_error

FIVE_MB = 5 * 1024 * 1024
SURROGATE = "\ud800"


@pytest.fixture(scope="module")
def limits(loop, engine_handle, worker_settings):
    from worker.requests.limits import InputLimits

    engine = loop.run_until_complete(engine_handle.get())
    return InputLimits.of(engine.get_tokenizer(), engine.model_config.max_model_len, worker_settings.max_input_chars)


def openai_error(chunks: list) -> dict:
    assert chunks and isinstance(chunks[-1], dict) and "error" in chunks[-1], chunks
    return json.loads(chunks[-1]["error"])["error"]


def measure(run, job_input_of) -> tuple[list, float, float]:
    """Run one job whose input is built by `job_input_of()`; its time, and the RSS it left behind (MB)."""
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    job_input = job_input_of()
    started = time.perf_counter()
    chunks = run(job_input)
    elapsed_ms = (time.perf_counter() - started) * 1000
    del job_input
    gc.collect()
    kept_mb = (process.memory_info().rss - before) / 2**20
    return chunks, elapsed_ms, kept_mb


def test_five_mb_inputs_are_refused_at_once(run_job, worker_settings, limits):
    model = worker_settings.served_name
    cases = {
        "native prompt": (lambda: {"prompt": "word " * (FIVE_MB // 5)}, "input"),
        "native chat": (lambda: {"messages": [{"role": "user", "content": "word " * (FIVE_MB // 5)}]}, "input"),
        "openai completion": (
            lambda: {"openai_route": "/v1/completions", "openai_input": {"model": model, "prompt": "word " * (FIVE_MB // 5)}},
            "openai_input",
        ),
        "openai chat, 50,000 messages": (
            lambda: {
                "openai_route": "/v1/chat/completions",
                "openai_input": {"model": model, "messages": [{"role": "user", "content": "w" * 100}] * 50_000},
            },
            "openai_input",
        ),
    }
    run_job({"openai_route": "/v1/models"})  # the OpenAI routes are built on their first job: not part of a refusal
    rows = []
    for name, (job_input_of, field) in cases.items():
        chunks, elapsed_ms, kept_mb = measure(run_job, job_input_of)
        if field == "input":
            error = job_error(chunks)
            assert error["type"] == "invalid_input" and [f["field"] for f in error["fields"]] == ["input"], error
            assert "MAX_INPUT_CHARS" in error["fix"]
        else:
            error = openai_error(chunks)
            assert error["code"] == 413 and error["param"] == field, error
        rows.append(f"| {name} | {elapsed_ms:.2f} | {kept_mb:+.1f} |")
    print(f"\nMAX_INPUT_CHARS default for the tiny model: {limits.max_input_chars:,}")
    print("| 5 MB input | refused in ms | RSS kept MB |\n|---|---:|---:|\n" + "\n".join(rows))


def test_a_prompt_too_long_in_characters_is_refused_before_tokenizing(run_job, worker_settings, limits):
    over = "word " * (limits.max_prompt_chars // 5 + 1)
    assert limits.prompt_too_long(len(over)) and limits.input_too_large({"prompt": over}) is None
    for job_input, field in [
        ({"prompt": over}, "input.prompt"),
        ({"messages": [{"role": "user", "content": over}]}, "input.messages"),
    ]:
        started = time.perf_counter()
        error = job_error(run_job(job_input))
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert [f["field"] for f in error["fields"]] == [field], error
        assert "characters" in error["message"] and "context" in error["message"], error
        print(f"\n{field}: {len(over):,} characters refused in {elapsed_ms:.2f} ms")
    body = {"model": worker_settings.served_name, "prompt": over, "max_tokens": 2}
    error = openai_error(run_job({"openai_route": "/v1/completions", "openai_input": body}))
    assert error["code"] == 400 and error["param"] == "prompt", error
    body = {"model": worker_settings.served_name, "messages": [{"role": "user", "content": over}], "max_tokens": 2}
    error = openai_error(run_job({"openai_route": "/v1/chat/completions", "openai_input": body}))
    assert error["code"] == 400 and error["param"] == "messages", error
    # Under the character bound, the exact check still counts the tokens.
    error = job_error(run_job({"prompt": "word " * (limits.max_prompt_chars // 5 - 10)}))
    assert "tokens" in error["message"] and [f["field"] for f in error["fields"]] == ["input.prompt"], error


def test_max_input_chars_setting_is_the_limit(loop, worker_settings, engine_handle):
    from worker.jobs.dispatch import JobHandler

    handler = JobHandler(worker_settings.model_copy(update={"max_input_chars": 1000}), engine_handle).handle

    def run(job_input):
        async def collect():
            return [chunk async for chunk in handler({"id": "limit", "input": job_input})]

        return loop.run_until_complete(collect())

    error = job_error(run({"prompt": "x" * 2000}))
    assert [f["field"] for f in error["fields"]] == ["input"] and "1,000" in error["message"], error
    assert "error" not in run({"prompt": "x" * 100, "sampling_params": {"max_tokens": 2}})[-1]
    body = {"model": worker_settings.served_name, "prompt": "x" * 2000}
    assert openai_error(run({"openai_route": "/v1/completions", "openai_input": body}))["code"] == 413


@pytest.mark.parametrize(
    ("job_input", "field"),
    [
        ({"prompt": f"abc{SURROGATE}def"}, "input.prompt"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SURROGATE}]}, "input.messages[1].content"),
        ({"messages": [{"role": "user", "content": "hi", "name": f"x{SURROGATE}"}]}, "input.messages[0].name"),
        ({"prompt": "hi", "sampling_params": {"stop": ["ok", "\udfff"]}}, "input.sampling_params.stop[1]"),
        ({"prompt": "hi", "sampling_params": {"bad_words": [SURROGATE]}}, "input.sampling_params.bad_words[0]"),
        ({"prompt": "hi", "sampling_params": {"structured_outputs": {"regex": f"a{SURROGATE}"}}}, "input.sampling_params.structured_outputs.regex"),
        ({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"flavour": SURROGATE}}, "input.chat_template_kwargs.flavour"),
    ],
)
def test_text_that_is_not_unicode_is_invalid_input_naming_the_field(run_job, job_input, field):
    error = job_error(run_job(job_input))
    assert error["type"] == "invalid_input", error
    assert [f["field"] for f in error["fields"]] == [field], error
    assert "Unicode" in error["message"]


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/completions", {"prompt": f"abc{SURROGATE}"}, "prompt"),
        ("/v1/completions", {"prompt": ["fine", SURROGATE]}, "prompt.1"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": SURROGATE}]}, "messages.0.content"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
            "messages.0.content.0.text",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop": [SURROGATE]}, "stop.0"),
    ],
)
def test_openai_text_that_is_not_unicode_is_a_400_naming_the_param(run_job, worker_settings, route, body, param):
    body = {"model": worker_settings.served_name, "max_tokens": 2, **body}
    error = openai_error(run_job({"openai_route": route, "openai_input": body}))
    assert error["code"] == 400 and error["param"] == param, error
    assert "Unicode" in error["message"]


def test_after_hostile_input_the_worker_serves_the_next_job(run_job, engine_handle):
    chunks = run_job({"prompt": "still here?", "sampling_params": {"max_tokens": 3, "ignore_eos": True}})
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert engine_handle.engine.get_num_unfinished_requests() == 0
