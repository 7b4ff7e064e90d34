"""Everything before the engine is built, in order: the model and its LoRA adapters fetched, the layout planned
and logged, the media policy installed, the compile caches placed, and the engine arguments built. The one
path from settings to engine arguments: node 0's engine and a cluster follower's workers both take it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from config.settings import WorkerSettings
from worker.media.connector import CONNECTOR_NAME, install_media_policy
from worker.model_files.adapters import (
    Adapter,
    ensure_adapters,
    lora_engine_args,
    lora_sizes,
)
from worker.model_files.config_json import read_model_config
from worker.model_files.download import ensure_model
from worker.parallel.layout import plan_parallelism, visible_gpus
from worker.startup.compile_cache import use_volume_compile_cache
from worker.startup.engine_args import build_engine_args, parsed_engine_arg_env
from worker.startup.environment import set_variable
from worker.startup.preshard import PendingPreshard, plan_preshard
from worker.startup.start_phases import StartPhases
from worker.startup.weight_loading import plan_weight_loading
from worker.vllm_api import AsyncEngineArgs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedEngine:
    args: AsyncEngineArgs
    adapters: list[Adapter]  # LORA_MODULES, as fetched
    preshard: PendingPreshard | None = None  # pre-sharded weights to write once the engine is up


def prepare_engine(settings: WorkerSettings, phases: StartPhases | None = None) -> PreparedEngine:
    """The engine arguments and adapters, everything they need on disk and in the environment done;
    `phases` gets the seconds of the download and the plan."""

    started = time.perf_counter()
    model_path = ensure_model(settings)
    adapters = ensure_adapters(settings)
    downloaded = time.perf_counter()
    model_config = read_model_config(model_path, revision=None, token=settings.hub_token)
    install_media_policy(settings)  # vLLM's media fetching obeys the worker's URL policy
    set_variable("VLLM_MEDIA_CONNECTOR", CONNECTOR_NAME)
    # LoRA sizes given as env vars (MAX_LORAS, ...) or in ENGINE_ARGS win over those read from the adapters.
    given = {**parsed_engine_arg_env(), **settings.engine_args}
    sized = {"limit_mm_per_prompt": {"image": settings.max_images_per_prompt}, **lora_engine_args(adapters, given)}
    gpus = visible_gpus()
    plan = plan_parallelism(settings, model_config, gpus, lora=lora_sizes(adapters, given))
    log.info("parallelism: %s", plan.summary)
    for warning in plan.warnings:
        log.warning("%s", warning)
    tp, pp = plan.tensor_parallel_size, plan.pipeline_parallel_size
    preshard = plan_preshard(settings, model_path, tp, pp, given)
    storage, loading = plan_weight_loading(
        preshard.model_path, given, ranks_here=max(1, tp * pp // settings.cluster_nodes), presharded=preshard.presharded
    )
    sized.update(loading.engine_args)
    args = build_engine_args(settings, preshard.model_path, tp, pp, sized=sized)
    # Before the engine starts: its processes read the cache folders from the environment.
    use_volume_compile_cache(settings, plan.tensor_parallel_size, plan.pipeline_parallel_size, gpus.names)
    if phases is not None:
        phases.add("download", downloaded - started)
        phases.add("plan", time.perf_counter() - downloaded)
        phases.note(f"{storage.summary()} strategy={loading.strategy}")
    log.info(
        "building the vLLM engine: model=%s tensor_parallel_size=%d pipeline_parallel_size=%d dtype=%s",
        settings.model_name,
        plan.tensor_parallel_size,
        plan.pipeline_parallel_size,
        settings.dtype,
    )
    return PreparedEngine(args, adapters, preshard.pending)
