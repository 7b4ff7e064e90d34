"""OpenAI-compatible routes end to end: the official openai client -> a RunPod-like gateway
(tests/openai_gateway.py) -> openai_route jobs -> the worker's handler -> vLLM's serving layer on the
session's one engine (tiny model).

The client is synchronous, as most users run it: each call runs in a thread while the session loop
(which owns the engine and the gateway) runs.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.helpers.openai_gateway import OpenAIGateway

MESSAGES = [{"role": "user", "content": "Tell me about tensor parallelism."}]
GREEDY = {"temperature": 0, "max_tokens": 24}


@pytest.fixture()
def assert_alive(call, client, model):
    """After an error: the worker still answers the next request."""

    def check():
        response = call(client.chat.completions.create, model=model, messages=MESSAGES, max_tokens=4)
        assert response.choices[0].finish_reason in ("length", "stop")

    return check


def chat(call, client, model, **params):
    return call(client.chat.completions.create, model=model, messages=params.pop("messages", MESSAGES), **params)


def stream_chunks(call, fn, **params):
    return call(lambda: list(fn(stream=True, **params)))


def error_body(error: openai.APIStatusError) -> dict:
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == error.status_code
    return body["error"]


# --- routes ------------------------------------------------------------------------------------------


def test_models_lists_the_served_model_name(call, client, model):
    models = call(client.models.list)
    assert [m.id for m in models.data] == [model]


def test_served_model_name_setting_is_the_name_the_routes_answer_to(loop, engine_handle, worker_settings):
    from worker.jobs.openai_route import route_job_chunks
    from worker.routes.serving import OpenAIRoutes

    settings = worker_settings.model_copy(update={"served_model_name": "my-org/my-model"})

    async def run(job_input):
        routes = await OpenAIRoutes.create(await engine_handle.get(), settings)
        return [chunk async for chunk in route_job_chunks(routes, job_input, "served-name", settings)]

    (models,) = loop.run_until_complete(run({"openai_route": "/v1/models"}))
    assert [m["id"] for m in models["data"]] == ["my-org/my-model"]
    body = {"model": "my-org/my-model", "messages": MESSAGES, "max_tokens": 2}
    (response,) = loop.run_until_complete(run({"openai_route": "/v1/chat/completions", "openai_input": body}))
    assert response["model"] == "my-org/my-model"


def test_chat_completion_returns_text_and_usage(call, client, model):
    response = chat(call, client, model, **GREEDY)
    assert response.object == "chat.completion" and response.model == model
    (choice,) = response.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("length", "stop")
    usage = response.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= GREEDY["max_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion_returns_text_and_usage(call, client, model):
    response = call(client.completions.create, model=model, prompt="Hello, world!", **GREEDY)
    assert response.object == "text_completion"
    (choice,) = response.choices
    assert choice.text and choice.finish_reason in ("length", "stop")
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    if choice.finish_reason == "length":
        assert response.usage.completion_tokens == GREEDY["max_tokens"]


def test_streamed_chat_equals_non_streamed_under_greedy_sampling_with_usage(call, client, model):
    whole = chat(call, client, model, **GREEDY)
    usage = {"include_usage": True}
    chunks = stream_chunks(call, client.chat.completions.create, model=model, messages=MESSAGES, stream_options=usage, **GREEDY)
    assert len(chunks) > 3, "one SSE event per generated token, relayed as it comes"
    *deltas, last = chunks
    assert "".join(c.choices[0].delta.content or "" for c in deltas if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in deltas if c.choices][-1] == whole.choices[0].finish_reason
    # include_usage: a last chunk with no choices carries the same counts as the non-streamed response.
    assert last.choices == [] and last.usage == whole.usage
    assert all(c.usage is None for c in deltas)


def test_streamed_completion_equals_non_streamed_under_greedy_sampling_with_usage(call, client, model):
    params = {"model": model, "prompt": "Tensor parallelism splits", **GREEDY}
    whole = call(client.completions.create, **params)
    chunks = stream_chunks(call, client.completions.create, stream_options={"include_usage": True}, **params)
    *deltas, last = chunks
    assert "".join(c.choices[0].text for c in deltas) == whole.choices[0].text
    assert last.usage == whole.usage


def test_stream_is_server_sent_events_ending_with_done(call, gateway, model):
    body = {"model": model, "messages": MESSAGES, "max_tokens": 4, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}

    def raw_stream():
        with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body, timeout=180) as response:
            return response.status_code, response.headers["content-type"], response.read().decode()

    status, content_type, text = call(raw_stream)
    assert status == 200 and content_type.startswith("text/event-stream")
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-1]["usage"]["completion_tokens"] == 4


# --- what vLLM's server accepts works the same ----------------------------------------------------


def test_n_returns_that_many_choices(call, client, model):
    response = chat(call, client, model, n=2, temperature=1.0, max_tokens=8, seed=1)
    assert sorted(c.index for c in response.choices) == [0, 1]
    assert response.usage.completion_tokens <= 16


def test_stop_ends_the_text_before_the_stop_string(call, client, model):
    prompt = "Hello, world!"
    whole = call(client.completions.create, model=model, prompt=prompt, **GREEDY).choices[0].text
    # A plain two-character piece past the start of the text: stop there, on its first occurrence.
    stop = next(piece for i in range(2, len(whole) - 1) if (piece := whole[i : i + 2]).isascii() and piece.isalnum())
    stopped = call(client.completions.create, model=model, prompt=prompt, stop=[stop], **GREEDY).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == whole[: whole.index(stop)], (whole, stop)


def test_seed_makes_sampling_repeatable(call, client, model):
    params = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 16, "seed": 1234}
    first = chat(call, client, model, **params).choices[0].message.content
    second = chat(call, client, model, **params).choices[0].message.content
    assert first == second


def test_logprobs_on_chat_and_completions(call, client, model):
    response = chat(call, client, model, logprobs=True, top_logprobs=2, **GREEDY)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)

    completion = call(client.completions.create, model=model, prompt="Hello", logprobs=2, **GREEDY)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == completion.usage.completion_tokens
    assert all(len(top) >= 1 for top in logprobs.top_logprobs)


def test_response_format_json_schema_constrains_the_output(call, client, model):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "boolean"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response = chat(
        call,
        client,
        model,
        temperature=0,
        max_tokens=48,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content)["answer"], bool)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_tools_with_tool_choice_none_answer_in_text(call, client, model):
    response = chat(call, client, model, tools=TOOLS, tool_choice="none", **GREEDY)
    assert not response.choices[0].message.tool_calls
    assert isinstance(response.choices[0].message.content, str)


def test_tool_choice_that_needs_a_tool_parser_is_a_clean_openai_error(call, client, model, assert_alive):
    # vLLM serves tool calls through a model-specific tool parser; without TOOL_CALL_PARSER (as here) a
    # named or "auto" tool choice is refused the way `vllm serve` refuses it.
    for tool_choice in ({"type": "function", "function": {"name": "get_weather"}}, "auto"):
        with pytest.raises(openai.BadRequestError) as raised:
            chat(call, client, model, tools=TOOLS, tool_choice=tool_choice, **GREEDY)
        assert "tool-call-parser" in error_body(raised.value)["message"]
    assert_alive()


@pytest.fixture(scope="module")
def tool_client(loop, worker_settings, engine_handle):
    """A client of a worker configured for tool calls (TOOL_CALL_PARSER=hermes, ENABLE_AUTO_TOOL_CHOICE),
    on the session's engine: the parser is an OpenAI-server option, not an engine one."""
    from worker.jobs.dispatch import JobHandler

    settings = worker_settings.model_copy(update={"tool_call_parser": "hermes", "enable_auto_tool_choice": True})
    gateway = OpenAIGateway(JobHandler(settings, engine_handle).handle)
    loop.run_until_complete(gateway.start())
    yield openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=180)
    loop.run_until_complete(gateway.stop())


def test_tool_call_parser_setting_enables_named_required_and_auto_tool_choice(call, tool_client, model):
    # With the parser, vLLM constrains a named or required choice to the parser's tool-call format
    # (hermes: <tool_call>{"name": ..., "arguments": ...}</tool_call>) naming the tool. The tiny model's
    # random weights then fill the arguments with whitespace until max_tokens, so the call is seen in
    # the text rather than parsed; a real model closes it and gets message.tool_calls.
    for tool_choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
        response = chat(call, tool_client, model, tools=TOOLS, tool_choice=tool_choice, temperature=0, max_tokens=64)
        text = response.choices[0].message.content
        assert text.startswith('<tool_call>\n{"name": "get_weather", "arguments": '), text
    auto = chat(call, tool_client, model, tools=TOOLS, tool_choice="auto", **GREEDY)
    assert auto.choices[0].finish_reason in ("length", "stop") and auto.usage.completion_tokens > 0


def test_chat_template_kwargs_are_accepted_and_checked(call, client, model):
    # The tiny model's template reads no extra variables: kwargs it does not declare are dropped, as
    # `vllm serve` drops them; a value that is not an object is refused by vLLM's request model.
    plain = chat(call, client, model, **GREEDY)
    with_kwargs = chat(call, client, model, extra_body={"chat_template_kwargs": {"enable_thinking": False}}, **GREEDY)
    assert with_kwargs.choices[0].message.content == plain.choices[0].message.content
    assert with_kwargs.usage == plain.usage
    with pytest.raises(openai.BadRequestError) as raised:
        chat(call, client, model, extra_body={"chat_template_kwargs": "not-an-object"}, **GREEDY)
    assert error_body(raised.value)["param"] == "chat_template_kwargs"


# --- errors: OpenAI's shape, the right status, and the worker keeps serving -----------------------


def test_unknown_model_is_404(call, client, assert_alive):
    with pytest.raises(openai.NotFoundError) as raised:
        call(client.chat.completions.create, model="no-such-model", messages=MESSAGES)
    error = error_body(raised.value)
    assert error["type"] == "NotFoundError" and "no-such-model" in error["message"]
    assert_alive()


def test_bad_parameter_is_400_naming_the_parameter(call, client, model, assert_alive):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(call, client, model, temperature=-1)
    assert error_body(raised.value)["param"] == "temperature"
    assert_alive()


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_beyond_the_context_is_400(call, client, model, assert_alive, stream):
    # A stream that fails before its first event answers with the error status, as `vllm serve` does.
    with pytest.raises(openai.BadRequestError) as raised:
        chat(call, client, model, max_tokens=1_000_000, stream=stream)
    error = error_body(raised.value)
    assert error["param"] == "max_tokens" and "max_model_len" in error["message"]
    assert_alive()


def test_unknown_route_is_404(call, client, gateway, assert_alive):
    with pytest.raises(openai.NotFoundError) as raised:
        call(client.post, "/nope", body={}, cast_to=object)
    assert gateway.jobs[-1]["openai_route"] == "/v1/nope"
    error = error_body(raised.value)
    assert error["param"] == "openai_route" and "/v1/chat/completions" in error["message"]
    assert_alive()


def test_body_missing_required_field_is_400(call, client, model, assert_alive):
    with pytest.raises(openai.BadRequestError) as raised:
        call(client.post, "/chat/completions", body={"model": model}, cast_to=object)
    error = error_body(raised.value)
    assert error["param"] == "messages" and "messages" in error["message"]
    assert_alive()


def test_body_that_is_not_json_is_400(call, gateway, assert_alive):
    def post():
        return httpx.post(
            f"{gateway.base_url}/chat/completions",
            content=b'{"model": "x", "messages": [',
            headers={"Content-Type": "application/json"},
            timeout=180,
        )

    response = call(post)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["param"] == "openai_input"
    assert_alive()


def test_failed_job_error_is_a_json_string_of_the_openai_error(run_job):
    # The runpod SDK keeps a failed job's error as a string: ours is the OpenAI error body as JSON.
    body = {"model": "no-such-model", "messages": MESSAGES}
    (chunk,) = run_job({"openai_route": "/v1/chat/completions", "openai_input": body})
    assert isinstance(chunk["error"], str)
    assert json.loads(chunk["error"])["error"]["code"] == 404


def test_a_long_stream_is_relayed_in_few_chunks_and_events_stay_whole(loop, job_handler, model):
    """Each job chunk is one POST to RunPod: SSE events are joined, never split."""
    body = {"model": model, "prompt": "Once", "max_tokens": 512, "temperature": 0, "ignore_eos": True, "stream": True}

    async def collect():
        return [c async for c in job_handler({"id": "sse", "input": {"openai_route": "/v1/completions", "openai_input": body}})]

    chunks = loop.run_until_complete(collect())
    assert all(isinstance(c, str) and c.endswith("\n\n") for c in chunks)
    events = "".join(chunks).split("\n\n")[:-1]
    assert events[-1] == "data: [DONE]"
    tokens = sum(len(json.loads(e.removeprefix("data: "))["choices"]) for e in events[:-1])
    assert tokens >= 512
    assert len(chunks) <= 20, f"{len(chunks)} chunks for {len(events)} SSE events"


def test_job_timeout_aborts_an_openai_stream(loop, worker_settings, engine_handle, model):
    from worker.jobs.dispatch import JobHandler

    handler = JobHandler(worker_settings.model_copy(update={"job_timeout_s": 0.3}), engine_handle).handle
    body = {"model": model, "prompt": "Once", "max_tokens": 1900, "ignore_eos": True, "stream": True}

    async def collect():
        chunks = [c async for c in handler({"id": "slow-sse", "input": {"openai_route": "/v1/completions", "openai_input": body}})]
        for _ in range(100):
            if not engine_handle.engine.get_num_unfinished_requests():
                break
            await asyncio.sleep(0.05)
        return chunks, engine_handle.engine.get_num_unfinished_requests()

    chunks, unfinished = loop.run_until_complete(collect())
    # Mid-stream the timeout is an SSE error event; before the first event (a slow start) a failed job.
    last = chunks[-1]
    last = json.loads(last["error"]) if isinstance(last, dict) else json.loads(last.strip().split("data: ")[-1])
    assert last["error"]["code"] == 408 and "JOB_TIMEOUT_S=0.3" in last["error"]["message"]
    assert unfinished == 0
