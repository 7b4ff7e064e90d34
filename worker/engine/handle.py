"""The engine's lifecycle: build ONE vLLM AsyncLLM lazily, share it, and stop the worker if it dies.

- Jobs call `await engine.get()`; the first call starts the build, later ones wait for the same build.
- A failed build fails every waiting job with the reason, then the worker exits non-zero so the
  platform replaces it (a worker that fails every job forever is worse than none).
- A watchdog polls the engine; if its process dies, in-flight jobs fail (vLLM raises EngineDeadError)
  and the worker exits non-zero a few seconds later, after the SDK has reported those failures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

from config.settings import WorkerSettings
from worker.engine.load import EngineLoadSignal
from worker.model_files.adapters import Adapter
from worker.startup.cluster import join_failure
from worker.startup.prepare import prepare_engine
from worker.startup.preshard import PendingPreshard, write_preshard
from worker.startup.start_phases import StartPhases
from worker.vllm_api import AsyncLLM, freeze_gc_heap

log = logging.getLogger(__name__)

# Time for the SDK to post the failed jobs' results before the process goes.
FATAL_EXIT_GRACE_S = 3.0
# How long vLLM may take to stop its engine processes before it force-kills them (its default, 5 s, cut
# short their own teardown: a force kill, and their shared memory leaked). They exit as soon as they are done.
ENGINE_SHUTDOWN_TIMEOUT_S = 30.0
WATCHDOG_INTERVAL_S = 0.5


class EngineStartError(RuntimeError):
    """The engine could not be built; the message says why and what to change."""


def exit_process(reason: str, grace_s: float = FATAL_EXIT_GRACE_S) -> None:
    """Exit non-zero after `grace_s`, from a thread so a blocked event loop cannot hold it up."""
    log.critical("worker is exiting (code 1): %s", reason)

    def _exit() -> None:
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=_exit, name="fatal-exit", daemon=True).start()


class EngineHandle:
    """The worker's one engine, built on first use (or at start with WARM_START)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        on_fatal: Callable[[str], None] = exit_process,
    ) -> None:
        self.settings = settings
        self._on_fatal = on_fatal
        self._engine: AsyncLLM | None = None
        self._start: asyncio.Future | None = None
        self._watchdog: asyncio.Task | None = None
        self._dead_reported = False
        self.load_seconds: float | None = None
        self.adapters: list[Adapter] = []  # LORA_MODULES, fetched, once the engine is built
        self.start_phases: dict[str, float] = {}  # seconds per phase of the engine build
        self.load = EngineLoadSignal()  # the engine's running/waiting requests, from its per-step stats
        self._pending_preshard: PendingPreshard | None = None  # written by the first get(), in the jobs' loop

    @property
    def engine(self) -> AsyncLLM | None:
        return self._engine

    async def get(self) -> AsyncLLM:
        """The running engine; the first caller builds it, concurrent callers wait for the same build."""
        if self._engine is None:
            if self._start is None:
                self._start = asyncio.ensure_future(asyncio.to_thread(self._build))
            # shield: one cancelled job must not cancel the build the others wait for.
            # A failed build raises the same EngineStartError in every waiting job.
            self._engine = await asyncio.shield(self._start)
        if self._pending_preshard is not None:
            pending, self._pending_preshard = self._pending_preshard, None
            await write_preshard(self._engine, pending)
        self._ensure_watchdog()
        return self._engine

    def start_now(self) -> AsyncLLM:
        """Build the engine synchronously, outside any event loop (WARM_START)."""
        if self._engine is None:
            self._engine = self._build()
        return self._engine

    def _build(self) -> AsyncLLM:
        try:
            return self._build_unguarded()
        except Exception as error:  # anything the download, the plan or vLLM raise
            raise self._start_failed(error) from None

    def _build_unguarded(self) -> AsyncLLM:
        started = time.perf_counter()
        phases = StartPhases()
        prepared = prepare_engine(self.settings, phases)
        args, self.adapters = prepared.args, prepared.adapters
        self._pending_preshard = prepared.preshard
        phases.record_vllm_phases()
        try:
            engine = AsyncLLM.from_engine_args(args, stat_loggers=[self.load.stat_logger])
        except Exception as error:
            waited = time.perf_counter() - started
            if self.settings.in_cluster and waited >= self.settings.cluster_join_timeout_s:
                raise EngineStartError(f"{join_failure(self.settings, args.master_port, waited)} ({error})") from error
            raise
        finally:
            phases.read_vllm_phases()
        # As `vllm serve` does once it is up: the objects of torch, vLLM and the engine's set-up move out of the
        # collector's reach, so a full collection over them cannot stall the event loop mid-job.
        freeze_gc_heap()
        self.load_seconds = time.perf_counter() - started
        phases.add("engine ready", self.load_seconds)
        self.start_phases = phases.seconds
        log.info("engine ready in %.1f s (%s)", self.load_seconds, phases.summary())
        return engine

    def _start_failed(self, error: Exception) -> EngineStartError:
        reason = f"engine start-up failed: {type(error).__name__}: {error}"
        if isinstance(error, EngineStartError):
            reason = str(error)
        log.error("%s", reason)
        self._on_fatal(reason)
        return EngineStartError(reason)

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while self._engine is not None:
            if self._engine.errored:
                self.report_dead()
                return
            await asyncio.sleep(WATCHDOG_INTERVAL_S)

    def report_dead(self) -> None:
        """The engine died: exit (once), so the platform replaces this worker."""
        if not self._dead_reported:
            self._dead_reported = True
            self._on_fatal("the vLLM engine process died; in-flight jobs were failed")

    def shutdown(self) -> None:
        if self._watchdog is not None and not self._watchdog.get_loop().is_closed():
            self._watchdog.cancel()
        if self._engine is not None:
            self._engine.shutdown(timeout=ENGINE_SHUTDOWN_TIMEOUT_S)
            self._engine = None
