"""Property-based bad input (hypothesis) on the real engine: every job ends as a whole output or one
structured error naming the problem; nothing raises, nothing hangs, and the next valid job succeeds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Keep generations short: a fuzz case that happens to be valid should not spend seconds generating.
FUZZ_MAX_TOKENS = 8
JOB_DEADLINE_S = 60

# Text JSON can carry but no encoding can: a lone UTF-16 surrogate ("\ud800"), as a JSON escape decodes to.
invalid_text = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    st.text(max_size=10),
    st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]),
    st.text(max_size=10),
)
texts = st.one_of(st.text(max_size=40), invalid_text)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)

sampling_values = {
    "max_tokens": st.one_of(st.integers(-5, FUZZ_MAX_TOKENS), st.integers(3000, 10**9), json_scalars),
    "temperature": st.one_of(st.floats(-10, 10), st.floats(allow_nan=True), json_scalars),
    "top_p": st.one_of(st.floats(-1, 2), json_scalars),
    "top_k": st.one_of(st.integers(-5, 10**6), json_scalars),
    "n": st.one_of(st.integers(-2, 5000), json_scalars),
    "seed": st.one_of(st.integers(-(2**70), 2**70), json_scalars),
    "stop": st.one_of(st.lists(st.text(max_size=5), max_size=200), st.text(max_size=5), json_values),
    "presence_penalty": st.one_of(st.floats(-5, 5), json_scalars),
    "logprobs": st.one_of(st.integers(-3, 100), json_scalars),
    "min_tokens": st.one_of(st.integers(-3, 100), json_scalars),
    "bogus_field": json_values,
}
sampling_params = st.one_of(
    st.fixed_dictionaries({}, optional=sampling_values),
    json_values,
)
# OpenAI-style content parts: text, images by URL (refused schemes and addresses included), and junk.
image_urls = st.sampled_from([
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    "data:image/png;base64,@@@", "data:text/plain,hi", "file:///etc/passwd", "http://127.0.0.1:1/a.png",
    "http://169.254.169.254/latest/meta-data/", "ftp://example.com/a.png", "", "not a url",
])
content_parts = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)}),
        st.fixed_dictionaries(
            {"type": st.just("image_url")},
            optional={"image_url": st.one_of(st.fixed_dictionaries({"url": image_urls}), json_values)},
        ),
        st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["video_url", "input_audio", ""]), json_scalars)}),
        json_values,
    ),
    max_size=4,
)
messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "wizard", ""]), json_scalars),
                "content": st.one_of(st.text(max_size=60), invalid_text, content_parts, json_values),
                "extra": json_scalars,
            },
        ),
        max_size=4,
    ),
    json_values,
)
native_inputs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.one_of(st.text(max_size=80), invalid_text, st.just("word " * 2500), json_scalars),
            "messages": messages,
            "sampling_params": sampling_params,
            "stream": st.one_of(st.booleans(), json_scalars),
            "chat_template_kwargs": json_values,
            "unexpected": json_values,
        },
    ),
)

counts = {"cases": 0, "ok": 0, "errors": 0}


@pytest.fixture(scope="module")
def fuzz_handler(loop, worker_settings, engine_handle):
    from worker.jobs.dispatch import JobHandler

    # Jobs wait for the engine before their input is checked (the input limits are sized from it):
    # build it first, so no fuzz case's deadline includes the engine start.
    loop.run_until_complete(engine_handle.get())

    return JobHandler(worker_settings.model_copy(update={"default_max_tokens": FUZZ_MAX_TOKENS}), engine_handle).handle


def run_with_deadline(loop, handler, job_input: Any) -> list[Any]:
    async def collect():
        return [chunk async for chunk in handler({"id": "fuzz", "input": job_input})]

    return loop.run_until_complete(asyncio.wait_for(collect(), JOB_DEADLINE_S))


def assert_output_or_structured_error(chunks: list[Any]) -> None:
    assert chunks, "a job always yields something"
    last = chunks[-1]
    if "error" in last:
        error = json.loads(last["error"])
        assert error["type"] in {"invalid_input", "timeout"}, error
        assert error["message"]
        assert error["fields"] and all(f["field"].startswith("input") for f in error["fields"]), error
        counts["errors"] += 1
    else:
        assert "usage" in last and last["choices"], last
        counts["ok"] += 1
    counts["cases"] += 1


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(job_input=native_inputs)
def test_native_jobs_never_crash_on_malformed_input(loop, fuzz_handler, job_input):
    assert_output_or_structured_error(run_with_deadline(loop, fuzz_handler, job_input))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data(), field=st.sampled_from(sorted(sampling_values)), chat=st.booleans(), stream=st.booleans())
def test_one_bad_field_in_an_otherwise_valid_job(loop, fuzz_handler, data, field, chat, stream):
    job = {"sampling_params": {"max_tokens": 4, field: data.draw(sampling_values[field])}, "stream": stream}
    if chat:
        job["messages"] = [{"role": "user", "content": data.draw(texts)}]
    else:
        job["prompt"] = data.draw(st.one_of(st.text(min_size=1, max_size=40), invalid_text))
    assert_output_or_structured_error(run_with_deadline(loop, fuzz_handler, job))


def test_after_the_fuzzing_the_worker_still_serves_jobs(loop, fuzz_handler, engine_handle):
    print(f"\nfuzz: {counts['cases']} native cases, {counts['errors']} structured errors, {counts['ok']} valid outputs")
    # ignore_eos: the tiny random model (512 tokens) ends a sampled 4-token answer early about once in 100 jobs.
    job = {"prompt": "still here?", "sampling_params": {"max_tokens": 4, "ignore_eos": True}}
    chunks = run_with_deadline(loop, fuzz_handler, job)
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert engine_handle.engine.get_num_unfinished_requests() == 0


openai_routes = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/nope", "", None, 5])
openai_bodies = st.one_of(
    json_values,
    st.text(max_size=30),  # a body that is not JSON reaches the worker as its text
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.one_of(st.just("MODEL"), st.just("no-such-model"), json_scalars),
            "messages": messages,
            "prompt": st.one_of(st.text(max_size=40), invalid_text, st.just("word " * 2500), json_values),
            "max_tokens": sampling_values["max_tokens"],
            "temperature": sampling_values["temperature"],
            "top_p": sampling_values["top_p"],
            "n": st.one_of(st.integers(-2, 20), json_scalars),
            "stop": sampling_values["stop"],
            "seed": sampling_values["seed"],
            "logprobs": st.one_of(st.booleans(), st.integers(-3, 30), json_scalars),
            "stream": st.one_of(st.booleans(), json_scalars),
            "response_format": json_values,
            "tools": json_values,
            "bogus_field": json_values,
        },
    ),
)
openai_counts = {"cases": 0, "errors": 0, "ok": 0}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(route=openai_routes, body=openai_bodies)
def test_openai_routes_never_crash_on_malformed_requests(loop, fuzz_handler, worker_settings, route, body):
    if isinstance(body, dict):
        if body.get("model") == "MODEL":
            body = {**body, "model": worker_settings.served_name}
        max_tokens = body.get("max_tokens")
        if max_tokens is None or (type(max_tokens) is int and FUZZ_MAX_TOKENS < max_tokens <= 2048):
            body = {**body, "max_tokens": 4}  # keep valid cases short; invalid values stay as drawn
    chunks = run_with_deadline(loop, fuzz_handler, {"openai_route": route, "openai_input": body})
    assert chunks
    last = chunks[-1]
    if isinstance(last, dict) and "error" in last:
        error = json.loads(last["error"])["error"]
        assert error["code"] in (400, 404, 408, 413), error
        assert error["message"] and error["type"]
        openai_counts["errors"] += 1
    elif isinstance(last, str):  # a stream: SSE text, ending with [DONE] or an SSE error event
        text = "".join(chunks)
        assert text.startswith("data: ") and text.endswith("\n\n")
        assert text.endswith("data: [DONE]\n\n") or '"error"' in text.split("data: ")[-1]
        openai_counts["ok"] += 1
    else:
        assert isinstance(last, dict) and ("choices" in last or "data" in last), last
        openai_counts["ok"] += 1
    openai_counts["cases"] += 1


def test_after_the_openai_fuzzing_the_worker_still_serves_jobs(loop, fuzz_handler, worker_settings, engine_handle):
    print(f"\nfuzz: {openai_counts['cases']} OpenAI cases, {openai_counts['errors']} OpenAI errors, {openai_counts['ok']} responses")
    body = {"model": worker_settings.served_name, "prompt": "still here?", "max_tokens": 3, "ignore_eos": True}
    (response,) = run_with_deadline(loop, fuzz_handler, {"openai_route": "/v1/completions", "openai_input": body})
    assert response["usage"]["completion_tokens"] == 3
    assert engine_handle.engine.get_num_unfinished_requests() == 0


# --- every other route of the table on the generative engine: Responses, Anthropic Messages, tokenize, ...
table_routes = st.sampled_from([
    "/v1/responses", "/v1/responses/resp_1", "/v1/responses/resp_1/cancel", "/v1/messages",
    "/v1/messages/count_tokens", "/tokenize", "/detokenize", "/v1/embeddings", "/classify", "/v1/rerank",
])
table_bodies = st.one_of(
    json_values,
    st.text(max_size=30),
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.one_of(st.just("MODEL"), st.just("no-such-model"), json_scalars),
            "input": st.one_of(st.text(max_size=40), messages, json_values),
            "messages": messages,
            "prompt": st.one_of(st.text(max_size=40), json_values),
            "tokens": st.one_of(st.lists(st.integers(-5, 10**7), max_size=8), json_values),
            "system": st.one_of(st.text(max_size=20), json_values),
            "max_tokens": sampling_values["max_tokens"],
            "max_output_tokens": sampling_values["max_tokens"],
            "temperature": sampling_values["temperature"],
            "stream": st.one_of(st.booleans(), json_scalars),
            "store": st.one_of(st.booleans(), json_scalars),
            "previous_response_id": st.one_of(st.none(), st.text(max_size=10), json_scalars),
            "bogus_field": json_values,
        },
    ),
)
table_counts = {"cases": 0, "errors": 0, "ok": 0}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(route=table_routes, body=table_bodies)
def test_every_table_route_ends_as_its_own_error_or_a_whole_response(loop, fuzz_handler, worker_settings, route, body):
    from worker.routes.errors import ANTHROPIC_ERROR_TYPES

    anthropic_route = route.startswith("/v1/messages")
    if isinstance(body, dict):
        if body.get("model") == "MODEL":
            body = {**body, "model": worker_settings.served_name}
        for key in ("max_tokens", "max_output_tokens"):  # keep valid cases short; invalid values stay as drawn
            value = body.get(key)
            if value is None or (type(value) is int and FUZZ_MAX_TOKENS < value <= 2048):
                body = {**body, key: 4}
    chunks = run_with_deadline(loop, fuzz_handler, {"openai_route": route, "openai_input": body})
    assert chunks
    last = chunks[-1]
    if isinstance(last, dict) and "error" in last:
        error = json.loads(last["error"])
        if anthropic_route:  # Anthropic's shape, its type naming the status
            assert error["type"] == "error" and error["error"]["type"] in ANTHROPIC_ERROR_TYPES.values(), error
            assert error["error"]["message"]
        else:
            assert error["error"]["code"] in (400, 404, 408, 422), error
            assert error["error"]["message"] and error["error"]["type"]
        table_counts["errors"] += 1
    elif isinstance(last, str):  # a stream: whole SSE events, ending with the route's last event or an error event
        text = "".join(chunks)
        assert text.endswith("\n\n") and (text.startswith("data: ") or text.startswith("event: "))
        ends = ("event: message_stop", "event: response.completed", "event: response.incomplete", "event: error", "data: [DONE]")
        assert any(end in text.split("\n\n")[-2] for end in ends) or '"error"' in text.split("\n\n")[-2], text[-300:]
        table_counts["ok"] += 1
    else:
        assert isinstance(last, dict), last
        table_counts["ok"] += 1
    table_counts["cases"] += 1


def test_after_the_table_fuzzing_the_worker_still_serves_every_kind_of_route(loop, fuzz_handler, worker_settings, engine_handle):
    print(f"\nfuzz: {table_counts['cases']} table-route cases, {table_counts['errors']} errors, {table_counts['ok']} responses")
    model = worker_settings.served_name
    (message,) = run_with_deadline(loop, fuzz_handler, {"openai_route": "/v1/messages", "openai_input": {
        "model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "still here?"}]}})
    assert message["usage"]["output_tokens"] == 3
    (response,) = run_with_deadline(loop, fuzz_handler, {"openai_route": "/v1/responses", "openai_input": {
        "model": model, "max_output_tokens": 3, "input": "still here?"}})
    assert response["usage"]["output_tokens"] == 3
    assert engine_handle.engine.get_num_unfinished_requests() == 0
