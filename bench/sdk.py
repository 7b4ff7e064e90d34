"""`python -m bench sdk`: time to first token through the runpod SDK's real job loop.

It starts the RunPod API stand-in (devtools/runpod_standin.py) on 127.0.0.1, with the clients that submit the
jobs, in a process of its own at low priority (RunPod's API and its clients are not on the worker's machine:
they must take neither the worker process's GIL nor CPU the worker needs), points the SDK at it, and runs
the worker's handler under the SDK's JobScaler in this process, on one engine: the event-driven loop that
handler.py installs and, with `--job-loop stock`, the SDK's own. For each concurrency it keeps that many
streamed jobs in flight, alternating with the same load straight on vLLM, and prints submit -> first stream
POST p50/p90 beside the raw engine's TTFT, and where the time went:

  take    submit -> the worker's job-take call answered (the stand-in answers a waiting take at once; with
          `--max-concurrency` below the concurrency, this is also the job's wait for a free slot)
  start   taken -> the handler called (the SDK's queue and job loop: the 100 ms poll lived here)
  build   handler called -> vLLM's generate started (the worker's validation, tokenization, SamplingParams)
  engine  generate started -> its first output with text: vLLM's own TTFT for this very request
  post    that output -> the stand-in received the first stream POST (the worker's chunk, the SDK's HTTP post)

"added" is reported two ways: against the raw engine's TTFT, measured apart (the same load straight on vLLM at
the same concurrency); and per job, submit -> first POST minus that job's own `engine` time, which leaves out
vLLM's time whatever the batch and whatever slowed the engine. The README says how far apart they are.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import job_input, percentile, straight_on_vllm
from config.settings import load_settings

STAGES = ("take", "start", "build", "engine", "post")
JOB_TIMEOUT_S = 120.0
# RunPod's API and its clients are not on the worker's machine. Here they share its cores (2 in CI), where at
# 8 concurrent jobs the engine and the worker fill both: at this niceness the stand-in's process runs on what
# they leave. Its own delays still count: it takes every time the bench reports.
STANDIN_NICENESS = 10


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
    added_per_job_p50_ms: float
    added_per_job_p90_ms: float
    jobs_per_s: float  # through the SDK, over the rounds' wall time
    stage_p50_ms: dict[str, float]


class StandinProcess:
    """The RunPod API stand-in and the clients that submit jobs to it, in a child process.

    Times are time.perf_counter() values, which on Linux read CLOCK_MONOTONIC: one clock for every process,
    so the stand-in's submit/take/first-POST times and the worker's handler times subtract."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # nothing of this process (threads, engine) is copied
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=serve_jobs, args=(child_conn,), name="runpod-standin", daemon=True)

    def start(self) -> dict[str, str]:
        """Start it; the RUNPOD_* variables that point the SDK at it."""
        self._process.start()
        return self._conn.recv()

    def run(self, jobs: list[tuple[str, dict]], concurrency: int) -> dict[str, dict[str, Any]]:
        """Keep `concurrency` of `jobs` in flight until all have results: each job's times and result."""
        self._conn.send(("run", jobs, concurrency))
        return self._conn.recv()

    def stop(self) -> None:
        self._conn.send(("stop",))
        self._process.join(15)


def serve_jobs(conn) -> None:
    """The child: the stand-in, and one client thread per job in flight (submit, wait for the result, next)."""
    from devtools.runpod_standin import FakeRunPod

    os.nice(STANDIN_NICENESS)
    fake = FakeRunPod().start()
    result_arrived: dict[str, threading.Event] = {}
    fake.on_result = lambda job_id: result_arrived[job_id].set()
    conn.send(fake.env())
    while (command := conn.recv())[0] == "run":
        _, jobs, concurrency = command
        queue = iter(jobs)
        take_next = threading.Lock()

        def client() -> None:
            while True:
                with take_next:
                    job = next(queue, None)
                if job is None:
                    return
                result_arrived[job[0]] = threading.Event()
                fake.submit(*job)
                result_arrived[job[0]].wait(JOB_TIMEOUT_S)

        clients = [threading.Thread(target=client) for _ in range(concurrency)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        conn.send({
            job_id: {
                "submitted": fake.submitted_at[job_id],
                "taken": fake.taken.get(job_id),
                "first_post": fake.first_stream_at.get(job_id),
                "result": fake.results.get(job_id, {"error": f"no result in {JOB_TIMEOUT_S:g} s"}),
            }
            for job_id, _ in jobs
        })
    fake.stop()


def point_sdk_at(env: dict[str, str]) -> None:
    """The SDK reads its URLs when first imported: set them before anything imports runpod."""
    import sys

    if "runpod" in sys.modules:
        raise RuntimeError("the runpod SDK was imported before the bench could point it at the stand-in")
    os.environ.update(env)
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")  # as handler.py runs it


class SdkLoad:
    """The worker's handler under one SDK job loop, fed by the stand-in's process."""

    def __init__(self, standin: StandinProcess, handler, concurrency_modifier, job_loop: str) -> None:
        from worker.transports.queue.job_loop import SDK_JOB_SCALER, EventDrivenJobScaler

        self.standin = standin
        self.handler_started: dict[str, float] = {}
        self.engine_times = EngineTimes()
        self.times: dict[str, dict[str, Any]] = {}  # per job, from the stand-in
        scaler_class = EventDrivenJobScaler if job_loop == "event" else SDK_JOB_SCALER
        self.scaler = scaler_class(
            {"handler": self._timed(handler), "concurrency_modifier": concurrency_modifier, "return_aggregate_stream": True}
        )
        self._task: asyncio.Task | None = None

    def _timed(self, handler):
        async def timed_handler(job):  # an async generator, so the SDK streams it as it does the worker's
            self.handler_started[job["id"]] = time.perf_counter()
            async for chunk in handler(job):
                yield chunk

        return timed_handler

    async def __aenter__(self) -> SdkLoad:
        self._task = asyncio.create_task(self.scaler.run())
        return self

    async def __aexit__(self, *exc) -> None:
        # Every job has its result. Stop the loops (kill_worker) and cancel their long polls, then wait for
        # them ALL to end: Python 3.11's wait_for can swallow a cancel, and a job-take still open would take
        # the next loop's first job and never run it. The stopped flag ends each loop after its poll.
        self.scaler.kill_worker()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def run_jobs(self, jobs: list[tuple[str, dict]], concurrency: int) -> float:
        """Closed loop in the stand-in's process; this loop meanwhile serves them through the SDK. Its wall
        time in seconds."""
        started = time.perf_counter()
        times = await asyncio.to_thread(self.standin.run, jobs, concurrency)
        wall_s = time.perf_counter() - started
        failed = {job_id: t["result"]["error"] for job_id, t in times.items() if "error" in t["result"]}
        if failed:
            raise RuntimeError(f"{len(failed)} job(s) failed, e.g. {next(iter(failed.items()))}")
        self.times.update(times)
        return wall_s

    def stages_ms(self, job_id: str) -> dict[str, float]:
        t = self.times[job_id]
        generate_started, first_text = self.engine_times.by_job[job_id]
        times = [t["submitted"], t["taken"], self.handler_started[job_id], generate_started, first_text, t["first_post"]]
        return {stage: (end - start) * 1000 for stage, (start, end) in zip(STAGES, zip(times, times[1:]), strict=True)}

    def to_first_post_ms(self, job_id: str) -> float:
        return (self.times[job_id]["first_post"] - self.times[job_id]["submitted"]) * 1000


class EngineTimes:
    """When vLLM's generate started and gave its first text, per job: the engine's share of a job's TTFT,
    measured in that job. `watch(engine)` wraps the engine's generate (the bench's engine only)."""

    def __init__(self) -> None:
        self.by_job: dict[str, tuple[float, float]] = {}

    def watch(self, engine) -> None:
        vllm_generate = engine.generate

        async def timed_generate(prompt, params, request_id, *args, **kwargs):
            started = time.perf_counter()
            first_output = None
            job_id = request_id.rsplit("-", 1)[0]  # the worker's request id is "<job id>-<8 hex>" (serving/handler.py)
            async for output in vllm_generate(prompt, params, request_id, *args, **kwargs):
                first_output = first_output or time.perf_counter()
                # First *text*, as the raw TTFT and the worker's first chunk count it.
                if job_id not in self.by_job and (output.outputs[0].text or output.finished):
                    self.by_job[job_id] = (started, time.perf_counter() if output.outputs[0].text else first_output)
                yield output

        engine.generate = timed_generate


async def closed_loop(concurrency: int, jobs: int, run_one) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await run_one(i)

    await asyncio.gather(*(one(i) for i in range(jobs)))


async def bench_sdk(
    standin: StandinProcess, job_loops: list[str], concurrencies: list[int], max_tokens: int, jobs: int, rounds: int,
    max_concurrency: int,
) -> list[SdkResult]:
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    settings = load_settings(max_concurrency=max_concurrency)
    handle = EngineHandle(settings)
    engine = await handle.get()
    tokenizer = engine.get_tokenizer()
    handler = JobHandler(settings, handle)
    results = []
    try:
        for job_loop in job_loops:
            async with SdkLoad(standin, handler.handle, handler.concurrency, job_loop) as sdk:
                sdk.engine_times.watch(engine)
                # warm-up: the first jobs through a fresh loop and HTTP session
                await sdk.run_jobs([(f"{job_loop}-warm-{i}", job_input(i, 8)) for i in range(4)], 1)
                for concurrency in concurrencies:
                    sdk_ids: list[str] = []
                    raw_ttfts: list[float] = []
                    sdk_wall_s = 0.0
                    for r in range(rounds):
                        ids = [f"{job_loop}-c{concurrency}-r{r}-{i}" for i in range(max(jobs, concurrency))]
                        jobs_in = [(job_id, job_input(i, max_tokens)) for i, job_id in enumerate(ids)]
                        sdk_wall_s += await sdk.run_jobs(jobs_in, concurrency)
                        sdk_ids += ids

                        async def raw(i: int) -> None:
                            raw_ttfts.append((await straight_on_vllm(engine, tokenizer, i, max_tokens)).ttft_s * 1000)

                        await closed_loop(concurrency, len(ids), raw)
                    results.append(summarize(job_loop, concurrency, sdk, sdk_ids, raw_ttfts, sdk_wall_s))
    finally:
        handle.shutdown()
    return results


def summarize(
    job_loop: str, concurrency: int, sdk: SdkLoad, ids: list[str], raw_ttfts: list[float], wall_s: float
) -> SdkResult:
    to_post = [sdk.to_first_post_ms(job_id) for job_id in ids]
    stages = [sdk.stages_ms(job_id) for job_id in ids]
    per_job = [total - stage["engine"] for total, stage in zip(to_post, stages, strict=True)]
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
        added_per_job_p50_ms=round(percentile(per_job, 50), 2),
        added_per_job_p90_ms=round(percentile(per_job, 90), 2),
        jobs_per_s=round(len(ids) / wall_s, 1),
        stage_p50_ms={stage: round(statistics.median(s[stage] for s in stages), 2) for stage in STAGES},
    )


def render_sdk_table(
    results: list[SdkResult], max_tokens: int, max_concurrency: int, load_before: tuple, load_after: tuple
) -> str:
    lines = [
        f"max_tokens={max_tokens} per job, streamed, through the runpod SDK's job loop against the RunPod API stand-in "
        f"on 127.0.0.1 (its own process); the worker's MAX_CONCURRENCY {max_concurrency}; "
        f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min)",
        "",
        "| job loop | conc | jobs | jobs/s | submit->1st POST p50 ms | p90 ms | raw TTFT p50 ms | p90 ms | added vs raw p50 ms "
        "| p90 ms | added per job p50 ms | p90 ms | take p50 | start p50 | build p50 | engine p50 | post p50 |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        s = r.stage_p50_ms
        lines.append(
            f"| {r.job_loop} | {r.concurrency} | {r.jobs} | {r.jobs_per_s:.1f} | {r.to_first_post_p50_ms:.2f} | {r.to_first_post_p90_ms:.2f} | "
            f"{r.raw_ttft_p50_ms:.2f} | {r.raw_ttft_p90_ms:.2f} | {r.added_p50_ms:+.2f} | {r.added_p90_ms:+.2f} | "
            f"{r.added_per_job_p50_ms:+.2f} | {r.added_per_job_p90_ms:+.2f} | "
            + " | ".join(f"{s[stage]:.2f}" for stage in STAGES) + " |"
        )
    return "\n".join(lines)


def run_sdk_bench(
    job_loops: list[str], concurrencies: list[int], max_tokens: int, jobs: int, rounds: int, max_concurrency: int | None
) -> tuple[str, list[dict]]:
    """`max_concurrency`: the worker's MAX_CONCURRENCY; None: room for every client's job at once."""
    if max_concurrency is None:
        max_concurrency = max(64, *concurrencies)
    standin = StandinProcess()
    point_sdk_at(standin.start())
    from worker.transports.queue.job_loop import use_uvloop

    use_uvloop()  # as handler.py runs the worker
    try:
        load_before = os.getloadavg()
        results = asyncio.run(bench_sdk(standin, job_loops, concurrencies, max_tokens, jobs, rounds, max_concurrency))
        load_after = os.getloadavg()
    finally:
        standin.stop()
    table = render_sdk_table(results, max_tokens, max_concurrency, load_before, load_after)
    return table, [asdict(r) for r in results]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=64, help="jobs per concurrency level")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--job-loop", nargs="+", choices=["event", "stock"], default=["event"],
        help="the worker's event-driven job loop, the SDK's own (100 ms poll), or both",
    )
    parser.add_argument(
        "--max-concurrency", type=int, metavar="N",
        help="the worker's MAX_CONCURRENCY (default: room for every client's job); below --concurrency "
        "the worker is full and each next job waits for a slot",
    )


def run(args: argparse.Namespace) -> dict:
    table, rows = run_sdk_bench(args.job_loop, args.concurrency, args.max_tokens, args.jobs, args.rounds, args.max_concurrency)
    print(table)
    return {"max_tokens": args.max_tokens, "sdk_results": rows}
