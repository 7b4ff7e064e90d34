"""How the engine reads the weights, chosen for the storage they are on, through vLLM's own loaders.

- Local disk (a baked image, the container disk): vLLM's default, safetensors memory-mapped and paged in as
  tensors are read; nothing is faster there.
- A network or FUSE filesystem (RunPod's volume): every read request is a round trip, and the default's page
  faults send them one after another. vLLM's Run:ai streamer (`load_format=runai_streamer`) reads each file
  in many parallel requests into a host-memory buffer, so the round trips overlap. vLLM's own auto-prefetch
  turns on for NFS and Lustre only, and reads each file in one thread. Without the streamer package:
  vLLM's prefetch (`safetensors_load_strategy=prefetch`), which at least reads files side by side.
- Pre-sharded state (worker/startup/preshard.py): `sharded_state`, or `runai_streamer_sharded` on network storage.
- LOAD_FORMAT, SAFETENSORS_LOAD_STRATEGY or MODEL_LOADER_EXTRA_CONFIG given (env vars or ENGINE_ARGS): they
  win, nothing is chosen (LOAD_FORMAT=auto keeps vLLM's default everywhere).

Host memory: each rank on this machine streams into a buffer of its own; the buffers together may take
HOST_MEMORY_SHARE of the available memory. A model larger than that streams through a smaller buffer, and
one that leaves less than MIN_STREAM_BUFFER_BYTES per rank falls back to vLLM's default, with a log line.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from worker.model_files.storage import WeightStorage, describe_storage
from worker.vllm_api import get_cgroup_memory_limit, get_cgroup_memory_usage

log = logging.getLogger(__name__)

# The engine arguments that choose a loader: any of them given and the worker chooses nothing.
LOADER_ARGS = ("load_format", "safetensors_load_strategy", "model_loader_extra_config")
# Read requests in flight per rank on network storage: enough to cover a round trip of a few ms at the
# volume's bandwidth (docs/cold-start.md has the measurements).
NETWORK_READ_CONCURRENCY = 32
HOST_MEMORY_SHARE = 0.5
# Below this a buffer may not hold a large model's biggest tensor (a 128k-vocabulary embedding).
MIN_STREAM_BUFFER_BYTES = 4 * 2**30
STREAMER_PACKAGE = "runai_model_streamer"


@dataclass(frozen=True)
class WeightLoading:
    strategy: str  # for the start breakdown
    engine_args: dict[str, Any]


def available_host_memory() -> int:
    """Bytes of memory free for this container: the host's available memory, within the cgroup's limit."""
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    available = int(fields["MemAvailable"].split()[0]) * 1024
    limit = get_cgroup_memory_limit()
    if limit is not None:
        available = min(available, max(0, limit - (get_cgroup_memory_usage() or 0)))
    return available


def streamer_installed() -> bool:
    return importlib.util.find_spec(STREAMER_PACKAGE) is not None


def choose_weight_loading(
    storage: WeightStorage,
    given: dict[str, Any],
    *,
    ranks_here: int,
    available_bytes: int,
    has_streamer: bool,
    presharded: bool = False,
) -> WeightLoading:
    """The loader for weights on `storage`. given: the engine arguments set by env vars and ENGINE_ARGS;
    ranks_here: the engine's ranks on this machine (each loads its own copy)."""
    chosen = {name: given[name] for name in LOADER_ARGS if name in given}
    if chosen:
        return WeightLoading("given: " + " ".join(f"{name}={value}" for name, value in chosen.items()), {})
    if presharded:
        load_format = "runai_streamer_sharded" if storage.is_network and has_streamer else "sharded_state"
        return WeightLoading(load_format, {"load_format": load_format})
    if not storage.is_network:
        return WeightLoading("vllm default", {})
    if not storage.is_safetensors:
        return WeightLoading("vllm default (the streamer reads safetensors only)", {})
    if not has_streamer:
        log.warning("weights on network storage: the %s package is missing; using vLLM's prefetch", STREAMER_PACKAGE)
        args = {"safetensors_load_strategy": "prefetch", "safetensors_prefetch_num_threads": NETWORK_READ_CONCURRENCY}
        return WeightLoading("prefetch", args)
    budget = int(available_bytes * HOST_MEMORY_SHARE) // max(1, ranks_here)
    if storage.bytes > budget and budget < MIN_STREAM_BUFFER_BYTES:
        log.warning(
            "weights on network storage: %.1f GiB of host memory available for %d rank(s) leaves under %.0f GiB "
            "of streaming buffer each; loading with vLLM's default instead",
            available_bytes / 2**30, ranks_here, MIN_STREAM_BUFFER_BYTES / 2**30,
        )
        return WeightLoading("vllm default (host memory too small for the streamer)", {})
    buffer = min(storage.bytes, budget)
    if buffer < storage.bytes:
        log.info("weights on network storage: the %.1f GiB model streams through a %.1f GiB buffer per rank "
                 "(host memory)", storage.bytes / 2**30, buffer / 2**30)
    extra = {"concurrency": NETWORK_READ_CONCURRENCY, "memory_limit": buffer}
    return WeightLoading(
        f"runai_streamer (concurrency {NETWORK_READ_CONCURRENCY})",
        {"load_format": "runai_streamer", "model_loader_extra_config": extra},
    )


def plan_weight_loading(
    model_path: str, given: dict[str, Any], *, ranks_here: int, presharded: bool
) -> tuple[WeightStorage, WeightLoading]:
    """The storage of the folder the engine loads and the loader chosen for it, logged."""
    storage = describe_storage(model_path)
    loading = choose_weight_loading(
        storage,
        given,
        ranks_here=ranks_here,
        available_bytes=available_host_memory(),
        has_streamer=streamer_installed(),
        presharded=presharded,
    )
    log.info("weights: %s strategy=%s", storage.summary(), loading.strategy)
    return storage, loading
