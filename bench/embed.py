"""`python -m bench embed`: MODEL_NAME is an embedding model; native embed jobs (one text each) through the
handler against the same texts tokenized and encoded straight on vLLM (AsyncLLM.encode).

    MODEL_NAME=.models/tiny-embedding ENFORCE_EAGER=true python -m bench embed --texts 256 --concurrency 32"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import asdict, dataclass

from bench.common import percentile, run_load
from config.settings import load_settings


@dataclass
class EmbedResult:
    path: str  # "worker" or "vllm"
    concurrency: int
    texts: int
    latency_p50_ms: float
    latency_p95_ms: float
    texts_per_s: float
    wall_s: float
    # worker rows: the median over rounds of (this worker round / the vllm round right after it)
    paired_ratio: float | None = None


def embed_text(i: int) -> str:
    return f"Benchmark text {i}: tensor parallelism splits every weight matrix across the GPUs of a node."


async def embed_through_worker(handler, i: int) -> float:
    started = time.perf_counter()
    async for chunk in handler({"id": f"bench-embed-{i}", "input": {"embed": embed_text(i)}}):
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
    return time.perf_counter() - started


async def embed_straight_on_vllm(engine, tokenizer, i: int) -> float:
    from worker.jobs.request import engine_prompt
    from worker.vllm_api import PoolingParams

    started = time.perf_counter()
    # The same work the worker's path does before encode (tokenize), so the comparison is like for like.
    params = PoolingParams(task="embed")
    params.verify(engine.model_config)
    prompt = engine_prompt(engine, tokenizer.encode(embed_text(i)))
    async for _output in engine.encode(prompt, params, request_id=uuid.uuid4().hex):
        pass
    return time.perf_counter() - started


async def bench_embeddings(concurrency: int, texts: int, rounds: int) -> tuple[float, list[EmbedResult]]:
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    settings = load_settings(max_concurrency=concurrency)
    handle = EngineHandle(settings)
    engine = await handle.get()
    handler = JobHandler(settings, handle).handle
    tokenizer = engine.get_tokenizer()
    results: dict[str, list[EmbedResult]] = {"worker": [], "vllm": []}
    try:
        await run_load(lambda i: embed_through_worker(handler, i), 4, 8)  # warm-up (builds vLLM's app state)
        for path in ("worker", "vllm") * rounds:
            make = (lambda i: embed_through_worker(handler, i)) if path == "worker" else (
                lambda i: embed_straight_on_vllm(engine, tokenizer, i))
            latencies, wall = await run_load(make, concurrency, texts)
            results[path].append(EmbedResult(
                path, concurrency, texts,
                round(percentile(latencies, 50) * 1000, 2), round(percentile(latencies, 95) * 1000, 2),
                round(texts / wall, 1), round(wall, 2),
            ))
    finally:
        handle.shutdown()
    merged = []
    for path, group in results.items():  # medians over the alternating rounds, as for generation
        row = asdict(group[0])
        for field in ("latency_p50_ms", "latency_p95_ms", "texts_per_s", "wall_s"):
            row[field] = round(statistics.median(getattr(r, field) for r in group), 2)
        if path == "worker":  # pairs share the machine's state of the moment, which medians of rounds do not
            pairs = zip(group, results["vllm"], strict=True)
            row["paired_ratio"] = round(statistics.median(w.texts_per_s / v.texts_per_s for w, v in pairs), 3)
        merged.append(EmbedResult(**row))
    return handle.load_seconds or 0.0, merged


def render_embed_table(load_s: float, results: list[EmbedResult]) -> str:
    lines = [
        "one text per job; 'worker' = native embed job through the handler (AsyncLLM.encode behind it), "
        "'vllm' = tokenize + AsyncLLM.encode",
        "",
        "| load s | texts | conc | path   | latency p50 ms | latency p95 ms | texts/s | worker/vllm texts/s | paired rounds p50 |",
        "|-------:|------:|-----:|:-------|---------------:|---------------:|--------:|--------------------:|------------------:|",
    ]
    raw = next(r for r in results if r.path == "vllm")
    for r in results:
        ratio = f"{r.texts_per_s / raw.texts_per_s:.3f}" if r.path == "worker" else ""
        paired = f"{r.paired_ratio:.3f}" if r.paired_ratio is not None else ""
        lines.append(
            f"| {load_s:.1f} | {r.texts} | {r.concurrency} | {r.path:<6} | {r.latency_p50_ms:.2f} | "
            f"{r.latency_p95_ms:.2f} | {r.texts_per_s:.1f} | {ratio} | {paired} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--texts", type=int, default=256, help="texts (one per job) per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating worker/vllm rounds; medians are reported")


def run(args: argparse.Namespace) -> dict:
    load_s, rows = asyncio.run(bench_embeddings(args.concurrency, args.texts, args.rounds))
    print(render_embed_table(load_s, rows))
    return {"load": "embed", "load_seconds": load_s, "results": [asdict(r) for r in rows]}
