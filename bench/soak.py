"""`python -m bench soak --jobs N`: N short jobs (plain and chat, whole and streamed) through the handler, and the
RSS of each process (the worker's main process, vLLM's engine core and model worker) every --every jobs, so
memory growth shows and can be tracked.

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench soak --jobs 3000"""

from __future__ import annotations

import argparse
import asyncio
import time

from config.settings import load_settings


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=3000, help="short jobs to run")
    parser.add_argument("--every", type=int, default=250, help="jobs between RSS samples")
    parser.add_argument("--concurrency", type=int, default=8)


def run(args: argparse.Namespace) -> list:
    samples = asyncio.run(soak(args.jobs, args.concurrency, args.every))
    return [{"jobs": n, "seconds": s, "rss_mb": rss} for n, s, rss in samples]
