"""The engine's lifecycle: build ONE vLLM AsyncLLM lazily, share it, and stop the worker if it dies.

- Jobs call `await engine.get()`; the first call starts the build, later ones wait for the same build.
- A failed build fails every waiting job with the reason, then the worker exits non-zero so the
  platform replaces it (a worker that fails every job forever is worse than none).
- A watchdog polls the engine; if its process dies, in-flight jobs fail (vLLM raises EngineDeadError)
  and the worker exits non-zero a few seconds later, after the SDK has reported those failures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from config.settings import SettingsError, WorkerSettings

if TYPE_CHECKING:
    from worker.vllm_api import AsyncEngineArgs, AsyncLLM

log = logging.getLogger("worker.serving.engine")

# Time for the SDK to post the failed jobs' results before the process goes.
FATAL_EXIT_GRACE_S = 3.0
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


def build_engine_args(
    settings: WorkerSettings, model_path: str, tensor_parallel_size: int, pipeline_parallel_size: int
) -> AsyncEngineArgs:
    """Settings (+ ENGINE_ARGS) -> vLLM's AsyncEngineArgs; unknown ENGINE_ARGS keys are a settings error."""
    from worker.vllm_api import AsyncEngineArgs

    fields = {f.name: f for f in dataclasses.fields(AsyncEngineArgs)}
    known = set(fields)
    unknown = sorted(set(settings.engine_args) - known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise SettingsError(
            "Invalid worker configuration:\n  ENGINE_ARGS: unknown vLLM engine argument(s) "
            + ", ".join(hints)
            + " (allowed: the fields of vllm.engine.arg_utils.AsyncEngineArgs, in snake_case)"
        )
    args: dict[str, Any] = {
        "model": model_path,
        "served_model_name": [settings.served_name],
        "revision": settings.model_revision if model_path == settings.model_name else None,
        "trust_remote_code": settings.trust_remote_code,
        "tensor_parallel_size": tensor_parallel_size,
        "pipeline_parallel_size": pipeline_parallel_size,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enforce_eager": settings.enforce_eager,
        # The engine needs it too: structured outputs start after the reasoning ends.
        "reasoning_parser": settings.reasoning_parser or "",
        # Per-request log lines would carry prompts into the logs.
        "enable_log_requests": False,
    }
    args.update({name: _as_config(fields[name], value) for name, value in settings.engine_args.items()})
    try:
        return AsyncEngineArgs(**args)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"Invalid worker configuration:\n  ENGINE_ARGS: {error}") from None


def _as_config(field: dataclasses.Field, value: Any) -> Any:
    """A JSON object given for one of vLLM's config-object arguments (e.g. structured_outputs_config)
    becomes that config class, as `vllm serve --structured-outputs-config '{...}'` makes it; vLLM itself
    converts only some of them from dicts."""
    if not isinstance(value, dict):
        return value
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if default is None or isinstance(default, dict) or not dataclasses.is_dataclass(default):
        return value
    try:
        return type(default)(**value)
    except (TypeError, ValueError) as error:
        problem = " ".join(line.strip() for line in str(error).splitlines() if "errors.pydantic.dev" not in line)
        raise SettingsError(
            f"Invalid worker configuration:\n  ENGINE_ARGS: {field.name}: {problem} "
            f"(allowed: the fields of vLLM's {type(default).__name__})"
        ) from None


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
        self.start_phases: dict[str, float] = {}  # seconds per phase of the engine build

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
        from worker.model_files.config_json import read_model_config
        from worker.model_files.download import ensure_model
        from worker.parallel.layout import plan_parallelism, visible_gpus
        from worker.serving.compile_cache import use_volume_compile_cache
        from worker.serving.start_phases import StartPhases
        from worker.vllm_api import AsyncLLM

        started = time.perf_counter()
        phases = StartPhases()
        settings = self.settings
        model_path = ensure_model(settings)
        downloaded = time.perf_counter()
        phases.add("download", downloaded - started)
        model_config = read_model_config(model_path, revision=None, token=settings.hub_token)
        gpus = visible_gpus()
        plan = plan_parallelism(settings, model_config, gpus)
        log.info("parallelism: %s", plan.summary)
        for warning in plan.warnings:
            log.warning("%s", warning)
        args = build_engine_args(settings, model_path, plan.tensor_parallel_size, plan.pipeline_parallel_size)
        # Before the engine starts: its processes read the cache folders from the environment.
        use_volume_compile_cache(settings, plan.tensor_parallel_size, plan.pipeline_parallel_size, gpus.names)
        planned = time.perf_counter()
        phases.add("plan", planned - downloaded)
        phases.record_vllm_phases()
        log.info(
            "building the vLLM engine: model=%s tensor_parallel_size=%d pipeline_parallel_size=%d dtype=%s",
            settings.model_name,
            plan.tensor_parallel_size,
            plan.pipeline_parallel_size,
            settings.dtype,
        )
        try:
            engine = AsyncLLM.from_engine_args(args)
        finally:
            phases.read_vllm_phases()
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
            self._engine.shutdown()
            self._engine = None
