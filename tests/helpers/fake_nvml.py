"""A stand-in for the `pynvml` module (nvidia-ml-py) that simulates a pod's GPUs on a machine without any.

It answers only what worker/parallel/gpus.py asks: device count, names, memory, UUIDs and, from a recorded
`nvidia-smi topo -m` text, the NVLink/PCIe relation of each pair. Constants and the error class are the real
module's, so the code under test sees the values real NVML returns.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pynvml as real

from worker.parallel.topology import is_nvlink, parse_topo_matrix

_LEVELS = {"PIX": real.NVML_TOPOLOGY_SINGLE, "PXB": real.NVML_TOPOLOGY_MULTIPLE,
           "PHB": real.NVML_TOPOLOGY_HOSTBRIDGE, "NODE": real.NVML_TOPOLOGY_NODE, "SYS": real.NVML_TOPOLOGY_SYSTEM}


class FakeNvml(types.ModuleType):
    NVMLError = real.NVMLError
    NVML_P2P_CAPS_INDEX_NVLINK = real.NVML_P2P_CAPS_INDEX_NVLINK
    NVML_P2P_STATUS_OK = real.NVML_P2P_STATUS_OK

    def __init__(self, count: int = 0, memory_gb: float = 80, name: str = "NVIDIA H100 80GB HBM3",
                 topo_text: str | None = None, init_error: int | None = None) -> None:
        super().__init__("pynvml")
        self.memory = [int(memory_gb * 10**9)] * count
        self.names = [name] * count
        self.uuids = [f"GPU-{i:08x}-1111-2222-3333-444455556666" for i in range(count)]
        self.links = parse_topo_matrix(topo_text) if topo_text else {}
        self.init_error = init_error
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise real.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.memory)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return self.uuids.index(uuid)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self.uuids[handle]

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.names[handle].encode()  # older nvidia-ml-py versions return bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=self.memory[handle], free=self.memory[handle], used=0)

    def _code(self, a: int, b: int) -> str:
        if not self.links:  # no recorded topology: answer as a driver without the query would
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return self.links[(min(a, b), max(a, b))]

    def nvmlDeviceGetP2PStatus(self, a: int, b: int, index: int) -> int:
        assert index == real.NVML_P2P_CAPS_INDEX_NVLINK
        return real.NVML_P2P_STATUS_OK if is_nvlink(self._code(a, b)) else real.NVML_P2P_STATUS_NOT_SUPPORTED

    def nvmlDeviceGetTopologyCommonAncestor(self, a: int, b: int) -> int:
        return _LEVELS[self._code(a, b)]


def install(monkeypatch, fake: FakeNvml) -> FakeNvml:
    """Make `import pynvml` return `fake` for the rest of the test."""
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake
