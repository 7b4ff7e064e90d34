"""Pre-sharded tensor-parallel weights (PRESHARD=true): each rank reads only its own part at start.

The first start with more than one rank loads the original checkpoint, then has vLLM write its
`sharded_state` files (each rank saves its own part: ShardedStateLoader.save_model) before the first job
runs. Later starts with the same key (model, revision and files, TP, PP, dtype, quantization, vLLM version)
load those: vLLM's `sharded_state` loader (`runai_streamer_sharded` on network storage).

A set is written into a temporary folder, its manifest (every file's size) last, then renamed into place;
a set without a manifest or whose files do not match it (a truncated copy) is never loaded: it is removed
and written again. Sets live next to the model cache: <model cache>/../presharded/<key>, so workers
sharing a network volume share them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import WorkerSettings
from worker.model_files.download import WEIGHT_FORMATS, model_cache_dir
from worker.model_files.storage import weight_files
from worker.vllm_api import AsyncLLM, vllm_version

log = logging.getLogger(__name__)

PRESHARD_SUBDIR = "presharded"
MANIFEST_NAME = "worker-preshard.json"
# Copied from the model folder with the shards: everything but the original weights and their index.
NOT_COPIED = (*WEIGHT_FORMATS, "*.safetensors.index.json", "*.bin.index.json", "original")


@dataclass(frozen=True)
class PendingPreshard:
    """A set to write once the engine (loaded from the original `source`) is up."""

    folder: Path
    source: Path


@dataclass(frozen=True)
class PreshardPlan:
    model_path: str  # what the engine loads
    presharded: bool  # a complete set is loaded
    pending: PendingPreshard | None = None


def preshard_key(settings: WorkerSettings, model_path: str, tp: int, pp: int) -> str:
    """A folder name: readable parts plus a hash of everything that makes shards differ."""
    files = [(file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in weight_files(model_path)]
    identity = [settings.model_name, settings.model_revision, os.path.realpath(model_path), files,
                tp, pp, settings.dtype, settings.quantization, vllm_version]
    digest = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:16]
    name = settings.model_name.strip("/").replace("/", "--")[-60:]
    return f"{name}--tp{tp}-pp{pp}-{settings.dtype}-{settings.quantization or 'noquant'}-{digest}"


def preshard_root(settings: WorkerSettings) -> Path:
    return model_cache_dir(settings).parent / PRESHARD_SUBDIR


def is_complete(folder: Path) -> bool:
    """The manifest is there and every file it lists has its size."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        return bool(manifest["files"]) and all(
            (folder / name).stat().st_size == size for name, size in manifest["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def plan_preshard(settings: WorkerSettings, model_path: str, tp: int, pp: int, given: dict[str, Any]) -> PreshardPlan:
    """Load a complete set if there is one; else load the original and write one after the start."""
    original = PreshardPlan(model_path, presharded=False)
    if not settings.preshard:
        return original
    if tp * pp == 1:
        log.info("PRESHARD=true: one rank reads the whole model anyway; loading the original checkpoint")
        return original
    if settings.in_cluster or "load_format" in given:
        why = "LOAD_FORMAT is given" if "load_format" in given else "a multi-node engine writes shards on each node"
        log.warning("PRESHARD=true is ignored: %s", why)
        return original
    folder = preshard_root(settings) / preshard_key(settings, model_path, tp, pp)
    if is_complete(folder):
        log.info("pre-sharded weights: loading %s", folder)
        return PreshardPlan(str(folder), presharded=True)
    if folder.exists():
        log.warning("pre-sharded weights at %s are incomplete (a file is missing or truncated): rebuilding", folder)
        shutil.rmtree(folder, ignore_errors=True)
    log.info("pre-sharded weights: none yet; loading the original, then writing them to %s", folder)
    return PreshardPlan(model_path, presharded=False, pending=PendingPreshard(folder, Path(model_path)))


async def write_preshard(engine: AsyncLLM, pending: PendingPreshard) -> Path | None:
    """Have every rank save its shard, copy the model's other files, write the manifest, rename into place.
    A failure is logged, not raised: the engine serves on from the original weights."""
    partial = pending.folder.with_name(f".{pending.folder.name}.partial-{os.getpid()}")
    try:
        return await _write(engine, pending, partial)
    except Exception as error:  # a full volume, a vLLM refusal: the next start tries again
        log.warning("pre-sharded weights could not be written to %s: %s: %s", pending.folder, type(error).__name__, error)
        shutil.rmtree(partial, ignore_errors=True)
        return None


async def _write(engine: AsyncLLM, pending: PendingPreshard, partial: Path) -> Path:
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    await engine.engine_core.save_sharded_state_async(str(partial))
    for entry in pending.source.iterdir():
        if any(fnmatch.fnmatch(entry.name, pattern) for pattern in NOT_COPIED):
            continue
        if entry.is_dir():
            shutil.copytree(entry, partial / entry.name)
        else:
            shutil.copyfile(entry, partial / entry.name)
    files = {path.name: path.stat().st_size for path in partial.iterdir() if path.is_file()}
    (partial / MANIFEST_NAME).write_text(json.dumps({"files": files}, indent=1) + "\n")
    try:
        os.rename(partial, pending.folder)
    except OSError:  # another worker on the volume renamed its set first: keep that one
        shutil.rmtree(partial, ignore_errors=True)
    log.info("pre-sharded weights written to %s (%d files)", pending.folder, len(files))
    return pending.folder
