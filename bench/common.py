"""What the benches share: a job's timing, percentiles, the generation job they send, and the same request
sent straight to vLLM's AsyncLLM (the baseline every bench compares the worker with)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass


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


def job_input(i: int, max_tokens: int) -> dict:
    return {
        "prompt": f"Benchmark request {i}: explain tensor parallelism.",
        "sampling_params": {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
        "stream": True,
    }


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
