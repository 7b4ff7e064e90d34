"""The plan check (worker/startup/fitness.py) as a runpod fitness check. The SDK runs registered checks once
at start (on the platform, not in local test mode) and exits the worker with the check's message in the log
if one raises."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import runpod
from runpod.serverless.modules.rp_fitness import clear_fitness_checks, run_fitness_checks

from config.settings import WorkerSettings
from worker.startup.fitness import check_parallel_plan


def register_fitness_checks(settings: WorkerSettings) -> Callable[[], None]:
    """Register the plan check with the runpod SDK; call once at start. Returns the registered check."""

    def parallel_plan_fits_pod() -> None:
        check_parallel_plan(settings)

    return runpod.serverless.register_fitness_check(parallel_plan_fits_pod)


def run_fitness_checks_now() -> None:
    """With WARM_START, run the SDK's fitness checks (ours and its GPU memory test) before vLLM takes the
    GPUs' memory, not after as `start` would; they exit the worker on failure, as in the SDK."""
    asyncio.run(run_fitness_checks())
    clear_fitness_checks()  # passed; `start` finds none left to run again
