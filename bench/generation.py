"""Benchmark the worker against vLLM itself: `python -m bench`.

For each tensor-parallel size it builds one engine (the worker's own start-up path) and, for each
concurrency, runs the same streamed load twice: through the worker's handler (as the runpod SDK calls
it, minus the HTTP posts) and straight on vLLM's engine. It prints one table (modelled on the
tensor-parallelism guide's throughput table) and, with --json, writes the numbers for tracking.

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench --tp 1 2 --concurrency 1 8 32

`--soak N` runs N short jobs instead and prints the RSS of each process (the worker's main process,
vLLM's engine core and model worker) every --soak-every jobs, so memory growth shows and can be tracked:

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench --soak 3000

With --load embed, MODEL_NAME is an embedding model and the load is native embed jobs (one text each)
through the handler against the same texts tokenized and encoded straight on vLLM (AsyncLLM.encode):

    MODEL_NAME=.models/tiny-embedding ENFORCE_EAGER=true python -m bench --load embed --texts 256 --concurrency 32

With --sdk it measures time to first token through the runpod SDK's real job loop instead
(bench/sdk.py):

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench --sdk --concurrency 1 8 --max-tokens 16

With --cold-start it times engine builds of fresh containers sharing one network volume
(bench/cold_start.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass

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
    wall_s: float


@dataclass
class JobTiming:
    ttft_s: float
    tokens: int
    decode_s: float
    chunks: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


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
        wall_s=round(wall_s, 2),
    )


def job_input(i: int, max_tokens: int) -> dict:
    return {
        "prompt": f"Benchmark request {i}: explain tensor parallelism.",
        "sampling_params": {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
        "stream": True,
    }


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


async def straight_on_vllm(engine, tokenizer, i: int, max_tokens: int) -> JobTiming:
    from worker.jobs.request import engine_prompt
    from worker.vllm_api import RequestOutputKind, SamplingParams

    started = time.perf_counter()
    request = job_input(i, max_tokens)
    # The same work the worker does before generate (tokenize), so the comparison is like for like.
    prompt_ids = tokenizer.encode(request["prompt"])
    params = SamplingParams(**request["sampling_params"], output_kind=RequestOutputKind.DELTA)
    first = last = None
    chunks = tokens = 0
    first_output = None
    async for output in engine.generate(engine_prompt(engine, prompt_ids), params, request_id=uuid.uuid4().hex):
        now = time.perf_counter()
        first_output = first_output or now
        # Time to first *text*, as for the worker: a token that ends inside a UTF-8 character has none.
        if first is None and output.outputs[0].text:
            first = now
        last = now
        chunks += 1
        tokens += len(output.outputs[0].token_ids)
    first = first or first_output  # no text at all (a short run of a random model): its first output
    return JobTiming(first - started, tokens, last - first, chunks)


async def run_load(make_job, concurrency: int, jobs: int) -> tuple[list[JobTiming], float]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> JobTiming:
        async with semaphore:
            return await make_job(i)

    started = time.perf_counter()
    timings = await asyncio.gather(*(one(i) for i in range(jobs)))
    return list(timings), time.perf_counter() - started


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


def process_rss_mb() -> dict[str, float]:
    """RSS of the worker's main process and of each process vLLM started (engine core, model workers), in MB."""
    import psutil

    main = psutil.Process()
    rss = {"main": main.memory_info().rss / 2**20}
    for child in main.children(recursive=True):
        try:
            name = child.name()
            if "resource_tracker" in " ".join(child.cmdline()):
                continue  # multiprocessing's bookkeeping, not vLLM
            rss[name] = rss.get(name, 0.0) + child.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return rss


def soak_job_input(i: int) -> dict:
    """Short jobs of every kind the worker serves: plain and chat, whole and streamed."""
    job = {"sampling_params": {"max_tokens": 8, "temperature": 0.8, "seed": i}, "stream": i % 2 == 0}
    if i % 3 == 0:
        job["messages"] = [{"role": "user", "content": f"Soak job {i}: say something."}]
    else:
        job["prompt"] = f"Soak job {i}: the quick brown fox"
    return job


async def soak(jobs: int, concurrency: int, every: int) -> list[tuple[int, float, dict[str, float]]]:
    """Run `jobs` short jobs through the handler; sample every process's RSS every `every` jobs."""
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    settings = load_settings(max_concurrency=concurrency)
    handle = EngineHandle(settings)
    handler = JobHandler(settings, handle).handle
    semaphore = asyncio.Semaphore(concurrency)
    samples: list[tuple[int, float, dict[str, float]]] = []
    done = 0
    started = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal done
        async with semaphore:
            async for chunk in handler({"id": f"soak-{i}", "input": soak_job_input(i)}):
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
        done += 1
        if done % every == 0 or done == jobs:
            samples.append((done, time.perf_counter() - started, process_rss_mb()))
            print(render_soak_row(samples), flush=True)

    try:
        await handle.get()
        samples.append((0, 0.0, process_rss_mb()))
        print(render_soak_header(samples[0][2]), flush=True)
        print(render_soak_row(samples), flush=True)
        await asyncio.gather(*(one(i) for i in range(jobs)))
    finally:
        handle.shutdown()
    return samples


def render_soak_header(first: dict[str, float]) -> str:
    names = " | ".join(f"{name} RSS MB (change)" for name in first)
    return f"| jobs | s | {names} |\n|---:|---:|" + "---:|" * len(first)


def render_soak_row(samples: list[tuple[int, float, dict[str, float]]]) -> str:
    first = samples[0][2]
    jobs, elapsed, rss = samples[-1]
    cells = " | ".join(f"{rss.get(name, 0.0):.0f} ({rss.get(name, 0.0) - start:+.0f})" for name, start in first.items())
    return f"| {jobs} | {elapsed:.0f} | {cells} |"


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


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the worker's handler path against vLLM's engine.")
    parser.add_argument("--tp", type=int, nargs="+", default=[1], help="tensor-parallel sizes to run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=32, help="jobs per concurrency level (at least the concurrency)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating worker/vllm rounds; medians are reported")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--soak", type=int, metavar="N", help="instead: run N short jobs and print each process's RSS")
    parser.add_argument("--soak-every", type=int, default=250, help="jobs between RSS samples in --soak")
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--load", choices=["generate", "embed"], default="generate",
                        help="embed: MODEL_NAME is an embedding model; native embed jobs vs AsyncLLM.encode")
    parser.add_argument("--texts", type=int, default=256, help="embed load: texts (one per job) per round")
    parser.add_argument(
        "--sdk", action="store_true", help="time submit -> first stream POST through the runpod SDK's job loop (TP 1)"
    )
    parser.add_argument(
        "--job-loop", nargs="+", choices=["event", "stock"], default=["event"],
        help="with --sdk: the worker's event-driven job loop, the SDK's own (100 ms poll), or both",
    )
    parser.add_argument(
        "--max-concurrency", type=int, metavar="N",
        help="with --sdk: the worker's MAX_CONCURRENCY (default: room for every client's job); below --concurrency "
        "the worker is full and each next job waits for a slot",
    )
    parser.add_argument(
        "--cold-start", type=int, nargs="?", const=2, metavar="STARTS",
        help="time STARTS (default 2) compiled cold starts of fresh containers sharing a volume, then one with the cache off",
    )
    parser.add_argument("--cold-start-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", action="store_true", help="weight-load time by storage and loader (bench/weights.py)")
    parser.add_argument("--weights-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.sdk:  # --sdk must point the SDK at its stand-in before anything imports runpod; it calls this then
        from worker.transports.queue.job_loop import use_uvloop

        use_uvloop()  # the loop handler.py runs the worker on; vLLM's raw side runs on it too, as under `vllm serve`

    if args.cold_start_child:
        from bench.cold_start import child_main

        return child_main()
    if args.weights or args.weights_child:
        from bench.weights import child_main as weights_child, run_weights_bench

        if args.weights_child:
            return weights_child()
        table, rows = run_weights_bench()
        print(table)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"weights": rows}, out, indent=2)
        return
    if args.cold_start:
        from bench.cold_start import run_cold_start_bench

        table, rows = run_cold_start_bench(args.cold_start)
        print(table)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"cold_starts": rows}, out, indent=2)
        return
    if args.sdk:
        from bench.sdk import run_sdk_bench

        table, rows = run_sdk_bench(
            args.job_loop, args.concurrency, args.max_tokens, args.jobs, args.rounds, args.max_concurrency
        )
        print(table)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"max_tokens": args.max_tokens, "sdk_results": rows}, out, indent=2)
        return
    if args.load == "embed":
        concurrency = max(args.concurrency)
        load_s, rows = asyncio.run(bench_embeddings(concurrency, args.texts, args.rounds))
        print(render_embed_table(load_s, rows))
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"load": "embed", "load_seconds": load_s, "results": [asdict(r) for r in rows]}, out, indent=2)
        return

    if args.soak:
        samples = asyncio.run(soak(args.soak, args.soak_concurrency, args.soak_every))
        if args.json:
            with open(args.json, "w") as out:
                json.dump([{"jobs": n, "seconds": s, "rss_mb": rss} for n, s, rss in samples], out, indent=2)
        return

    load_times: dict[int, float] = {}
    results: list[LoadResult] = []
    for tp in args.tp:
        bind_cpu_threads(tp)
        load_s, rows = asyncio.run(bench_tp(tp, args.concurrency, args.max_tokens, args.jobs, args.rounds))
        load_times[tp] = load_s
        results.extend(rows)

    print(render_table(load_times, results, args.max_tokens))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"max_tokens": args.max_tokens, "load_seconds": load_times, "results": [asdict(r) for r in results]}, out, indent=2)


if __name__ == "__main__":
    main()
