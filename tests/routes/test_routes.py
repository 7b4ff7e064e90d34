"""The route table on the session's generative engine (tiny model): the Responses API, Anthropic's
Messages API, tokenize/detokenize and unknown routes, through the official openai and anthropic clients
and the RunPod-like gateway (tests/helpers/openai_gateway.py); and the table kept in step with the
routes vLLM registers and with docs/openai-routes.md."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys

import anthropic
import openai
import pytest

from tests.helpers import ROOT
from worker.routes.table import NOT_SERVED, ROUTES

GREEDY = {"temperature": 0, "max_output_tokens": 16}
PROMPT = "Tell me about tensor parallelism."


@pytest.fixture(scope="module")
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.root_url, api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def routes(loop, engine_handle, worker_settings):
    from worker.routes.serving import OpenAIRoutes

    return loop.run_until_complete(OpenAIRoutes.create(loop.run_until_complete(engine_handle.get()), worker_settings))


def run_route(loop, job_handler, route, body):
    async def collect():
        return [c async for c in job_handler({"id": "route", "input": {"openai_route": route, "openai_input": body}})]

    return loop.run_until_complete(collect())


# --- OpenAI Responses API -------------------------------------------------------------------------------


def test_responses_create_answers_text_with_usage(call, client, model):
    response = call(client.responses.create, model=model, input=PROMPT, **GREEDY)
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.output_text
    assert 0 < response.usage.output_tokens <= GREEDY["max_output_tokens"]
    assert response.usage.input_tokens > 0


def test_streamed_responses_equal_the_whole_response_under_greedy_sampling(call, client, model):
    whole = call(client.responses.create, model=model, input=PROMPT, **GREEDY)
    events = call(lambda: list(client.responses.create(model=model, input=PROMPT, stream=True, **GREEDY)))
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == whole.output_text
    assert events[-1].response.output_text == whole.output_text


def test_responses_keep_no_state_and_say_why(call, client, model):
    # store: true (the API's default) is accepted and not honoured, as vllm serve does without a store.
    stored = call(client.responses.create, model=model, input=PROMPT, store=True, **GREEDY)
    with pytest.raises(openai.BadRequestError) as follow_up:
        call(client.responses.create, model=model, input="and then?", previous_response_id=stored.id, **GREEDY)
    assert "stores no responses" in follow_up.value.message and follow_up.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as background:
        call(client.responses.create, model=model, input=PROMPT, background=True, **GREEDY)
    assert background.value.body["param"] == "background"
    with pytest.raises(openai.NotFoundError) as retrieve:
        call(client.responses.retrieve, stored.id)
    assert "stores no responses" in retrieve.value.message
    with pytest.raises(openai.NotFoundError):
        call(client.responses.cancel, stored.id)


# --- Anthropic Messages API -----------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": PROMPT}]
# anthropic 2.x has no temperature argument (Anthropic's newest models take none); vLLM's Messages API does.
GREEDY_EXTRA = {"temperature": 0}


def test_anthropic_messages_create_answers_text_with_usage(call, claude, model):
    message = call(claude.messages.create, model=model, max_tokens=16, extra_body=GREEDY_EXTRA, messages=MESSAGES)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("max_tokens", "end_turn")
    assert 0 < message.usage.output_tokens <= 16 and message.usage.input_tokens > 0


def test_anthropic_stream_text_equals_the_whole_message_under_greedy_sampling(call, claude, model):
    whole = call(claude.messages.create, model=model, max_tokens=16, extra_body=GREEDY_EXTRA, messages=MESSAGES)

    def stream():
        with claude.messages.stream(model=model, max_tokens=16, extra_body=GREEDY_EXTRA, messages=MESSAGES) as events:
            kinds = [event.type for event in events]
            return kinds, events.get_final_message()

    kinds, final = call(stream)
    # Anthropic's SSE event types, in their order.
    assert kinds[0] == "message_start" and "content_block_start" in kinds and kinds[-1] == "message_stop"
    text_deltas = [k for k in kinds if k == "text"]
    assert text_deltas, kinds
    assert final.content[0].text == whole.content[0].text


def test_anthropic_count_tokens_counts_the_prompt(call, claude, model):
    short = call(claude.messages.count_tokens, model=model, messages=[{"role": "user", "content": "Hi"}])
    longer = call(claude.messages.count_tokens, model=model, messages=MESSAGES)
    assert 0 < short.input_tokens < longer.input_tokens


def test_anthropic_errors_are_anthropic_shaped(call, claude, model):
    with pytest.raises(anthropic.BadRequestError) as error:
        call(claude.messages.create, model=model, max_tokens=16, messages=[{"role": "wizard", "content": "hi"}])
    assert error.value.body["type"] == "error" and error.value.body["error"]["type"] == "invalid_request_error"
    assert error.value.body["error"]["message"]


# --- tokenize, unknown and unserved routes ----------------------------------------------------------------


def test_tokenize_then_detokenize_round_trips_a_prompt(loop, job_handler, model):
    prompt = "Unicode: café 東京 😀 and numbers 3.14159"
    (tokens,) = run_route(loop, job_handler, "/tokenize", {"model": model, "prompt": prompt, "add_special_tokens": False})
    assert tokens["count"] == len(tokens["tokens"]) > 0
    (text,) = run_route(loop, job_handler, "/detokenize", {"model": model, "tokens": tokens["tokens"]})
    assert text["prompt"] == prompt


def test_a_route_the_model_cannot_serve_answers_404_naming_the_served_routes(call, client, model, routes):
    with pytest.raises(openai.NotFoundError) as error:
        call(client.embeddings.create, model=model, input="hello")
    message = error.value.message
    assert "/v1/embeddings" in message and "/v1/chat/completions" in message and "/v1/messages" in message
    assert "/v1/embeddings" not in routes.served and "/v1/responses" in routes.served


def test_unknown_route_answers_404_in_openai_shape(loop, job_handler):
    import json

    (chunk,) = run_route(loop, job_handler, "/v1/nope", {})
    error = json.loads(chunk["error"])["error"]
    assert error["code"] == 404 and error["param"] == "openai_route" and "/tokenize" in error["message"]


# --- the table, vLLM and the docs ---------------------------------------------------------------------


@pytest.fixture
def root_log_level_kept():
    """vLLM's SageMaker routes import model_hosting_container_standards, which sets the root logger and its
    handlers to ERROR on import: later tests' caplog would see no warning."""
    level = logging.root.level
    handler_levels = [(handler, handler.level) for handler in logging.root.handlers]
    yield
    logging.root.setLevel(level)
    for handler, handler_level in handler_levels:
        handler.setLevel(handler_level)


def test_every_route_vllm_registers_is_served_or_listed_with_its_reason(loop, engine_handle, routes, root_log_level_kept):
    from fastapi import FastAPI
    from vllm.entrypoints.launchers.api_server.routers import register_api_routers

    engine = loop.run_until_complete(engine_handle.get())
    app = FastAPI()
    app.state.args = routes.state.args
    register_api_routers(app.state.args, app, loop.run_until_complete(engine.get_supported_tasks()), engine.model_config)
    registered = {route.path for route in app.routes}
    table = {route.path for route in ROUTES}
    assert registered - table - set(NOT_SERVED) == set(), "add these to worker/routes/table.py ROUTES or NOT_SERVED"
    assert set(routes.served) <= registered, "the worker serves a route vllm serve would not for this model"
    assert set(routes.served) == registered & table


def test_the_worker_never_imports_what_silences_its_logs():
    """vLLM's route registration (not used here: the worker's own table serves) imports a package that sets the
    root logger and its handlers to ERROR; every worker module imports without it."""
    walk = (
        "import importlib, logging, pkgutil, sys, worker\n"
        "for module in pkgutil.walk_packages(worker.__path__, 'worker.'):\n"
        "    importlib.import_module(module.name)\n"
        "print('model_hosting_container_standards' in sys.modules, logging.root.level)\n"
    )
    result = subprocess.run([sys.executable, "-c", walk], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    imported, root_level = result.stdout.split()[-2:]
    assert imported == "False" and int(root_level) <= logging.WARNING, result.stdout


def test_readme_route_table_is_generated_from_the_table():
    spec = importlib.util.spec_from_file_location("routes_table", ROOT / "scripts" / "routes_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    readme = table.PAGE.read_text()
    assert table.START in readme and table.END in readme, "docs/openai-routes.md lacks the route table markers"
    current = readme.split(table.START, 1)[1].split(table.END, 1)[0].strip()
    assert current == table.render_table(), "docs/openai-routes.md route table is stale: run .venv/bin/python scripts/routes_table.py --write"
