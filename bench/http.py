"""`python -m bench http`: streamed completions through the load-balancing HTTP server (ENDPOINT_TYPE=load_balancer,
the real handler.py in a subprocess) against the raw AsyncLLM and, when it starts under this vLLM build, vLLM's
own OpenAI server (`python -m vllm.entrypoints.openai.api_server`), one after another in one run (one engine at a
time: they would share the same cores).

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench http --concurrency 1 32 --max-tokens 128

Each request is the bench's usual prompt, greedy, max_tokens with ignore_eos, streamed. The HTTP clients run in a
child process at niceness 10 (in production they are on other machines: they must not take the server's CPU).
Per path and concurrency it prints TTFT (request sent -> first event with text) p50/p90, inter-token latency
p50 (a stream's decode time per token after the first), tokens/s over the wall time, and SSE events (or, raw,
engine outputs) per token: vLLM yields at most one output per token, so events/token <= 1 means no more than
one event per engine output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.common import job_input, percentile, straight_on_vllm
from config.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
CLIENT_NICENESS = 10
START_TIMEOUT_S = 900
WARM_UP_REQUESTS = 4


@dataclass
class StreamTiming:
    ttft_s: float
    tokens: int
    decode_s: float
    events: int  # SSE events with text (raw: engine outputs)


@dataclass
class HttpResult:
    path: str  # "worker-http", "raw", "vllm-serve"
    concurrency: int
    requests: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    itl_p50_ms: float
    tokens_per_s: float
    events_per_token: float


def summarize(path: str, concurrency: int, timings: list[StreamTiming], wall_s: float) -> HttpResult:
    ttfts = [t.ttft_s * 1000 for t in timings]
    itls = [t.decode_s / (t.tokens - 1) * 1000 for t in timings if t.tokens > 1]
    tokens = sum(t.tokens for t in timings)
    return HttpResult(
        path, concurrency, len(timings), round(percentile(ttfts, 50), 2), round(percentile(ttfts, 90), 2),
        round(statistics.median(itls), 3) if itls else 0.0, round(tokens / wall_s, 1),
        round(sum(t.events for t in timings) / tokens, 3) if tokens else 0.0,
    )


# --- the HTTP clients (a child process) ----------------------------------------------------------------------


async def one_stream(client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int) -> StreamTiming:
    request = job_input(i, max_tokens)
    body = {"model": model, "prompt": request["prompt"], **request["sampling_params"], "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = first_event = None
    events = tokens = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if not chunk.get("choices"):
                continue
            first_event = first_event or now
            if chunk["choices"][0].get("text"):
                first = first or now  # time to first *text*, as for the raw engine
            events += 1
            last = now
    first = first or first_event
    return StreamTiming(first - started, tokens, last - first, events)


async def client_load(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> tuple[list, float]:
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def one(i: int) -> StreamTiming:
            async with semaphore:
                return await one_stream(client, url, model, i, max_tokens)

        await asyncio.gather(*(one(i) for i in range(min(WARM_UP_REQUESTS, requests))))
        started = time.perf_counter()
        timings = await asyncio.gather(*(one(i) for i in range(requests)))
        return [asdict(t) for t in timings], time.perf_counter() - started


def client_process(conn) -> None:
    os.nice(CLIENT_NICENESS)
    while (task := conn.recv()) is not None:
        conn.send(asyncio.run(client_load(*task)))


class Clients:
    """The HTTP clients, in a spawned child at low priority."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=client_process, args=(child,), name="bench-http-clients", daemon=True)
        self._process.start()

    def run(self, url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> tuple[list[StreamTiming], float]:
        self._conn.send((url, model, concurrency, requests, max_tokens))
        timings, wall = self._conn.recv()
        return [StreamTiming(**t) for t in timings], wall

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(30)


# --- the servers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, path: str, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def start_server(path: str, port: int, max_concurrency: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if path == "worker-http":
        env.update(ENDPOINT_TYPE="load_balancer", PORT=str(port), MAX_CONCURRENCY=str(max_concurrency),
                   RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true")
        command = [sys.executable, "handler.py"]
    else:
        settings = load_settings()
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", settings.model_name,
                   "--port", str(port), "--host", "127.0.0.1", "--served-model-name", settings.served_name]
        if settings.enforce_eager:
            command.append("--enforce-eager")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_server(path: str, clients: Clients, concurrencies: list[int], requests: int, max_tokens: int) -> list[HttpResult]:
    port = free_port()
    process = start_server(path, port, max(concurrencies))
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_ready(url, "/ping" if path == "worker-http" else "/health", process):
            print(f"{path}: the server did not start (exit {process.poll()}); no rows for it", file=sys.stderr)
            return []
        model = load_settings().served_name
        return [summarize(path, c, *clients.run(url, model, c, max(c, requests), max_tokens)) for c in concurrencies]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()


async def bench_raw(concurrencies: list[int], requests: int, max_tokens: int) -> list[HttpResult]:
    from worker.engine.handle import EngineHandle

    handle = EngineHandle(load_settings())
    engine = await handle.get()
    tokenizer = engine.get_tokenizer()

    async def load(concurrency: int, count: int) -> tuple[list[StreamTiming], float]:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> StreamTiming:
            async with semaphore:
                t = await straight_on_vllm(engine, tokenizer, i, max_tokens)
                return StreamTiming(t.ttft_s, t.tokens, t.decode_s, t.chunks)

        started = time.perf_counter()
        timings = await asyncio.gather(*(one(i) for i in range(count)))
        return list(timings), time.perf_counter() - started

    try:
        await load(2, WARM_UP_REQUESTS)
        return [summarize("raw", c, *(await load(c, max(c, requests)))) for c in concurrencies]
    finally:
        handle.shutdown()


def render_table(results: list[HttpResult], max_tokens: int) -> str:
    lines = [
        f"max_tokens={max_tokens} per request (ignore_eos), /v1/completions streamed; 'raw' = AsyncLLM.generate in-process",
        "",
        "| conc | path | TTFT p50 ms | TTFT p90 ms | ITL p50 ms | tok/s | events/token | tok/s vs raw | +TTFT p50 ms |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    raw = {r.concurrency: r for r in results if r.path == "raw"}
    for r in sorted(results, key=lambda r: (r.concurrency, ["raw", "worker-http", "vllm-serve"].index(r.path))):
        base = raw.get(r.concurrency)
        ratio = f"{r.tokens_per_s / base.tokens_per_s:.3f}" if base and r.path != "raw" else ""
        added = f"{r.ttft_p50_ms - base.ttft_p50_ms:+.2f}" if base and r.path != "raw" else ""
        lines.append(f"| {r.concurrency} | {r.path} | {r.ttft_p50_ms:.2f} | {r.ttft_p90_ms:.2f} | {r.itl_p50_ms:.3f} | "
                     f"{r.tokens_per_s:.1f} | {r.events_per_token:.3f} | {ratio} | {added} |")
    return "\n".join(lines)


def run_http_bench(concurrencies: list[int], requests: int, max_tokens: int, vllm_serve: bool = True) -> tuple[str, list[dict]]:
    clients = Clients()
    try:
        results = bench_server("worker-http", clients, concurrencies, requests, max_tokens)
        results += asyncio.run(bench_raw(concurrencies, requests, max_tokens))
        if vllm_serve:
            results += bench_server("vllm-serve", clients, concurrencies, requests, max_tokens)
    finally:
        clients.close()
    return render_table(results, max_tokens), [asdict(r) for r in results]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=32, help="requests per concurrency level (at least the concurrency)")
    parser.add_argument("--no-vllm-serve", action="store_true", help="leave out vLLM's own OpenAI server")


def run(args: argparse.Namespace) -> dict:
    table, rows = run_http_bench(args.concurrency, args.jobs, args.max_tokens, vllm_serve=not args.no_vllm_serve)
    print(table)
    return {"max_tokens": args.max_tokens, "http_results": rows}
