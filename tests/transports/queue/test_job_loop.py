"""The event-driven job loop (worker/transports/queue/job_loop.py) keeps the runpod SDK's semantics: the concurrency
modifier, per-job stop, the drain on shutdown and job progress; and it is pinned to the SDK it replaces
code of. These run the SDK's real JobScaler with its local-test hooks (jobs_fetcher, jobs_handler,
stop_signals_fetcher) in place of HTTP; tests/transports/queue/test_platform.py runs the whole path over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import uvloop
from runpod.serverless.modules import rp_scale
from runpod.serverless.modules.worker_state import IS_LOCAL_TEST, JobsProgress
from runpod.version import __version__ as runpod_version

from tests.helpers import ROOT
from worker.transports.queue import job_loop
from worker.transports.queue.job_loop import EventDrivenJobScaler


def test_the_installed_sdk_is_the_one_the_loop_was_written_for():
    # A failure here means a runpod upgrade: re-read rp_scale.JobScaler (run_jobs, get_jobs, set_scale,
    # handle_job) and worker_state.JobsProgress (_save_state, _load_state), adapt job_loop.py, then re-pin.
    assert runpod_version == job_loop.PINNED_RUNPOD_VERSION
    assert job_loop.source_sha256(job_loop.SDK_JOB_SCALER) == job_loop.PINNED_JOB_SCALER_SHA256
    assert job_loop.source_sha256(JobsProgress) == job_loop.PINNED_JOBS_PROGRESS_SHA256
    for requirements in ("requirements.txt", "constraints.txt"):
        pins = re.findall(r"^runpod==(\S+)", (ROOT / requirements).read_text(), re.MULTILINE)
        assert pins == [job_loop.PINNED_RUNPOD_VERSION], requirements


def test_install_makes_the_sdk_build_the_event_driven_scaler(monkeypatch):
    monkeypatch.setattr(rp_scale, "JobScaler", job_loop.SDK_JOB_SCALER)
    assert job_loop.install() is True
    assert rp_scale.JobScaler is EventDrivenJobScaler


def test_use_uvloop_makes_the_sdks_asyncio_run_start_a_uvloop_loop():
    async def loop_type():
        return type(asyncio.get_running_loop())

    try:
        job_loop.use_uvloop()
        assert asyncio.run(loop_type()) is uvloop.Loop  # rp_scale.JobScaler.start calls asyncio.run
    finally:
        asyncio.set_event_loop_policy(None)


class FakeJobs:
    """Jobs for the scaler's local-test hooks: `add` queues one, the handler waits until `finish(id)`."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.release: dict[str, asyncio.Event] = {}
        self.running: set[str] = set()
        self.max_running = 0
        self.finished: list[str] = []
        self.to_stop: asyncio.Queue = asyncio.Queue()

    def add(self, job_id: str) -> None:
        self.release[job_id] = asyncio.Event()
        self.incoming.put_nowait({"id": job_id, "input": {}})

    def finish(self, job_id: str) -> None:
        self.release[job_id].set()

    async def fetch(self, session, wanted: int):
        try:
            first = await asyncio.wait_for(self.incoming.get(), 0.05)
        except asyncio.TimeoutError:
            return None
        jobs = [first]
        while len(jobs) < wanted and not self.incoming.empty():
            jobs.append(self.incoming.get_nowait())
        return jobs

    async def handle(self, session, config, job) -> None:
        self.running.add(job["id"])
        self.max_running = max(self.max_running, len(self.running))
        try:
            await self.release[job["id"]].wait()
            self.finished.append(job["id"])
        finally:
            self.running.discard(job["id"])

    async def stop_signals(self, session):
        try:
            return [await asyncio.wait_for(self.to_stop.get(), 0.05)]
        except asyncio.TimeoutError:
            return []


def scaler_for(jobs: FakeJobs, concurrency) -> EventDrivenJobScaler:
    assert IS_LOCAL_TEST, "the SDK honours the jobs_* hooks only without RUNPOD_WEBHOOK_GET_JOB"
    return EventDrivenJobScaler(
        {
            "handler": lambda job: None,
            "concurrency_modifier": concurrency,
            "jobs_fetcher": jobs.fetch,
            "jobs_handler": jobs.handle,
            "stop_signals_fetcher": jobs.stop_signals,
        }
    )


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def run(coro):
    """On uvloop, the loop handler.py runs the SDK's job loop on (job_loop.use_uvloop)."""
    return uvloop.new_event_loop().run_until_complete(coro)


@contextlib.asynccontextmanager
async def running_scaler(jobs: FakeJobs, concurrency):
    """The event-driven scaler running on `jobs`; told to stop, and its loop awaited, on leaving."""
    scaler = scaler_for(jobs, concurrency)
    loop_task = asyncio.ensure_future(scaler.run())
    yield scaler
    scaler.kill_worker()
    await asyncio.wait_for(loop_task, 10)


def test_concurrency_modifier_bounds_running_jobs_and_every_job_runs():
    async def scenario():
        jobs = FakeJobs()
        async with running_scaler(jobs, lambda current: 3) as scaler:
            for i in range(7):
                jobs.add(f"job-{i}")
            await until(lambda: len(jobs.running) == 3)
            for i in range(7):  # release all; the rest start as slots free up
                jobs.finish(f"job-{i}")
            await until(lambda: len(jobs.finished) == 7)
        return jobs, scaler

    jobs, scaler = run(scenario())
    assert jobs.max_running == 3
    assert sorted(jobs.finished) == [f"job-{i}" for i in range(7)]
    assert scaler.jobs_tasks == {} and JobsProgress().get_job_count() == 0


def test_a_full_worker_takes_the_next_job_as_soon_as_one_ends():
    """The SDK's job-take loop sleeps 1 s whenever the worker is full: a slot freed meanwhile must not wait
    for that sleep to end."""

    async def scenario():
        jobs = FakeJobs()
        waits = []
        async with running_scaler(jobs, lambda current: 1):
            for i in range(4):
                jobs.add(f"job-{i}")
            for i in range(3):
                await until(lambda i=i: jobs.running == {f"job-{i}"})
                ended = time.monotonic()
                jobs.finish(f"job-{i}")
                await until(lambda i=i: jobs.running == {f"job-{i + 1}"})
                waits.append(time.monotonic() - ended)
            jobs.finish("job-3")
            await until(lambda: len(jobs.finished) == 4)
        return waits

    waits = run(scenario())
    assert max(waits) < 0.5, f"the next job waited {max(waits):.2f} s for a free slot (the SDK's sleep is 1 s)"


def test_a_stop_signal_cancels_only_that_job():
    async def scenario():
        jobs = FakeJobs()
        async with running_scaler(jobs, lambda current: 4) as scaler:
            jobs.add("keep")
            jobs.add("stop-me")
            await until(lambda: jobs.running == {"keep", "stop-me"})
            jobs.to_stop.put_nowait("stop-me")
            await until(lambda: jobs.running == {"keep"})
            jobs.finish("keep")
            await until(lambda: jobs.finished == ["keep"])
        return jobs, scaler

    jobs, scaler = run(scenario())
    assert jobs.finished == ["keep"]
    assert scaler.jobs_tasks == {} and JobsProgress().get_job_count() == 0


def test_shutdown_drains_running_jobs_before_the_loop_returns():
    async def scenario():
        jobs = FakeJobs()
        scaler = scaler_for(jobs, lambda current: 2)
        loop_task = asyncio.ensure_future(scaler.run())
        jobs.add("a")
        jobs.add("b")
        await until(lambda: jobs.running == {"a", "b"})
        scaler.kill_worker()
        await asyncio.sleep(0.2)
        returned_early = loop_task.done()
        jobs.finish("a")
        jobs.finish("b")
        await asyncio.wait_for(loop_task, 10)
        return jobs, returned_early

    jobs, returned_early = run(scenario())
    assert not returned_early, "the loop returned while jobs were still running"
    assert sorted(jobs.finished) == ["a", "b"]
    assert JobsProgress().get_job_count() == 0


def test_a_grown_concurrency_applies_while_jobs_run():
    """The SDK's set_scale swaps in a new queue when the modifier's answer changes, once every job in progress
    has ended; the loop applies the answer at once (CONCURRENCY_MODE=adaptive changes it with the engine's load)."""

    async def scenario():
        jobs = FakeJobs()
        answer = [1]
        async with running_scaler(jobs, lambda current: answer[0]):
            jobs.add("first")
            await until(lambda: jobs.running == {"first"})
            answer[0] = 3
            jobs.add("second")
            jobs.add("third")
            await until(lambda: jobs.running == {"first", "second", "third"})  # "first" has not ended
            for job_id in ("first", "second", "third"):
                jobs.finish(job_id)
            await until(lambda: len(jobs.finished) == 3)
        return jobs

    assert run(scenario()).max_running == 3


class GrowingModifier:
    """A modifier that, like concurrency.AdaptiveConcurrency, tells the loop when its answer grows."""

    def __init__(self) -> None:
        self.answer = 1
        self._wake_ups = []

    def __call__(self, current: int) -> int:
        return self.answer

    def notify_on_change(self, wake_up) -> None:
        self._wake_ups.append(wake_up)

    def grow(self, answer: int) -> None:
        self.answer = answer
        for wake_up in self._wake_ups:
            wake_up()


def test_a_full_worker_takes_a_job_as_soon_as_the_modifier_says_its_target_grew(monkeypatch):
    # The full worker otherwise asks again only after a job ends or STOP_CHECK_S: made longer than until()'s wait.
    monkeypatch.setattr(job_loop, "STOP_CHECK_S", 60.0)

    async def scenario():
        jobs = FakeJobs()
        modifier = GrowingModifier()
        async with running_scaler(jobs, modifier):
            jobs.add("running")
            jobs.add("next")
            await until(lambda: jobs.running == {"running"})
            modifier.grow(2)
            await until(lambda: jobs.running == {"running", "next"})
            jobs.finish("running")
            jobs.finish("next")
            await until(lambda: len(jobs.finished) == 2)
        return jobs

    assert sorted(run(scenario()).finished) == ["next", "running"]


def test_an_idle_worker_stops_when_told():
    async def scenario():
        jobs = FakeJobs()
        scaler = scaler_for(jobs, lambda current: 2)
        loop_task = asyncio.ensure_future(scaler.run())
        await asyncio.sleep(0.1)
        scaler.kill_worker()
        await asyncio.wait_for(loop_task, 10)
        return loop_task

    assert run(scenario()).exception() is None


def saved_job_ids() -> set[str]:
    """The job ids in the SDK's state file, read as its heartbeat process reads them."""
    import pickle

    with open(JobsProgress._STATE_FILE, "rb") as state:
        return {job.id for job in pickle.load(state)}


def record_progress_file_writes(monkeypatch) -> list[str]:
    """The name of the thread behind each write of the SDK's state file from now on (the SDK's own
    `_save_state` still writes it)."""
    import threading

    writers: list[str] = []
    sdk_save = JobsProgress._save_state

    def recording_save(progress):
        writers.append(threading.current_thread().name)
        sdk_save(progress)

    monkeypatch.setattr(JobsProgress, "_save_state", recording_save)
    return writers


def test_job_progress_file_follows_the_running_jobs_and_is_written_off_the_event_loop(monkeypatch):
    """The SDK's heartbeat process reads the running jobs from JobsProgress's file; the loop has it written
    by a background thread, and the file is current when the loop ends."""
    writers = record_progress_file_writes(monkeypatch)

    async def scenario():
        jobs = FakeJobs()
        async with running_scaler(jobs, lambda current: 4):
            jobs.add("a")
            jobs.add("b")
            await until(lambda: jobs.running == {"a", "b"})
            await until(lambda: saved_job_ids() == {"a", "b"})
            jobs.finish("a")
            await until(lambda: saved_job_ids() == {"b"})
            jobs.finish("b")
            await until(lambda: jobs.finished == ["a", "b"])

    run(scenario())
    assert saved_job_ids() == set() and JobsProgress().get_job_count() == 0
    assert set(writers) == {"job-progress-file"}, writers
    assert "_save_state" not in vars(JobsProgress()), "the SDK's own method is back once the loop ends"


def test_job_progress_file_writes_do_not_grow_with_the_job_rate(monkeypatch):
    """Changes that come faster than PROGRESS_WRITE_GAP_S share a write: 40 jobs taken and ended 5 ms apart
    (80 changes, each its own write without the gap) cost about one write per gap, and the file ends current."""
    writes = record_progress_file_writes(monkeypatch)

    async def scenario():
        jobs = FakeJobs()
        async with running_scaler(jobs, lambda current: 40):
            for i in range(40):
                jobs.add(f"spaced-{i}")
                await asyncio.sleep(0.005)
            await until(lambda: len(jobs.running) == 40)
            for i in range(40):
                jobs.finish(f"spaced-{i}")
                await asyncio.sleep(0.005)
            await until(lambda: len(jobs.finished) == 40)

    started = time.monotonic()
    run(scenario())
    gaps = (time.monotonic() - started) / job_loop.PROGRESS_WRITE_GAP_S
    assert saved_job_ids() == set()
    assert 1 <= len(writes) <= min(gaps + 2, 40), (len(writes), gaps)  # 80 writes if every change had its own
