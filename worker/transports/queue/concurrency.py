"""The runpod SDK's `concurrency_modifier`: how many jobs this worker holds (takes from RunPod and runs).

CONCURRENCY_MODE=adaptive (the default): as many as the engine can start now, from its scheduler's own
statistics (worker/engine/load.py); the rest stay queued at RunPod, where its autoscaler counts them and other
workers can take them. MAX_CONCURRENCY stays the hard cap. fixed: MAX_CONCURRENCY, always (the SDK's way).
docs/concurrency.md has how the modes behave with RunPod's scaling.

Adaptive mode needs the worker's event-driven job loop (job_loop.py): the SDK's own loop resizes its job queue
only once every job in progress has ended, which a moving target would make it do over and over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from config.settings import WorkerSettings
from worker.engine.load import EngineLoad, EngineLoadSignal, LoadController

log = logging.getLogger(__name__)


class FixedConcurrency:
    """MAX_CONCURRENCY jobs at once, whatever the engine's load."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def __call__(self, current: int) -> int:
        return self.cap


class AdaptiveConcurrency:
    """The engine's job target (LoadController), updated on each engine step. A job loop that waits while the
    worker is full passes `notify_on_change` a wake-up: it is called when the target grows."""

    def __init__(self, signal: EngineLoadSignal, cap: int) -> None:
        self.controller = LoadController(cap)
        self._wake_ups: list[Callable[[], None]] = []
        signal.subscribe(self._follow)

    def __call__(self, current: int) -> int:
        return self.controller.target

    def notify_on_change(self, wake_up: Callable[[], None]) -> None:
        self._wake_ups.append(wake_up)

    def _follow(self, load: EngineLoad) -> None:
        before = self.controller.target
        after = self.controller.update(load)
        if after == before:
            return
        log.info(
            "job target %d -> %d (engine: %d running, %d waiting, KV cache %.0f%%; cap %d)",
            before, after, load.running, load.waiting, load.kv_cache_usage * 100, self.controller.cap,
        )
        if after > before:
            for wake_up in self._wake_ups:
                wake_up()


def concurrency_modifier(
    settings: WorkerSettings, signal: EngineLoadSignal, event_driven_loop: bool
) -> FixedConcurrency | AdaptiveConcurrency:
    """The modifier for CONCURRENCY_MODE; fixed, with a warning, where the SDK's own job loop runs."""
    if settings.concurrency_mode == "adaptive" and not event_driven_loop:
        log.warning(
            "CONCURRENCY_MODE=adaptive needs the worker's own job loop, which this runpod SDK version cannot use: "
            "running with CONCURRENCY_MODE=fixed (MAX_CONCURRENCY=%d)",
            settings.max_concurrency,
        )
    if settings.concurrency_mode == "adaptive" and event_driven_loop:
        return AdaptiveConcurrency(signal, settings.max_concurrency)
    return FixedConcurrency(settings.max_concurrency)
