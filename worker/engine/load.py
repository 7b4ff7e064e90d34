"""How loaded the engine is, read from vLLM's own scheduler statistics, and how many jobs that lets the
worker hold.

vLLM's engine reports `SchedulerStats` (running and waiting requests, KV cache usage) after every step to
each stat logger it was built with; `EngineLoadSignal.stat_logger` is one (EngineHandle passes it to
`AsyncLLM.from_engine_args`). `job_target` turns a snapshot into the number of jobs the worker should hold;
`LoadController` applies it step by step with a hysteresis. Counts are the engine's requests: a job with
`n: 4` runs as four, a pooling job as one per text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from worker.vllm_api import SchedulerStats, StatLoggerBase

# KV cache usage at which the worker takes no more jobs: the running requests' own growth (a block per
# block-size tokens each) fills the rest, and vLLM then preempts one to recompute it later, which costs more
# than leaving a job at the platform.
KV_HIGH_WATER = 0.90
# The worker takes more again only once usage is back below this: the gap keeps the KV swings of requests
# starting and ending around one threshold from flapping the target.
KV_LOW_WATER = 0.80
# Engine steps in a row with room (no request waiting, KV below the low water mark) before the target grows.
# One such step can be the moment between one request ending and a queued one being admitted; growing takes
# jobs off the platform that cannot be handed back, shrinking only pauses taking, so growth waits and
# shrinking does not.
CALM_STEPS = 2
# Jobs an idle engine may take at once: one would start a burst with a platform round trip per job.
MIN_HEADROOM = 2


@dataclass(frozen=True)
class EngineLoad:
    """One snapshot of the engine's scheduler: what runs, what waits, and how far the KV cache is filled."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    max_running: int = 0  # vLLM's max_num_seqs (summed over data-parallel engines); 0 = not known yet

    @property
    def full(self) -> bool:
        """Running as many requests as vLLM's max_num_seqs lets it."""
        return bool(self.max_running) and self.running >= self.max_running

    @property
    def saturated(self) -> bool:
        # Requests waiting while slots are free are not waiting for capacity: they reached the engine mid-step,
        # or their prefills share one step's token budget (max_num_batched_tokens) and start in the next few
        # (taken for a backlog, the target dropped below max_num_seqs each time a burst's ended jobs were
        # replaced). A KV cache too full to admit them shows at its high water mark.
        waiting_for_a_slot = self.waiting > 0 and (self.full or not self.max_running)
        return waiting_for_a_slot or self.kv_cache_usage >= KV_HIGH_WATER

    @property
    def has_room(self) -> bool:
        return self.waiting == 0 and self.kv_cache_usage < KV_LOW_WATER and not self.full


def ready_jobs(running: int) -> int:
    """Jobs held beyond those running while the engine is full: when several requests end in one step (a burst's
    jobs of one length do), their slots fill from these without a platform round trip. Half again: the jobs a
    worker holds are also those whose results are still being posted and those on their way in (with a quarter,
    8 slots on one busy CPU core ran 6 most of the time and a burst took 1.6x as long as with MAX_CONCURRENCY)."""
    return max(1, running // 2)


def headroom(running: int) -> int:
    """How far the target may run ahead of the running requests while the engine has room: half again, so a
    burst reaches a large engine's limit in a few take round trips."""
    return max(MIN_HEADROOM, running // 2)


def job_target(load: EngineLoad, target: int, cap: int, calm: bool) -> int:
    """The jobs the worker should hold, given the engine's `load`, the current `target`, the hard `cap`
    (MAX_CONCURRENCY) and whether the engine has had room for CALM_STEPS steps (`calm`).

    - Requests waiting or the KV cache at its high water mark: the running requests plus a few ready jobs.
    - Room for long enough: up to the running requests plus headroom, never past what the engine can run
      (max_num_seqs) plus the ready jobs; never lower than it was.
    - Otherwise (between the KV marks, or room not yet for long enough): as it was.
    Never below the running requests plus one, so a worker always takes its next job; never above `cap`."""
    if load.saturated:
        wanted = load.running + ready_jobs(load.running)
    elif calm and load.has_room:
        wanted = load.running + headroom(load.running)
        if load.max_running:
            wanted = min(wanted, load.max_running + ready_jobs(load.max_running))
        wanted = max(target, wanted)
    else:
        wanted = target
    return max(1, min(cap, max(wanted, load.running + 1)))


class LoadController:
    """`job_target` applied to each engine step's load, with the CALM_STEPS count it needs.

    It looks at two steps at once, as one step's stats show passing states (taken at face value, the target
    flapped between two values on every job here):
    - a backlog is requests waiting in both: a request that reaches the engine during a step shows as waiting in
      that step's stats and is admitted in the next (such a step does not count as room either);
    - the running requests are the larger count: a step in which one ends shows one fewer, and the waiting
      request that takes its place starts in the next."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.target = 1  # before the engine's first step: the job that starts a lazy engine, none to wait on it
        self.load = EngineLoad()
        self._calm_steps = 0

    def update(self, load: EngineLoad) -> int:
        steady = replace(load, waiting=min(load.waiting, self.load.waiting), running=max(load.running, self.load.running))
        self.load = load
        self._calm_steps = self._calm_steps + 1 if load.has_room else 0
        self.target = job_target(steady, self.target, self.cap, calm=self._calm_steps >= CALM_STEPS)
        return self.target


class EngineLoadSignal:
    """The engine's latest load, kept from vLLM's per-step stats; `subscribe` to hear each step's."""

    def __init__(self) -> None:
        self._by_engine: dict[int, EngineLoad] = {}
        self._listeners: list[Callable[[EngineLoad], None]] = []
        self.latest = EngineLoad()

    def subscribe(self, listener: Callable[[EngineLoad], None]) -> None:
        """`listener(load)` after each engine step, on the loop that runs vLLM's output handler."""
        self._listeners.append(listener)

    def stat_logger(self, vllm_config, engine_index: int = 0) -> StatLoggerBase:
        """vLLM's per-engine stat logger factory: `AsyncLLM.from_engine_args(args, stat_loggers=[signal.stat_logger])`."""
        return LoadStatLogger(self, vllm_config.scheduler_config.max_num_seqs, engine_index)

    def record(self, engine_index: int, load: EngineLoad) -> None:
        self._by_engine[engine_index] = load
        loads = self._by_engine.values()
        self.latest = EngineLoad(
            running=sum(one.running for one in loads),
            waiting=sum(one.waiting for one in loads),
            kv_cache_usage=max(one.kv_cache_usage for one in loads),
            max_running=sum(one.max_running for one in loads),
        )
        for listener in self._listeners:
            listener(self.latest)


class LoadStatLogger(StatLoggerBase):
    """vLLM's stat logger interface, passing each step's scheduler stats to an EngineLoadSignal."""

    def __init__(self, signal: EngineLoadSignal, max_num_seqs: int, engine_index: int = 0) -> None:
        self.signal = signal
        self.max_num_seqs = max_num_seqs
        self.engine_index = engine_index

    def record(self, scheduler_stats: SchedulerStats | None, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        if scheduler_stats is None:  # a step whose stats went to another front-end
            return
        self.signal.record(
            engine_idx,
            EngineLoad(
                running=scheduler_stats.num_running_reqs,
                waiting=scheduler_stats.num_waiting_reqs,
                kv_cache_usage=scheduler_stats.kv_cache_usage,
                max_running=self.max_num_seqs,
            ),
        )

    def log_engine_initialized(self) -> None:
        pass  # nothing to say: vLLM's own logger reports the engine
