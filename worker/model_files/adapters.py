"""LoRA adapters (LORA_MODULES): fetched like the model, and the engine's LoRA sizes read from them.

`ensure_adapters(settings)` turns each adapter's path into a local folder before the engine starts: a local
or network-volume folder as is, a hub repo id through the model's own download code (same cache, same
HF_TOKEN, same error messages). `lora_engine_args` sizes vLLM's enable_lora / max_loras / max_lora_rank
from the adapters' ranks (adapter_config.json `r`), leaving any the user set in ENGINE_ARGS alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import WorkerSettings
from worker.model_files.download import (
    ModelDownloadError,
    download_model,
    model_cache_dir,
)
from worker.model_files.hub import looks_local

log = logging.getLogger(__name__)

# The ranks vLLM's LoRAConfig accepts for max_lora_rank (vllm/config/lora.py MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# max_loras (adapters one batch may mix) when ENGINE_ARGS does not set it: every adapter, up to this many;
# each slot costs GPU memory (see worker/parallel/memory.py lora_bytes).
DEFAULT_MAX_LORAS_CAP = 8
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter ready to load: the name requests use, its local folder and its rank."""

    name: str
    path: str
    rank: int


class AdapterError(ModelDownloadError):
    """An adapter could not be fetched or read; the message names it, its LORA_MODULES entry and the fix."""


def ensure_adapters(settings: WorkerSettings) -> list[Adapter]:
    """Every LORA_MODULES adapter as a local folder with its rank, in the order given."""
    adapters = []
    for module in settings.lora_modules:
        where = f"LORA_MODULES adapter {module.name!r} ({module.path})"
        if looks_local(module.path):
            path = str(Path(module.path).expanduser())
            if not Path(path).is_dir():
                raise AdapterError(f"{where}: no such folder; give a folder holding {ADAPTER_CONFIG} or a hub repo id")
        else:
            try:
                path = download_model(
                    module.path, revision=None, token=settings.hub_token, cache_dir=model_cache_dir(settings)
                )
            except ModelDownloadError as error:
                raise AdapterError(f"{where}: {error}") from None
        adapters.append(Adapter(module.name, path, adapter_rank(path, where)))
        log.info("LoRA adapter %s: %s (rank %d)", module.name, path, adapters[-1].rank)
    return adapters


def adapter_rank(path: str, where: str) -> int:
    """The largest rank in the adapter's adapter_config.json (`r`, and any per-module `rank_pattern`)."""
    config_path = Path(path) / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise AdapterError(
            f"{where}: {config_path} is missing, so this is not a PEFT LoRA adapter; point it at the folder "
            f"(or repo) that holds {ADAPTER_CONFIG} and adapter_model.safetensors"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise AdapterError(f"{where}: cannot read {config_path}: {error}") from None
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    ranks = [rank for rank in ranks if isinstance(rank, int) and rank > 0]
    if not ranks:
        raise AdapterError(f"{where}: {config_path} has no LoRA rank `r`; is it a LoRA adapter?")
    return max(ranks)


def lora_engine_args(adapters: list[Adapter], engine_args: dict[str, Any]) -> dict[str, Any]:
    """enable_lora, max_loras and max_lora_rank for vLLM, each only where ENGINE_ARGS leaves it unset."""
    if not adapters:
        return {}
    largest = max(adapter.rank for adapter in adapters)
    set_rank = engine_args.get("max_lora_rank")
    if set_rank is not None and set_rank < largest:
        too_big = ", ".join(f"{a.name} (rank {a.rank})" for a in adapters if a.rank > set_rank)
        raise AdapterError(
            f"ENGINE_ARGS max_lora_rank={set_rank} is below the rank of LORA_MODULES adapter(s) {too_big}: "
            f"raise it to at least {largest}, or leave it out to size it from the adapters"
        )
    sized = {
        "enable_lora": True,
        "max_loras": min(len(adapters), DEFAULT_MAX_LORAS_CAP),
        # The smallest rank vLLM accepts that holds the largest adapter.
        "max_lora_rank": next((rank for rank in VLLM_LORA_RANKS if rank >= largest), largest),
    }
    return {name: value for name, value in sized.items() if name not in engine_args}


def lora_sizes(adapters: list[Adapter], engine_args: dict[str, Any]) -> tuple[int, int]:
    """(max_loras, max_lora_rank) the engine will run with: what the memory plan counts."""
    if not adapters and not engine_args.get("enable_lora"):
        return 0, 0
    # 1 and 16: vLLM's own LoRAConfig defaults, for enable_lora without LORA_MODULES.
    args = {"max_loras": 1, "max_lora_rank": 16, **lora_engine_args(adapters, engine_args), **engine_args}
    return int(args["max_loras"]), int(args["max_lora_rank"])
