"""The GPUs this process can use: count, memory, names and how they are linked.

NVML (nvidia-ml-py) is read first, honouring CUDA_VISIBLE_DEVICES as CUDA does. NVML does not initialise CUDA,
which matters: vLLM must be the first to touch CUDA in this process. No torch or vLLM import here.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from typing import Any

from config.environment import cuda_visible_devices
from worker.parallel import topology
from worker.parallel.memory import format_bytes


@dataclass(frozen=True)
class GpuInventory:
    """Visible GPUs; count 0 means none (vLLM runs on its CPU backend) unless `error` says they are unreadable."""

    count: int
    memory_bytes: tuple[int, ...] = ()  # total memory of each GPU, in visible order; empty if unknown
    names: tuple[str, ...] = ()
    links: topology.Links | None = field(default=None, compare=False)  # keyed by visible position
    source: str = "none"  # nvml, nvidia-smi, torch, cli or none
    error: str | None = None  # NVIDIA GPUs are present but could not be read

    @property
    def min_memory_bytes(self) -> int | None:
        # Tensor parallelism splits evenly, so the smallest GPU decides what fits.
        return min(self.memory_bytes) if self.memory_bytes else None

    def describe(self) -> str:
        if self.error:
            return f"GPUs unreadable ({self.error})"
        if self.count == 0:
            return "no GPUs (vLLM CPU backend)"
        name = f" x {self.names[0]}" if self.names and len(set(self.names)) == 1 else " GPUs"
        memory = f" ({format_bytes(self.min_memory_bytes)})" if self.min_memory_bytes else ""
        return f"{self.count}{name}{memory}"


def visible_gpus() -> GpuInventory:
    """The GPUs CUDA will show this process (NVML first, torch as a fallback); count 0 without NVIDIA GPUs."""
    try:
        import pynvml
    except ImportError:
        return _torch_inventory()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        if _nvidia_device_files():
            return GpuInventory(0, source="nvml", error=f"NVML could not start: {error}")
        return GpuInventory(0)  # no NVIDIA driver: a CPU machine
    try:
        return _nvml_inventory(pynvml)
    except pynvml.NVMLError as error:
        return GpuInventory(0, source="nvml", error=f"NVML query failed: {error}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _nvml_inventory(pynvml: Any) -> GpuInventory:
    visible = cuda_visible_devices()
    if visible and visible.strip().startswith("MIG-"):
        # A MIG slice: NVML resolves its UUID to a handle with the slice's own memory (CUDA shows one slice).
        handle = pynvml.nvmlDeviceGetHandleByUUID(visible.split(",")[0].strip())
        return GpuInventory(
            count=1,
            memory_bytes=(int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),),
            names=(_text(pynvml.nvmlDeviceGetName(handle)),),
            source="nvml",
        )
    total = pynvml.nvmlDeviceGetCount()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(total)]
    selected = select_visible(visible, [_uuid(pynvml, h) for h in handles])
    chosen = [handles[i] for i in selected]
    links = None
    if len(chosen) > 1:
        try:
            links = topology.nvml_links(pynvml, chosen)
        except pynvml.NVMLError:
            links = topology.smi_links(selected)
    return GpuInventory(
        count=len(chosen),
        memory_bytes=tuple(int(pynvml.nvmlDeviceGetMemoryInfo(h).total) for h in chosen),
        names=tuple(_text(pynvml.nvmlDeviceGetName(h)) for h in chosen),
        links=links,
        source="nvml",
    )


def select_visible(cuda_visible_devices: str | None, uuids: list[str]) -> list[int]:
    """NVML indices CUDA will use, in CUDA's order, for a CUDA_VISIBLE_DEVICES value (None: all of them).

    Entries are indices or (unique prefixes of) GPU- UUIDs; like CUDA, the list ends at the first invalid entry.
    """
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        index = _resolve_entry(entry, uuids)
        if index is None or index in chosen:
            break
        chosen.append(index)
    return chosen


def _resolve_entry(entry: str, uuids: list[str]) -> int | None:
    if entry.isdigit():
        index = int(entry)
        return index if index < len(uuids) else None
    if entry.startswith("GPU-"):
        matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
        return matches[0] if len(matches) == 1 else None
    return None


def _uuid(pynvml: Any, handle: Any) -> str:
    return _text(pynvml.nvmlDeviceGetUUID(handle))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _nvidia_device_files() -> list[str]:
    # /dev/nvidia0... exist when a GPU is passed into the container, even if the driver cannot be reached.
    return glob.glob("/dev/nvidia[0-9]*")


def _torch_inventory() -> GpuInventory:
    # Only without nvidia-ml-py. torch.cuda.device_count() does not initialise CUDA; reading memory would,
    # which would break vLLM's worker processes, so memory stays unknown here.
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or a broken CUDA install: no usable GPUs either way
        return GpuInventory(0)
    return GpuInventory(count, source="torch")
