"""ENDPOINT_TYPE=load_balancer end to end: the real handler.py in a subprocess serving HTTP on 127.0.0.1 (tiny
model), driven by the official openai and anthropic clients and plain httpx, and compared with the same
requests as openai_route jobs on the session engine in this process (greedy: the same answers).

One server for the module (one extra engine start); the last test sends it SIGTERM.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.helpers import ROOT, worker_env

pytestmark = pytest.mark.slow

API_KEY = "test-key-not-a-secret"
MAX_CONCURRENCY = 4
START_TIMEOUT_S = 600
# Fields that differ between any two answers: ids, clocks, and a stream event's number (how many tokens an event
# carries depends on how fast its reader reads: vLLM merges the outputs a reader has not taken yet).
VOLATILE = {"id", "created", "created_at", "item_id", "response_id", "sequence_number"}
CHAT = {"messages": [{"role": "user", "content": "Tell me about load balancers."}], "max_tokens": 16, "temperature": 0}
COMPLETION = {"prompt": "A load balancer", "max_tokens": 16, "temperature": 0}
RESPONSES = {"input": "Tell me about load balancers.", "max_output_tokens": 16, "temperature": 0}
MESSAGES = {"messages": [{"role": "user", "content": "Tell me about load balancers."}], "max_tokens": 16,
            "temperature": 0}
# The anthropic client (2.x) takes no `temperature` argument: it goes in the body as given.
ANTHROPIC_ARGS = {"messages": MESSAGES["messages"], "max_tokens": 16, "extra_body": {"temperature": 0}}


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    health_url: str
    pings: list[int]  # /ping answers seen while it started, in order
    model: str

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60, **kwargs)

    def post(self, path: str, body, **kwargs) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        return httpx.post(self.url + path, content=content, headers=headers, timeout=120, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """A vLLM Prometheus metric from GET /metrics (the engine's own counts)."""
        text = self.get("/metrics").text
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} {labels} not in /metrics")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def watch_pings(url: str, process: subprocess.Popen) -> list[int]:
    """GET /ping until it answers 200 (or the worker exits): every answer, in order."""
    seen: list[int] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status = httpx.get(url + "/ping", timeout=5).status_code
        except httpx.TransportError:  # not listening yet (the worker is importing vLLM)
            status = None
        if status is not None:
            seen.append(status)
            if status == 200:
                break
        time.sleep(0.05)
    return seen


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory, worker_settings) -> Iterator[Server]:
    port, health_port = free_port(), free_port()
    env = worker_env(
        tiny_model, ENDPOINT_TYPE="load_balancer", PORT=str(port), PORT_HEALTH=str(health_port), API_KEY=API_KEY,
        MAX_CONCURRENCY=str(MAX_CONCURRENCY), VLLM_CPU_KVCACHE_SPACE="1", TORCHDYNAMO_DISABLE="1",
        RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
    )
    log_path = Path(tmp_path_factory.mktemp("lb")) / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "handler.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    health_url = f"http://127.0.0.1:{health_port}"
    pings = watch_pings(health_url, process)
    if not pings or pings[-1] != 200:
        process.kill()
        pytest.fail(f"the worker did not become healthy: /ping {pings}, exit {process.poll()}\n{log_path.read_text()[-4000:]}")
    yield Server(process, f"http://127.0.0.1:{port}", health_url, pings, worker_settings.served_name)
    if process.poll() is None:
        process.kill()
        process.wait(60)


@pytest.fixture(scope="module")
def openai_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def anthropic_client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=120)


def stable(value):
    """`value` without the fields that differ between two answers (ids, clocks)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def sse_events(text: str) -> list[tuple[str | None, object]]:
    """(event name, data) of each SSE event; the data parsed as JSON ("[DONE]" kept as is)."""
    events = []
    for block in filter(str.strip, text.split("\n\n")):
        name = re.search(r"^event: (.*)$", block, re.MULTILINE)
        data = "\n".join(line[6:] for line in block.splitlines() if line.startswith("data: "))
        events.append((name and name.group(1), data if data == "[DONE]" else stable(json.loads(data))))
    return events


def delta_text(data) -> str:
    """The text an event adds: a chat or completions chunk, a Responses text delta, an Anthropic text delta."""
    if not isinstance(data, dict):
        return ""
    if data.get("type") == "response.output_text.delta":
        return data["delta"]
    if data.get("type") == "content_block_delta":
        return data["delta"].get("text", "")
    return "".join(c.get("text") or (c.get("delta") or {}).get("content") or "" for c in data.get("choices", []))


def stream_outcome(events: list) -> tuple[list, str, list]:
    """A stream as its reader sees it whatever the pace: the events before the text, the text, the events after."""
    carrying = [i for i, (_name, data) in enumerate(events) if delta_text(data)]
    return events[: carrying[0]], "".join(delta_text(data) for _name, data in events), events[carrying[-1] + 1:]


def as_job(run_job, route: str, body: dict):
    """The same request as an openai_route job on the session engine: its one chunk, or its stream's text."""
    chunks = run_job({"openai_route": route, "openai_input": body})
    return "".join(chunks) if body.get("stream") else chunks[0]


# --- start-up ---------------------------------------------------------------------------------------------


def test_ping_answers_204_while_the_engine_starts_then_200(server):
    assert 204 in server.pings and server.pings[-1] == 200, server.pings
    assert set(server.pings) == {204, 200} and server.pings.index(200) == len(server.pings) - 1
    # One server on both ports: PORT answers /ping too, and PORT_HEALTH takes no API key for it.
    assert httpx.get(server.url + "/ping").status_code == 200
    assert httpx.get(server.health_url + "/health").status_code == 200


# --- the same answers as openai_route jobs ------------------------------------------------------------------


@pytest.mark.parametrize("route, body", [
    ("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION), ("/v1/responses", RESPONSES),
    ("/v1/messages", MESSAGES), ("/v1/messages/count_tokens", {"messages": MESSAGES["messages"]}),
    ("/tokenize", {"prompt": "A load balancer"}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_json_answers_are_those_of_openai_route_jobs(server, run_job, route, body):
    body = {"model": server.model, **body}
    over_http = server.post(route, body)
    assert over_http.status_code == 200 and over_http.headers["content-type"] == "application/json"
    assert stable(over_http.json()) == stable(as_job(run_job, route, body))


@pytest.mark.parametrize("route, body", [
    ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}),
    ("/v1/completions", {**COMPLETION, "stream_options": {"include_usage": True}}),
    ("/v1/responses", RESPONSES), ("/v1/messages", MESSAGES),
], ids=lambda v: v if isinstance(v, str) else "")
def test_streams_are_the_events_of_openai_route_jobs(server, run_job, route, body):
    body = {"model": server.model, **body, "stream": True}
    over_http = server.post(route, body)
    assert over_http.status_code == 200 and over_http.headers["content-type"].startswith("text/event-stream")
    head, text, tail = stream_outcome(sse_events(over_http.text))
    assert text and tail  # a completions stream has no head: its first event carries text
    assert (head, text, tail) == stream_outcome(sse_events(as_job(run_job, route, body)))


def test_openai_client_reads_every_route(server, openai_client, run_job):
    assert [m.id for m in openai_client.models.list().data] == [server.model]
    job = as_job(run_job, "/v1/chat/completions", {"model": server.model, **CHAT})
    chat = openai_client.chat.completions.create(model=server.model, **CHAT)
    assert chat.choices[0].message.content == job["choices"][0]["message"]["content"]
    streamed = openai_client.chat.completions.create(model=server.model, **CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == chat.choices[0].message.content
    completion = openai_client.completions.create(model=server.model, **COMPLETION)
    assert completion.choices[0].text == as_job(run_job, "/v1/completions", {"model": server.model, **COMPLETION})["choices"][0]["text"]
    response = openai_client.responses.create(model=server.model, **RESPONSES)
    job = as_job(run_job, "/v1/responses", {"model": server.model, **RESPONSES})
    texts = [part["text"] for item in job["output"] if item["type"] == "message" for part in item["content"]]
    assert response.output_text == "".join(texts) and response.usage.output_tokens == RESPONSES["max_output_tokens"]


def test_anthropic_client_reads_messages_whole_and_streamed(server, anthropic_client, run_job):
    job = as_job(run_job, "/v1/messages", {"model": server.model, **MESSAGES})
    message = anthropic_client.messages.create(model=server.model, **ANTHROPIC_ARGS)
    assert [block.text for block in message.content] == [block["text"] for block in job["content"]]
    with anthropic_client.messages.stream(model=server.model, **ANTHROPIC_ARGS) as stream:
        assert "".join(stream.text_stream) == message.content[0].text
        assert stream.get_final_message().stop_reason == message.stop_reason


# --- errors -----------------------------------------------------------------------------------------------


def test_a_malformed_request_is_a_4xx_json_error_and_the_next_one_is_answered(server, openai_client):
    for body, param in ((b"{not json", None), ([1, 2], None), ({"model": server.model, "messages": "hi", "max_tokens": "many"}, "messages")):
        answer = server.post("/v1/chat/completions", body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == 400 and error["message"] and (param is None or error["param"] is not None)
    with pytest.raises(anthropic.BadRequestError):
        anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0).messages.create(
            model=server.model, max_tokens=-1, messages=MESSAGES["messages"])
    assert openai_client.chat.completions.create(model=server.model, **CHAT).choices[0].finish_reason == "length"


def test_an_unknown_route_is_a_404_naming_the_routes_served(server):
    answer = server.post("/v1/nothing", {})
    assert answer.status_code == 404 and "/v1/chat/completions" in answer.json()["error"]["message"]
    assert server.get("/v1/chat/completions").status_code == 405


def test_api_key_is_required_on_every_route_but_ping_and_health(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.create(
            model=server.model, **ANTHROPIC_ARGS)
    for path in ("/v1/models", "/metrics", "/tokenize"):
        assert httpx.get(server.url + path).status_code == 401
    assert httpx.get(server.url + "/ping").status_code == 200


# --- capacity and cancellation ------------------------------------------------------------------------------


def long_stream(server: Server, max_tokens: int = 1500) -> httpx.Response:
    """A streamed completion, opened and read up to its first event (so the worker holds it in flight)."""
    client = httpx.Client(timeout=120)
    body = {"model": server.model, "prompt": "Count:", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    request = client.build_request("POST", server.url + "/v1/completions", json=body,
                                   headers={"Authorization": f"Bearer {API_KEY}"})
    response = client.send(request, stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    assert next(line for line in lines if line.startswith("data: "))
    response.lines = lines  # the rest, for a reader that goes on
    return response


def wait_until(condition, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_past_max_concurrency_requests_get_429_with_retry_after(server, openai_client):
    streams = [long_stream(server) for _ in range(MAX_CONCURRENCY)]
    try:
        refused = server.post("/v1/completions", {"model": server.model, **COMPLETION})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
        with pytest.raises(openai.RateLimitError):
            openai_client.completions.create(model=server.model, **COMPLETION)
        assert server.get("/metrics").status_code == 200  # not counted: the worker stays observable when full
    finally:
        for stream in streams:
            stream.close()
    assert wait_until(lambda: server.metric("vllm:num_requests_running") == 0)
    assert server.post("/v1/completions", {"model": server.model, **COMPLETION}).status_code == 200


def test_a_dropped_stream_aborts_its_engine_request(server):
    finished = server.metric("vllm:request_success_total", finished_reason="length")
    stream = long_stream(server)
    assert wait_until(lambda: server.metric("vllm:num_requests_running") == 1)
    stream.close()  # the client goes away mid-stream
    assert wait_until(lambda: server.metric("vllm:num_requests_running") == 0)
    # Aborted, not run to its 1500 tokens: no request finished by length since.
    assert server.metric("vllm:request_success_total", finished_reason="length") == finished


# --- SIGTERM (last: it stops the module's server) ----------------------------------------------------------


def test_sigterm_lets_streams_in_flight_end_whole_then_exits_0(server):
    streams = [long_stream(server, max_tokens=1000) for _ in range(2)]
    texts: list[list[str]] = [[], []]
    readers = [threading.Thread(target=lambda s=s, out=out: out.extend(s.lines)) for s, out in zip(streams, texts)]
    server.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: httpx.get(server.health_url + "/ping").status_code == 503)
    refused = server.post("/v1/completions", {"model": server.model, **COMPLETION})
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(180)
    assert server.process.wait(120) == 0
    for lines in texts:
        data = [line[6:] for line in lines if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        assert json.loads(data[-2])["usage"]["completion_tokens"] == 1000
