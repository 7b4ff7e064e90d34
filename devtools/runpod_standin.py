"""A stand-in for RunPod's job API on 127.0.0.1, so tests and `python -m bench sdk` run the
worker's REAL production path: the runpod SDK's job loop (JobScaler) with RUNPOD_WEBHOOK_* pointing here
takes jobs, posts stream chunks and results, and long-polls the stop channel for cancellations.
It lives in worker/ (not tests/helpers) because the bench, a command users run, needs it too.

Like RunPod's, the job-take call is a long poll that answers as soon as a job is submitted, so the
time from `submit` to the first stream POST (`first_stream_at - submitted_at`) is the worker's and the SDK's.

Endpoints (as the SDK 1.10 calls them):
  GET  /job-take/{worker}?...           one job, or 204        GET /job-take-batch/{worker}?...&batch_size=N
  POST /job-stream/{worker}/{job}?...   one stream chunk       POST /job-done/{worker}/{job}?...   the result
  GET  /job-stop/{worker}?...           {"jobsToStop": [...]}  GET  /ping/{worker}                 heartbeat

Fault injection (`Faults`, given to the constructor or `set_faults`): a share of job-take, job-stream and
job-done requests is refused with a status before anything is recorded, as a platform blip would refuse
them; optionally each is delayed first. The refusals follow a seeded random sequence per kind.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvloop
from aiohttp import web

POLL_S = 0.5
# The stop channel is a long poll: held open until there is something to stop, as RunPod's is.
STOP_POLL_S = 10.0


@dataclass(frozen=True)
class Faults:
    """What the stand-in refuses: each share is the fraction of that kind of request answered with `status`."""

    take: float = 0.0  # job-take (and job-take-batch) polls
    stream: float = 0.0  # job-stream posts
    done: float = 0.0  # job-done posts (final results)
    status: int = 503
    delay_s: float = 0.0  # before each take, stream and done request is answered (refused or not)
    seed: int = 0
    jobs: frozenset[str] | None = None  # only these jobs' stream and done posts (None: every job's)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeRunPod:
    def __init__(self, faults: Faults | None = None) -> None:
        self.port = free_port()
        self.pending: list[dict[str, Any]] = []
        self.taken: dict[str, float] = {}  # time.perf_counter() when the worker took the job
        self.streams: dict[str, list[Any]] = defaultdict(list)
        self.results: dict[str, dict[str, Any]] = {}
        self.result_counts: dict[str, int] = defaultdict(int)
        self.to_stop: list[str] = []
        self.stops_handed: list[tuple[float, list[str]]] = []  # (time.perf_counter(), ids) per stop poll answered
        self.requests_seen: list[str] = []
        # time.perf_counter() of each job's submit and of its first stream POST's arrival (the bench's TTFT).
        self.submitted_at: dict[str, float] = {}
        self.first_stream_at: dict[str, float] = {}
        # Which worker took each job, and after every take and first result: (time.perf_counter(), jobs still
        # queued here, jobs each worker holds = taken, no result yet). What CONCURRENCY_MODE changes.
        self.taken_by: dict[str, str] = {}
        self.holding: list[tuple[float, int, dict[str, int]]] = []
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()
        # RunPod's API runs on other machines; this one shares the worker's cores (2 in CI), so it serves on
        # uvloop, the cheaper loop (the README's SDK bench section has what that changed at 8 concurrent jobs).
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._job_arrived: asyncio.Event | None = None  # made on the server's loop
        # Called (on the server's thread) with a job id when its result arrives: lets a caller wait without polling.
        self.on_result: Callable[[str], None] | None = None
        self.faults = Faults()
        self._fault_draws: dict[str, random.Random] = {}
        self.refused: Counter[str] = Counter()  # refused requests by kind: "take", "stream", "done"
        self.refused_by_job: Counter[str] = Counter()  # refused stream and done posts by job id
        # Stream or done posts that arrived after the job's result was recorded (RunPod ignores them).
        self.posts_after_final = 0
        self.set_faults(faults or Faults())

    # --- test side -------------------------------------------------------------------------------
    def start(self) -> "FakeRunPod":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown():
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def submit(self, job_id: str, job_input: Any) -> None:
        with self._lock:
            self.submitted_at[job_id] = time.perf_counter()
            self.pending.append({"id": job_id, "input": job_input})
        self._loop.call_soon_threadsafe(self._job_arrived.set)  # answer a waiting job-take now

    def set_faults(self, faults: Faults) -> None:
        """From now on refuse (and delay) requests as `faults` says; each kind's draws restart from the seed."""
        with self._lock:
            self.faults = faults
            self._fault_draws = {kind: random.Random(f"{faults.seed}-{kind}") for kind in ("take", "stream", "done")}

    def submit_burst(self, jobs: list[tuple[str, Any]]) -> None:
        """Queue every (id, input) at once: no take is answered before the last is queued."""
        with self._lock:
            now = time.perf_counter()
            for job_id, job_input in jobs:
                self.submitted_at[job_id] = now
                self.pending.append({"id": job_id, "input": job_input})
        self._loop.call_soon_threadsafe(self._job_arrived.set)

    def held_while_queued(self, worker: str | None = None) -> list[int]:
        """The jobs all workers (or `worker`) held at each take and result while jobs were still queued here."""
        with self._lock:
            return [
                sum(held.values()) if worker is None else held.get(worker, 0)
                for _, queued, held in self.holding
                if queued > 0
            ]

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self.to_stop.append(job_id)

    def wait_for_results(self, job_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(job_id in self.results for job_id in job_ids):
                    return {job_id: self.results[job_id] for job_id in job_ids}
            time.sleep(0.1)
        missing = [job_id for job_id in job_ids if job_id not in self.results]
        raise TimeoutError(f"{len(missing)} job(s) got no result in {timeout} s: {missing[:5]}")

    def env(self, **extra: str) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}"
        env = {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID",
            "RUNPOD_POD_ID": "test-pod",
            "RUNPOD_AI_API_KEY": "test-api-key",
            "RUNPOD_PING_INTERVAL": "2000",
        }
        env.update(extra)
        return env

    # --- server side -------------------------------------------------------------------------------
    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._job_arrived = asyncio.Event()
        app = web.Application()
        app.router.add_get("/job-take/{worker}", self._take)
        app.router.add_get("/job-take-batch/{worker}", self._take)
        app.router.add_post("/job-stream/{worker}/{job}", self._stream)
        app.router.add_post("/job-done/{worker}/{job}", self._done)
        app.router.add_get("/job-stop/{worker}", self._stop)
        app.router.add_get("/ping/{worker}", self._ping)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _refusal(self, kind: str, job_id: str | None = None) -> web.Response | None:
        """The refusal this request gets under the current faults (after their delay), or None to serve it."""
        faults = self.faults
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        with self._lock:
            if job_id is not None and faults.jobs is not None and job_id not in faults.jobs:
                return None
            if self._fault_draws[kind].random() >= getattr(faults, kind):
                return None
            self.refused[kind] += 1
            if job_id is not None:
                self.refused_by_job[job_id] += 1
        return web.Response(status=faults.status, text="refused by the stand-in's fault injection")

    async def _take(self, request: web.Request) -> web.Response:
        if (refusal := await self._refusal("take")) is not None:
            return refusal
        wanted = int(request.query.get("batch_size", "1"))
        deadline = time.monotonic() + POLL_S
        while True:
            self._job_arrived.clear()  # before looking, so a submit after the look still wakes us
            if request.transport is None or request.transport.is_closing():
                # The worker gave up this poll (aiohttp keeps running the handler): a job taken now would be lost.
                return web.Response(status=204)
            with self._lock:
                jobs = self.pending[:wanted]
                del self.pending[:wanted]
                for job in jobs:
                    self.taken[job["id"]] = time.perf_counter()
                    self.taken_by[job["id"]] = request.match_info["worker"]
                    self._held[request.match_info["worker"]] += 1
                if jobs:
                    self._note_holding()
            if jobs or time.monotonic() > deadline:
                break
            try:
                await asyncio.wait_for(self._job_arrived.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        if not jobs:
            return web.Response(status=204)
        body = jobs if request.path.startswith("/job-take-batch/") else jobs[0]
        return web.json_response(body)

    def _note_holding(self) -> None:  # under self._lock
        self.holding.append((time.perf_counter(), len(self.pending), dict(self._held)))

    async def _stream(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job"]
        if (refusal := await self._refusal("stream", job_id)) is not None:
            return refusal
        payload = json.loads(await request.text())
        with self._lock:
            if job_id in self.results:  # the job is over: RunPod's stream for it has ended
                self.posts_after_final += 1
                return web.Response(text="ok")
            self.first_stream_at.setdefault(job_id, time.perf_counter())
            self.streams[job_id].append(payload)
        return web.Response(text="ok")

    async def _done(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job"]
        if (refusal := await self._refusal("done", job_id)) is not None:
            return refusal
        payload = json.loads(await request.text())
        with self._lock:
            self.result_counts[job_id] += 1
            if job_id in self.results:  # RunPod keeps a finished job's first result and ignores the rest
                self.posts_after_final += 1
                return web.Response(text="ok")
            if job_id in self.taken_by:
                self._held[self.taken_by[job_id]] -= 1
                self._note_holding()
            self.results[job_id] = payload
        if self.on_result is not None:
            self.on_result(job_id)
        return web.Response(text="ok")

    async def _stop(self, request: web.Request) -> web.Response:
        deadline = time.monotonic() + STOP_POLL_S
        while time.monotonic() < deadline:
            with self._lock:
                if self.to_stop:
                    ids, self.to_stop = self.to_stop, []
                    self.stops_handed.append((time.perf_counter(), ids))
                    return web.json_response({"jobsToStop": ids})
            await asyncio.sleep(0.02)
        return web.Response(status=204)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")
