"""GPU interconnect: parsing recorded `nvidia-smi topo -m` matrices and the PCIe warning for a TP group."""

from __future__ import annotations

from itertools import combinations

import pytest

from tests.helpers import ROOT
from tests.helpers.fake_nvml import FakeNvml
from worker.parallel.topology import (
    describe_link,
    describe_links,
    nvml_links,
    parse_topo_matrix,
    pcie_pairs,
    pcie_warning,
    select_links,
)

FIXTURES = ROOT / "tests" / "fixtures" / "topology"


def recorded(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_h100_sxm_every_pair_is_nvlink():
    links = parse_topo_matrix(recorded("h100-sxm-8x.txt"))
    assert links == {pair: "NV18" for pair in combinations(range(8), 2)}  # NIC columns ignored
    assert pcie_warning(links, [list(range(8))]) is None
    assert describe_links(links, list(range(8))) == "NVLink between every pair of GPUs in the group"
    assert describe_link("NV18") == "NVLink (18 links)"


def test_pcie_4x_matrix_codes():
    text = recorded("pcie-4x.txt")
    assert all(code in text for code in ("PIX", "PHB", "NODE", "SYS"))
    links = parse_topo_matrix(text)
    assert links == {(0, 1): "PIX", (0, 2): "PHB", (1, 2): "PHB", (0, 3): "SYS", (1, 3): "SYS", (2, 3): "SYS"}


def test_pcie_4x_warns_for_any_tp_group():
    links = parse_topo_matrix(recorded("pcie-4x.txt"))
    # Even one PCIe switch (PIX) is PCIe bandwidth: TP=2 on GPU0/GPU1 still warns.
    assert pcie_pairs(links, [0, 1]) == [(0, 1, "PIX")]
    warning = pcie_warning(links, [[0, 1, 2, 3]])
    assert warning is not None
    assert "PCIe, not NVLink" in warning and "NVLink (600-900 GB/s)" in warning and "~64 GB/s" in warning
    assert "GPU0-GPU3 PCIe across CPU sockets (SYS)" in warning
    assert "TENSOR_PARALLEL_SIZE" in warning
    assert describe_links(links, [0, 1, 2, 3]).startswith("PCIe between 6 GPU pairs (PHB, PIX, SYS)")


def test_two_gpu_bridge_with_pcie_nic_is_nvlink():
    links = parse_topo_matrix(recorded("mixed-2x.txt"))
    assert links == {(0, 1): "NV4"}
    assert pcie_warning(links, [[0, 1]]) is None


def test_nvlink_pairs_warn_only_when_the_group_crosses_pairs():
    links = parse_topo_matrix(recorded("nvlink-pairs-4x.txt"))
    assert pcie_warning(links, [[0, 1]]) is None
    assert pcie_warning(links, [[0, 1], [2, 3]]) is None  # TP=2 x PP=2: each TP group has its own bridge
    warning = pcie_warning(links, [[0, 1, 2, 3]])
    assert warning and "GPU0-GPU2" in warning and "GPU1-GPU3" in warning and "GPU0-GPU1" not in warning


def test_ansi_coloured_output_parses():
    text = recorded("nvlink-pairs-4x.txt")
    coloured = text.replace("\tGPU0\tGPU1", "\t\x1b[4mGPU0\x1b[0m\t\x1b[4mGPU1\x1b[0m", 1)
    assert parse_topo_matrix(coloured) == parse_topo_matrix(text)


def test_not_a_matrix():
    with pytest.raises(ValueError, match="GPU0"):
        parse_topo_matrix("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_select_links_renumbers_visible_gpus():
    # CUDA_VISIBLE_DEVICES=3,1: visible GPU0 is physical GPU3.
    links = select_links(parse_topo_matrix(recorded("pcie-4x.txt")), [3, 1])
    assert links == {(0, 1): "SYS"}


def test_no_topology_no_warning():
    assert pcie_warning(None, [[0, 1]]) is None
    assert describe_links(None, [0, 1]) == "unknown (GPU topology not read)"
    assert describe_links(None, [0]).startswith("single GPU")


@pytest.mark.parametrize("name", ["h100-sxm-8x.txt", "pcie-4x.txt", "mixed-2x.txt", "nvlink-pairs-4x.txt"])
def test_nvml_query_agrees_with_nvidia_smi(name):
    # NVML answered as the recorded machine would: NVLink P2P status, else the PCIe common ancestor.
    text = recorded(name)
    from_smi = parse_topo_matrix(text)
    fake = FakeNvml(count=len({gpu for pair in from_smi for gpu in pair}), topo_text=text)
    from_nvml = nvml_links(fake, list(range(fake.nvmlDeviceGetCount())))
    assert from_nvml == {pair: ("NV" if code.startswith("NV") else code) for pair, code in from_smi.items()}
