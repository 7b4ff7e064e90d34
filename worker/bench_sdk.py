"""`python -m worker.bench --sdk`: time to first token through the runpod SDK's real job loop.

It starts the RunPod API stand-in (worker/runpod_standin.py) on 127.0.0.1, points the SDK at it, and runs
the worker's handler under the SDK's JobScaler in this process, on one engine: the event-driven loop that
handler.py installs and, with `--job-loop stock`, the SDK's own. For each concurrency it keeps that many
streamed jobs in flight, alternating with the same load straight on vLLM, and prints submit -> first
stream POST p50/p90 beside the raw engine's TTFT, and where the time went:

  take   submit -> the worker's job-take call answered (the stand-in answers a waiting take at once)
  start  taken -> the handler called (the SDK's queue and job loop: the 100 ms poll lived here)
  first  handler called -> its first chunk (engine TTFT plus the worker's request building)
  post   first chunk -> the stand-in received the first stream POST (the SDK's HTTP post)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import asdict, dataclass

from config.settings import load_settings
from worker.bench import job_input, percentile, straight_on_vllm
from worker.runpod_standin import FakeRunPod

STAGES = ("take", "start", "first", "post")


@dataclass
class SdkResult:
    job_loop: str  # "event" (the worker's) or "stock" (the SDK's own)
    concurrency: int
    jobs: int
    to_first_post_p50_ms: float
    to_first_post_p90_ms: float
    raw_ttft_p50_ms: float
    raw_ttft_p90_ms: float
    added_p50_ms: float
    added_p90_ms: float
    stage_p50_ms: dict[str, float]


def point_sdk_at(fake: FakeRunPod) -> None:
    """The SDK reads its URLs when first imported: set them before anything imports runpod."""
    import sys

    if "runpod" in sys.modules:
        raise RuntimeError("the runpod SDK was imported before the bench could point it at the stand-in")
    os.environ.update(fake.env())
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")  # as handler.py runs it


class SdkLoad:
    """The worker's handler under one SDK job loop, fed by the stand-in."""

    def __init__(self, fake: FakeRunPod, handler, concurrency_modifier, job_loop: str) -> None:
        from worker.serving.job_loop import SDK_JOB_SCALER, EventDrivenJobScaler

        self.fake = fake
        self.handler_started: dict[str, float] = {}
        self.first_chunk: dict[str, float] = {}
        self._done: dict[str, asyncio.Future] = {}
        scaler_class = EventDrivenJobScaler if job_loop == "event" else SDK_JOB_SCALER
        self.scaler = scaler_class(
            {"handler": self._timed(handler), "concurrency_modifier": concurrency_modifier, "return_aggregate_stream": True}
        )
        self._task: asyncio.Task | None = None

    def _timed(self, handler):
        async def timed_handler(job):  # an async generator, so the SDK streams it as it does the worker's
            self.handler_started[job["id"]] = time.perf_counter()
            async for chunk in handler(job):
                self.first_chunk.setdefault(job["id"], time.perf_counter())
                yield chunk

        return timed_handler

    async def __aenter__(self) -> SdkLoad:
        loop = asyncio.get_running_loop()

        def result_arrived(job_id: str) -> None:
            future = self._done.get(job_id)
            if future is not None:
                loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))

        self.fake.on_result = result_arrived
        self._task = asyncio.create_task(self.scaler.run())
        return self

    async def __aexit__(self, *exc) -> None:
        self.fake.on_result = None
        # Every job has its result. Stop the loops (kill_worker) and cancel their long polls, then wait for
        # them ALL to end: Python 3.11's wait_for can swallow a cancel, and a job-take still open would take
        # the next loop's first job and never run it. The stopped flag ends each loop after its poll.
        self.scaler.kill_worker()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def run_job(self, job_id: str, payload: dict) -> None:
        self._done[job_id] = asyncio.get_running_loop().create_future()
        self.fake.submit(job_id, payload)
        try:
            await self._done[job_id]
        finally:
            del self._done[job_id]
        result = self.fake.results[job_id]
        if "error" in result:
            raise RuntimeError(f"job {job_id} failed: {result['error']}")

    def stages_ms(self, job_id: str) -> dict[str, float]:
        fake = self.fake
        times = [fake.submitted_at[job_id], fake.taken[job_id], self.handler_started[job_id], self.first_chunk[job_id], fake.first_stream_at[job_id]]
        return {stage: (end - start) * 1000 for stage, (start, end) in zip(STAGES, zip(times, times[1:]), strict=True)}

    def to_first_post_ms(self, job_id: str) -> float:
        return (self.fake.first_stream_at[job_id] - self.fake.submitted_at[job_id]) * 1000


async def closed_loop(concurrency: int, jobs: int, run_one) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await run_one(i)

    await asyncio.gather(*(one(i) for i in range(jobs)))


async def bench_sdk(fake: FakeRunPod, job_loops: list[str], concurrencies: list[int], max_tokens: int, jobs: int, rounds: int) -> list[SdkResult]:
    from worker.serving.engine import EngineHandle
    from worker.serving.handler import JobHandler

    settings = load_settings(max_concurrency=max(64, *concurrencies))
    handle = EngineHandle(settings)
    engine = await handle.get()
    tokenizer = engine.get_tokenizer()
    handler = JobHandler(settings, handle)
    results = []
    try:
        for job_loop in job_loops:
            async with SdkLoad(fake, handler.handle, handler.concurrency, job_loop) as sdk:
                for i in range(4):  # warm-up: the first jobs through a fresh loop and HTTP session
                    await sdk.run_job(f"{job_loop}-warm-{i}", job_input(i, 8))
                for concurrency in concurrencies:
                    sdk_ids: list[str] = []
                    raw_ttfts: list[float] = []
                    for r in range(rounds):
                        ids = [f"{job_loop}-c{concurrency}-r{r}-{i}" for i in range(max(jobs, concurrency))]
                        await closed_loop(concurrency, len(ids), lambda i, ids=ids: sdk.run_job(ids[i], job_input(i, max_tokens)))
                        sdk_ids += ids

                        async def raw(i: int) -> None:
                            raw_ttfts.append((await straight_on_vllm(engine, tokenizer, i, max_tokens)).ttft_s * 1000)

                        await closed_loop(concurrency, len(ids), raw)
                    results.append(summarize(job_loop, concurrency, sdk, sdk_ids, raw_ttfts))
    finally:
        handle.shutdown()
    return results


def summarize(job_loop: str, concurrency: int, sdk: SdkLoad, ids: list[str], raw_ttfts: list[float]) -> SdkResult:
    to_post = [sdk.to_first_post_ms(job_id) for job_id in ids]
    stages = [sdk.stages_ms(job_id) for job_id in ids]
    p50, p90 = percentile(to_post, 50), percentile(to_post, 90)
    raw50, raw90 = percentile(raw_ttfts, 50), percentile(raw_ttfts, 90)
    return SdkResult(
        job_loop=job_loop,
        concurrency=concurrency,
        jobs=len(ids),
        to_first_post_p50_ms=round(p50, 2),
        to_first_post_p90_ms=round(p90, 2),
        raw_ttft_p50_ms=round(raw50, 2),
        raw_ttft_p90_ms=round(raw90, 2),
        added_p50_ms=round(p50 - raw50, 2),
        added_p90_ms=round(p90 - raw90, 2),
        stage_p50_ms={stage: round(statistics.median(s[stage] for s in stages), 2) for stage in STAGES},
    )


def render_sdk_table(results: list[SdkResult], max_tokens: int, load_before: tuple, load_after: tuple) -> str:
    lines = [
        f"max_tokens={max_tokens} per job, streamed, through the runpod SDK's job loop against the RunPod API stand-in "
        f"on 127.0.0.1; load average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min)",
        "",
        "| job loop | conc | jobs | submit->1st POST p50 ms | p90 ms | raw TTFT p50 ms | p90 ms | added p50 ms | added p90 ms "
        "| take p50 | start p50 | first p50 | post p50 |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        s = r.stage_p50_ms
        lines.append(
            f"| {r.job_loop} | {r.concurrency} | {r.jobs} | {r.to_first_post_p50_ms:.2f} | {r.to_first_post_p90_ms:.2f} | "
            f"{r.raw_ttft_p50_ms:.2f} | {r.raw_ttft_p90_ms:.2f} | {r.added_p50_ms:+.2f} | {r.added_p90_ms:+.2f} | "
            f"{s['take']:.2f} | {s['start']:.2f} | {s['first']:.2f} | {s['post']:.2f} |"
        )
    return "\n".join(lines)


def run_sdk_bench(job_loops: list[str], concurrencies: list[int], max_tokens: int, jobs: int, rounds: int) -> tuple[str, list[dict]]:
    fake = FakeRunPod().start()
    try:
        point_sdk_at(fake)
        load_before = os.getloadavg()
        results = asyncio.run(bench_sdk(fake, job_loops, concurrencies, max_tokens, jobs, rounds))
        load_after = os.getloadavg()
    finally:
        fake.stop()
    return render_sdk_table(results, max_tokens, load_before, load_after), [asdict(r) for r in results]
