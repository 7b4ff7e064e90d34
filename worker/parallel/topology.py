"""How the GPUs of a pod talk to each other: NVLink or PCIe.

Links are the codes of `nvidia-smi topo -m` (NV18, PIX, PXB, PHB, NODE, SYS), read from NVML or parsed from that
command's text, and keyed by pairs of GPU positions. Tensor parallelism all-reduces twice per layer, so a TP
group that crosses PCIe loses much of its speed-up (the guide: NVLink 600-900 GB/s, PCIe ~64 GB/s).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from typing import Any

Links = dict[tuple[int, int], str]

# What each PCIe code of `nvidia-smi topo -m` means (from its legend).
PCIE_LINKS = {
    "PIX": "PCIe, one switch",
    "PXB": "PCIe, several switches",
    "PHB": "PCIe through the CPU's host bridge",
    "NODE": "PCIe between host bridges of one NUMA node",
    "SYS": "PCIe across CPU sockets",
    "SOC": "PCIe across CPU sockets",  # older drivers' name for SYS
}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GPU = re.compile(r"GPU(\d+)$")


def parse_topo_matrix(text: str) -> Links:
    """GPU-to-GPU links of an `nvidia-smi topo -m` text, keyed by (GPU index, GPU index) with the lower first."""
    columns: list[int] = []
    links: Links = {}
    for raw in text.splitlines():
        line = _ANSI.sub("", raw)
        if line.strip().startswith("Legend"):
            break
        cells = line.split()
        if not cells:
            continue
        if not columns:
            # Header: GPU columns come first, then NICs and the affinity columns.
            for cell in cells:
                match = _GPU.match(cell)
                if not match:
                    break
                columns.append(int(match.group(1)))
            continue
        row = _GPU.match(cells[0])
        if not row:
            continue  # a NIC row
        a = int(row.group(1))
        for b, code in zip(columns, cells[1:]):
            if a != b:
                links[(min(a, b), max(a, b))] = code
    if not columns:
        raise ValueError("not an `nvidia-smi topo -m` matrix: no GPU0 column header")
    return links


def is_nvlink(code: str) -> bool:
    return code.startswith("NV")


def describe_link(code: str) -> str:
    if is_nvlink(code):
        count = code[2:]
        return f"NVLink ({count} links)" if count.isdigit() else "NVLink"
    return f"{PCIE_LINKS.get(code, 'PCIe')} ({code})"


def pcie_pairs(links: Links, group: Sequence[int]) -> list[tuple[int, int, str]]:
    """Pairs of `group` that talk over PCIe rather than NVLink (pairs with no known link are left out)."""
    found = []
    for i, a in enumerate(group):
        for b in group[i + 1 :]:
            code = links.get((min(a, b), max(a, b)))
            if code and not is_nvlink(code):
                found.append((a, b, code))
    return found


def pcie_warning(links: Links | None, groups: Sequence[Sequence[int]]) -> str | None:
    """The warning to log when GPUs of a tensor-parallel group talk over PCIe, else None."""
    if not links:
        return None
    pairs = [pair for group in groups for pair in pcie_pairs(links, group)]
    if not pairs:
        return None
    shown = ", ".join(f"GPU{a}-GPU{b} {describe_link(code)}" for a, b, code in pairs[:6])
    more = f" and {len(pairs) - 6} more" if len(pairs) > 6 else ""
    return (
        f"Tensor-parallel GPUs talk over PCIe, not NVLink: {shown}{more}. Every layer all-reduces twice across "
        "the group, and PCIe (~64 GB/s) is 10x slower than NVLink (600-900 GB/s), which can cancel the speed-up "
        "of tensor parallelism. Prefer NVLink GPUs (SXM, e.g. H100 SXM) for TENSOR_PARALLEL_SIZE > 1, or a "
        "smaller TENSOR_PARALLEL_SIZE if the model fits."
    )


def describe_links(links: Links | None, group: Sequence[int]) -> str:
    """One line on the interconnect of `group`, for the plan output."""
    if len(group) < 2:
        return "single GPU: no GPU-to-GPU traffic"
    if not links:
        return "unknown (GPU topology not read)"
    pairs = pcie_pairs(links, group)
    if not pairs:
        return "NVLink between every pair of GPUs in the group"
    codes = sorted({code for _, _, code in pairs})
    return f"PCIe between {len(pairs)} GPU pairs ({', '.join(codes)}): slow for tensor parallelism"


# NVML's common-ancestor levels, written as `nvidia-smi topo -m` writes them.
_NVML_LEVEL_CODES = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}


def nvml_links(pynvml: Any, handles: Sequence[Any]) -> Links:
    """Links between NVML device handles, keyed by their positions in `handles`."""
    links: Links = {}
    for i, a in enumerate(handles):
        for j in range(i + 1, len(handles)):
            b = handles[j]
            # The same probe vLLM uses to decide whether its custom all-reduce can assume NVLink.
            status = pynvml.nvmlDeviceGetP2PStatus(a, b, pynvml.NVML_P2P_CAPS_INDEX_NVLINK)
            if status == pynvml.NVML_P2P_STATUS_OK:
                links[(i, j)] = "NV"
            else:
                level = pynvml.nvmlDeviceGetTopologyCommonAncestor(a, b)
                links[(i, j)] = _NVML_LEVEL_CODES.get(int(level), "SYS")
    return links


def smi_links(physical_indices: Sequence[int], timeout_s: float = 10.0) -> Links | None:
    """Links from `nvidia-smi topo -m`, re-keyed by position in `physical_indices`; None if it cannot run."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=timeout_s, check=True
        )
        return select_links(parse_topo_matrix(result.stdout), physical_indices)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def select_links(links: Links, physical_indices: Sequence[int]) -> Links:
    """Keep the links among `physical_indices` (nvidia-smi numbering), keyed by position in that list."""
    selected: Links = {}
    for i, a in enumerate(physical_indices):
        for j in range(i + 1, len(physical_indices)):
            b = physical_indices[j]
            code = links.get((min(a, b), max(a, b)))
            if code:
                selected[(i, j)] = code
    return selected
