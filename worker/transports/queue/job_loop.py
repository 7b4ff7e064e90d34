"""The runpod SDK's job loop without its 100 ms poll: a job the SDK has taken starts at once, and a full
worker takes its next job as soon as one ends.

runpod 1.10.0's `JobScaler.run_jobs` looks at its job queue every 100 ms (`asyncio.wait(tasks,
timeout=0.1)` while jobs run, `asyncio.sleep(0.1)` when idle), so a taken job waits 0-100 ms before its
handler starts: most of the time to first token this worker added. The SDK has no setting or hook for
it (its `jobs_handler` / `jobs_fetcher` config keys apply only in local test mode), so
`EventDrivenJobScaler` replaces that one method with one that wakes when a job is queued, a job ends or
the worker is told to stop. Everything else is the SDK's own code: taking jobs, the concurrency
modifier, per-job stop (`jobs_tasks`), job progress, and the drain on shutdown.

Job progress is the SDK's `JobsProgress`, with one change while the loop runs: its state file (which the
SDK's heartbeat process reads) is written by a background thread instead of on the event loop. The SDK
writes it, under a file lock, on every job taken and every job ended, and reads it back on every job take:
~0.4-0.8 ms each here, 1.5-4 ms per job of the event loop blocked, which other jobs' first tokens waited
behind (the largest share of the loop's own time at 8 concurrent jobs). This process is the file's only
writer, so its in-memory set is the truth; the file follows within PROGRESS_WRITE_GAP_S and a write.

The SDK's job-take loop (`get_jobs`) sleeps 1 s whenever the worker is full, so a slot freed meanwhile
waits up to 1 s for the next job (a full worker ran about its concurrency in jobs per second at most). It
calls `set_scale` first on each turn: EventDrivenJobScaler's waits there, while the worker is full, for a job
to end (or the concurrency modifier's target to grow), so the turn finds room and takes the next job at once.

The SDK's `set_scale` also swaps in a new job queue whenever the modifier's answer changes, after waiting for
every job in progress to end: a worker whose concurrency follows its engine's load (CONCURRENCY_MODE=adaptive,
concurrency.py) would drain again and again. EventDrivenJobScaler's queue is unbounded instead and never
swapped: `get_jobs` takes only the room there is (concurrency minus occupancy), which bounds it.

`install()` makes `runpod.serverless.start` use it, only on the SDK code it was written against
(`PINNED_JOB_SCALER_SHA256`, `PINNED_JOBS_PROGRESS_SHA256`); on any other it logs a warning and keeps the
SDK's loop. tests/transports/queue/test_job_loop.py fails when the installed SDK's JobScaler or JobsProgress differs from the
pinned one.

`use_uvloop()` has the loops the SDK starts run on uvloop, as `vllm serve` runs its server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import threading
import time

from runpod.serverless.modules import rp_scale
from runpod.serverless.modules.worker_state import JobsProgress
from runpod.version import __version__ as runpod_version

log = logging.getLogger(__name__)

PINNED_RUNPOD_VERSION = "1.10.0"
# sha256 of `inspect.getsource(rp_scale.JobScaler)` in runpod 1.10.0: the class whose queue, task map,
# shutdown event, handle_job and get_jobs (set_scale first on each turn) this loop relies on. A new SDK
# version: re-read JobScaler, then re-pin.
PINNED_JOB_SCALER_SHA256 = "d4e907864cb74b14bb1268aa3ee519207f7152b58cad3335e51f68958888a877"
# The same for `JobsProgress`, whose _save_state/_load_state BackgroundProgressFile takes over.
PINNED_JOBS_PROGRESS_SHA256 = "3eac63b05ded662d06ab1ec966571366f250ea3484afc94fb83b207e6e4d1c86"
# The SDK sets its stop flag from a signal handler, which does not wake a sleeping event loop: look again
# this often so a SIGTERM still ends the loop (the SDK's own loop looked every 0.1 s).
STOP_CHECK_S = 1.0
# The heartbeat reads the progress file once per ping (RUNPOD_PING_INTERVAL, 10 s by default). At most this
# many writes a second keeps the file far fresher than any ping while its cost (lock, temp file, pickle,
# rename) stops growing with the job rate, off the cores vLLM's frontend needs (docs/performance.md).
PROGRESS_WRITE_GAP_S = 0.1


# The SDK's class, kept before install() points rp_scale.JobScaler at the subclass.
SDK_JOB_SCALER = rp_scale.JobScaler


def source_sha256(sdk_class: type) -> str:
    return hashlib.sha256(inspect.getsource(sdk_class).encode()).hexdigest()


def sdk_is_pinned_one() -> bool:
    return (
        runpod_version == PINNED_RUNPOD_VERSION
        and source_sha256(SDK_JOB_SCALER) == PINNED_JOB_SCALER_SHA256
        and source_sha256(JobsProgress) == PINNED_JOBS_PROGRESS_SHA256
    )


class BackgroundProgressFile:
    """While active, the SDK's JobsProgress singleton saves its state file from a background thread
    (the SDK's own `_save_state`, one write for any number of changes since the last, at most one per
    PROGRESS_WRITE_GAP_S) and skips reading it back in this process.

    Set on the instance, so the SDK's code is unchanged; a forked child (the heartbeat process) still reads
    the file through the SDK's own `_load_state`."""

    def __init__(self) -> None:
        self.progress = JobsProgress()
        self._owner_pid = os.getpid()
        self._changed = threading.Condition()
        self._asked = 0  # saves the SDK asked for
        self._written = 0  # of those, how many the last finished write covers
        self._stopped = False

    def start(self) -> None:
        threading.Thread(target=self._write_when_asked, name="job-progress-file", daemon=True).start()
        self.progress._save_state = self._save_soon
        self.progress._load_state = self._load_in_child_only

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is due, then give the SDK its own methods back."""
        self.flush(timeout_s)
        for name in ("_save_state", "_load_state"):
            self.progress.__dict__.pop(name, None)
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def flush(self, timeout_s: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._written >= self._asked, timeout_s)

    def _save_soon(self) -> None:
        if os.getpid() != self._owner_pid:
            return JobsProgress._save_state(self.progress)
        with self._changed:
            self._asked += 1
            self._changed.notify_all()

    def _load_in_child_only(self) -> None:
        if os.getpid() != self._owner_pid:
            JobsProgress._load_state(self.progress)

    def _write_when_asked(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._asked > self._written or self._stopped)
                if self._asked == self._written:  # stopped, nothing due
                    return
                covers = self._asked
            JobsProgress._save_state(self.progress)  # pickles a copy of the set, taken under the GIL
            with self._changed:
                self._written = covers
                self._changed.notify_all()
            time.sleep(PROGRESS_WRITE_GAP_S)  # changes meanwhile wait for one write after the gap


class EventDrivenJobScaler(SDK_JOB_SCALER):
    """The SDK's JobScaler whose `run_jobs` waits on events instead of polling every 100 ms."""

    _next_job: asyncio.Task | None = None  # a `jobs_queue.get()` waiting for the next job taken
    _loop: asyncio.AbstractEventLoop | None = None
    _stop_monitor: asyncio.Task | None = None  # the SDK's stop-channel loop, while it runs

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.jobs_queue = asyncio.Queue()  # unbounded, never swapped (see the module's doc); empty at this point
        self._job_ended = asyncio.Event()  # set as each job ends, or the target grows: room for the next
        if hasattr(self.concurrency_modifier, "notify_on_change"):  # an adaptive modifier (concurrency.py)
            self.concurrency_modifier.notify_on_change(self._job_ended.set)

    def kill_worker(self) -> None:
        """The SDK's stop (SIGTERM/SIGINT), which also ends the stop channel's long poll (RunPod holds that poll
        open until there is something to stop, and the SDK's loop would wait for it after the last job) and a
        full worker's wait for room. Called from the signal handler, so both go through the loop's thread-safe
        queue."""
        super().kill_worker()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._job_ended.set)
            if self._stop_monitor is not None:
                self._loop.call_soon_threadsafe(self._stop_monitor.cancel)

    async def monitor_stop_signals(self, session) -> None:
        self._loop, self._stop_monitor = asyncio.get_running_loop(), asyncio.current_task()
        try:
            await super().monitor_stop_signals(session)
        except asyncio.CancelledError:
            if self.is_alive():
                raise
            # Cancelled by kill_worker: per-job stop signals no longer matter, the running jobs drain whole.
        finally:
            self._stop_monitor = None

    async def set_scale(self) -> None:
        """The concurrency modifier's answer (without the SDK's queue swap), and while the worker is full, a
        wait for a job to end. The SDK's `get_jobs` calls this first on each turn, then sleeps 1 s if it finds
        no room, however soon a job ends."""
        while True:
            self._job_ended.clear()
            self.current_concurrency = self.concurrency_modifier(self.current_concurrency)
            if not self.is_alive() or self.current_occupancy() < self.current_concurrency:
                return
            # Full: wait for a job to end (kill_worker wakes it too). After STOP_CHECK_S ask the concurrency
            # modifier again, as the SDK's 1 s retry did.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._job_ended.wait(), STOP_CHECK_S)

    async def handle_job(self, session, job: dict) -> None:
        try:
            await super().handle_job(session, job)  # its `finally` takes the job out of job progress
        finally:
            self._job_ended.set()

    async def run_jobs(self, session) -> None:
        """As the SDK's `run_jobs`, woken by a job queued or ended, not by a 100 ms timer; job progress's
        file is written off the event loop meanwhile."""
        progress_file = BackgroundProgressFile()
        progress_file.start()
        try:
            await self._run_jobs_until_drained(session)
        finally:
            progress_file.stop()

    async def _run_jobs_until_drained(self, session) -> None:
        tasks: set[asyncio.Task] = set()
        stopping = asyncio.ensure_future(self._shutdown_event.wait())
        last_task_count = 0
        try:
            while self.is_alive() or not self.jobs_queue.empty():
                # Start every queued job: get_jobs took it because there was room then, and a target that
                # shrank since (CONCURRENCY_MODE=adaptive) is better met by taking no more than by holding it.
                while not self.jobs_queue.empty():
                    self._start_job(session, self.jobs_queue.get_nowait(), tasks)
                if tasks and len(tasks) != last_task_count:
                    rp_scale.log.info(f"Jobs in progress: {len(tasks)}")
                    last_task_count = len(tasks)

                wake_on: set[asyncio.Future] = set(tasks)
                if not stopping.done():
                    wake_on.add(stopping)
                if self.is_alive():
                    if self._next_job is None:
                        self._next_job = asyncio.ensure_future(self.jobs_queue.get())
                    wake_on.add(self._next_job)
                if not wake_on:  # stopping with nothing running: asyncio.wait needs something to wait on
                    await asyncio.sleep(STOP_CHECK_S)
                    continue
                done, _ = await asyncio.wait(wake_on, return_when=asyncio.FIRST_COMPLETED, timeout=STOP_CHECK_S)
                tasks.difference_update(done)
                if self._next_job is not None and self._next_job.done():
                    next_job, self._next_job = self._next_job, None
                    self._start_job(session, next_job.result(), tasks)
        finally:
            stopping.cancel()
            await self._stop_waiting_for_jobs(session, tasks)

        # The SDK's drain: let running jobs finish; a stopped job's CancelledError is expected here.
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                rp_scale.log.error(f"JobScaler.run_jobs | Task failed during shutdown drain: {result}")

    def _start_job(self, session, job: dict, tasks: set[asyncio.Task]) -> None:
        task = asyncio.create_task(self.handle_job(session, job))
        tasks.add(task)
        self.jobs_tasks[job["id"]] = task

    async def _stop_waiting_for_jobs(self, session, tasks: set[asyncio.Task]) -> None:
        next_job, self._next_job = self._next_job, None
        if next_job is None:
            return
        next_job.cancel()  # a get() cancelled before it took a job leaves the job in the queue
        await asyncio.wait({next_job})
        if not next_job.cancelled() and next_job.exception() is None:
            self._start_job(session, next_job.result(), tasks)  # it had taken one: run it in the drain


def use_uvloop() -> None:
    """Run the asyncio loops the SDK starts with `asyncio.run` (its job loop, local test mode, fitness checks)
    on uvloop, as `vllm serve` runs its server. The worker's process is one event loop carrying the SDK's HTTP
    takes and posts and vLLM's output handler; uvloop makes each of its task hand-offs and socket writes
    cheaper. Call before `runpod.serverless.start`."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def install() -> bool:
    """Make `runpod.serverless.start` run jobs with EventDrivenJobScaler (the SDK builds
    `rp_scale.JobScaler(config)` when it starts its loop). False, with a warning, on an SDK it was not
    written against."""
    if not sdk_is_pinned_one():
        log.warning(
            "runpod %s is not the SDK the event-driven job loop was written for (runpod %s): using the "
            "SDK's own loop, which starts each job up to 100 ms late",
            runpod_version,
            PINNED_RUNPOD_VERSION,
        )
        return False
    rp_scale.JobScaler = EventDrivenJobScaler
    return True
