"""`python -m bench generate`: the worker against vLLM itself.

For each tensor-parallel size it builds one engine (the worker's own start-up path) and, for each
concurrency, runs the same streamed load twice: through the worker's handler (as the runpod SDK calls
it, minus the HTTP posts) and straight on vLLM's engine. It prints one table (modelled on the
tensor-parallelism guide's throughput table) and, with --json, writes the numbers for tracking.

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench generate --tp 1 2 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import asdict, dataclass

from bench.common import JobTiming, job_input, percentile, run_load, straight_on_vllm
from config.settings import load_settings


@dataclass
class LoadResult:
    path: str  # "worker" or "vllm"
    tp: int
    concurrency: int
    jobs: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    tokens_per_s_per_stream: float
    tokens_per_s_aggregate: float
    chunks_per_job: float
    decode_s_mean: float  # first token to last, per stream: what bounds its chunk count
    wall_s: float


def summarize(path: str, tp: int, concurrency: int, timings: list[JobTiming], wall_s: float) -> LoadResult:
    per_stream = [t.tokens / t.decode_s for t in timings if t.decode_s > 0]
    return LoadResult(
        path=path,
        tp=tp,
        concurrency=concurrency,
        jobs=len(timings),
        ttft_p50_ms=round(percentile([t.ttft_s for t in timings], 50) * 1000, 2),
        ttft_p95_ms=round(percentile([t.ttft_s for t in timings], 95) * 1000, 2),
        tokens_per_s_per_stream=round(statistics.mean(per_stream), 1) if per_stream else 0.0,
        tokens_per_s_aggregate=round(sum(t.tokens for t in timings) / wall_s, 1),
        chunks_per_job=round(statistics.mean(t.chunks for t in timings), 1),
        decode_s_mean=round(statistics.mean(t.decode_s for t in timings), 3),
        wall_s=round(wall_s, 2),
    )


async def through_worker(handler, i: int, max_tokens: int) -> JobTiming:
    started = time.perf_counter()
    first = last = None
    chunks = 0
    tokens = 0
    async for chunk in handler({"id": f"bench-{i}", "input": job_input(i, max_tokens)}):
        now = time.perf_counter()
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
        chunks += 1
        first = first or now
        last = now
        if "usage" in chunk:
            tokens = chunk["usage"]["completion_tokens"]
    return JobTiming(first - started, tokens, last - first, chunks)


async def bench_tp(tp: int, concurrencies: list[int], max_tokens: int, jobs_per_level: int, rounds: int) -> tuple[float, list[LoadResult]]:
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    settings = load_settings(tensor_parallel_size=tp, max_concurrency=max(concurrencies))
    handle = EngineHandle(settings)
    engine = await handle.get()
    handler = JobHandler(settings, handle).handle
    tokenizer = engine.get_tokenizer()
    results = []
    try:
        await run_load(lambda i: through_worker(handler, i, 16), 2, 4)  # warm-up
        for concurrency in concurrencies:
            jobs = max(concurrency, jobs_per_level)
            for path in ("worker", "vllm") * rounds:
                if path == "worker":
                    timings, wall = await run_load(lambda i: through_worker(handler, i, max_tokens), concurrency, jobs)
                else:
                    timings, wall = await run_load(lambda i: straight_on_vllm(engine, tokenizer, i, max_tokens), concurrency, jobs)
                results.append(summarize(path, tp, concurrency, timings, wall))
    finally:
        handle.shutdown()
    return handle.load_seconds or 0.0, merge_rounds(results)


def merge_rounds(results: list[LoadResult]) -> list[LoadResult]:
    """Alternating rounds smooth out drift on a shared machine: keep the median of each metric."""
    merged = []
    keys = sorted({(r.tp, r.concurrency, r.path) for r in results}, key=lambda k: (k[0], k[1], k[2] != "worker"))
    for tp, concurrency, path in keys:
        group = [r for r in results if (r.tp, r.concurrency, r.path) == (tp, concurrency, path)]
        row = asdict(group[0])
        for field in ("ttft_p50_ms", "ttft_p95_ms", "tokens_per_s_per_stream", "tokens_per_s_aggregate", "chunks_per_job", "wall_s"):
            row[field] = round(statistics.median(getattr(r, field) for r in group), 2)
        merged.append(LoadResult(**row))
    return merged


def render_table(load_times: dict[int, float], results: list[LoadResult], max_tokens: int) -> str:
    lines = [
        f"max_tokens={max_tokens} per job (ignore_eos), streamed; 'worker' = handler path as the SDK calls it, 'vllm' = AsyncLLM.generate",
        "",
        "| TP | load s | conc | path   | TTFT p50 ms | TTFT p95 ms | tok/s/stream | tok/s total | chunks/job | worker/vllm tok/s | +TTFT p50 ms |",
        "|---:|-------:|-----:|:-------|------------:|------------:|-------------:|------------:|-----------:|------------------:|-------------:|",
    ]
    by_key = {(r.tp, r.concurrency, r.path): r for r in results}
    for r in results:
        raw = by_key.get((r.tp, r.concurrency, "vllm"))
        ratio = added = ""
        if r.path == "worker" and raw is not None:
            ratio = f"{r.tokens_per_s_aggregate / raw.tokens_per_s_aggregate:.3f}"
            added = f"{r.ttft_p50_ms - raw.ttft_p50_ms:+.2f}"
        lines.append(
            f"| {r.tp} | {load_times[r.tp]:.1f} | {r.concurrency} | {r.path:<6} | {r.ttft_p50_ms:.2f} | {r.ttft_p95_ms:.2f} | "
            f"{r.tokens_per_s_per_stream:.1f} | {r.tokens_per_s_aggregate:.1f} | {r.chunks_per_job:.1f} | {ratio} | {added} |"
        )
    return "\n".join(lines)


def bind_cpu_threads(tp: int) -> None:
    """On vLLM's CPU backend each TP rank needs its own cores (VLLM_CPU_OMP_THREADS_BIND)."""
    from worker.parallel.layout import visible_gpus

    if visible_gpus().count == 0 and tp > 1:
        cores = os.cpu_count() or tp
        per_rank = max(1, cores // tp)
        ranges = [f"{r * per_rank}-{r * per_rank + per_rank - 1}" if per_rank > 1 else str(r) for r in range(tp)]
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(ranges)
    else:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tp", type=int, nargs="+", default=[1], help="tensor-parallel sizes to run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=32, help="jobs per concurrency level (at least the concurrency)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating worker/vllm rounds; medians are reported")


def run(args: argparse.Namespace) -> dict:
    load_times: dict[int, float] = {}
    results: list[LoadResult] = []
    for tp in args.tp:
        bind_cpu_threads(tp)
        load_s, rows = asyncio.run(bench_tp(tp, args.concurrency, args.max_tokens, args.jobs, args.rounds))
        load_times[tp] = load_s
        results.extend(rows)
    print(render_table(load_times, results, args.max_tokens))
    return {"max_tokens": args.max_tokens, "load_seconds": load_times, "results": [asdict(r) for r in results]}
