"""`python -m worker.plan`, run as a user would, on the reference configs, a local folder and a hub id."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import (
    MODEL_CONFIGS,
    QUANTIZED_CONFIGS,
    QUANTIZED_VALID_SIZES,
    ROOT,
    TOPOLOGY,
    VALID_SIZES,
)
from tests.helpers.fake_hub import write_hub_cache


def plan(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([sys.executable, "-m", "worker.plan", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def table_rows(output: str) -> dict[int, str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("TP "))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows[int(line.split()[0])] = line
    return rows


@pytest.mark.parametrize("name", sorted(VALID_SIZES))
def test_table_lists_every_valid_size(name):
    result = plan(str(MODEL_CONFIGS / f"{name}.json"), "--gpus", "8", "--gpu-memory", "80")
    rows = table_rows(result.stdout)
    assert sorted(rows) == VALID_SIZES[name]
    recommended = [tp for tp, row in rows.items() if "<- recommended" in row]
    if result.returncode == 0:
        assert recommended == [max(tp for tp in VALID_SIZES[name] if tp <= 8)]
        assert f"Recommended: TENSOR_PARALLEL_SIZE={recommended[0]}" in result.stdout
    else:
        assert name == "meta-llama--Llama-3.1-405B" and recommended == []
    for tp, row in rows.items():
        if tp > 8:
            assert row.endswith(f"no: needs {tp} GPUs, the pod has 8")


def test_llama_70b_table():
    result = plan(str(MODEL_CONFIGS / "meta-llama--Meta-Llama-3-70B.json"), "--gpus", "8", "--gpu-memory", "80")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "70.55 B parameters" in out and "weights 141.1 GB in total" in out
    rows = table_rows(out)
    assert rows[1].split()[2:4] == ["141.1", "GB"] and "no: weights need 141.1 GB per GPU" in rows[1]
    assert "no: weights need 70.6 GB per GPU" in rows[2]
    assert rows[4].endswith("yes")
    assert rows[8].split()[:3] == ["8", "8", "17.6"] and "423,842" not in rows[8]
    assert "1,278,302  yes   <- recommended" in rows[8]
    # The 8-bit column explains the guide's 38 / 20 / 12 GB per GPU.
    assert rows[2].split()[4:6] == ["36.3", "GB"] and rows[8].split()[4:6] == ["9.1", "GB"]
    assert "the guide's 70B table" in out


def test_405b_needs_8bit_or_two_nodes():
    model = str(MODEL_CONFIGS / "meta-llama--Llama-3.1-405B.json")
    result = plan(model, "--gpus", "8", "--gpu-memory", "80")
    assert result.returncode == 1
    assert "No configuration fits" in result.stdout
    assert "QUANTIZATION=fp8" in result.stdout and "more than one 8-GPU node" in result.stdout
    fp8 = plan(model, "--gpus", "8", "--gpu-memory", "80", "--dtype", "fp8")
    assert fp8.returncode == 0, fp8.stdout
    assert "<- recommended" in table_rows(fp8.stdout)[8]
    assert "8-bit/GPU" not in fp8.stdout  # already 8-bit: no extra column


def test_explicit_invalid_size():
    result = plan(str(MODEL_CONFIGS / "Qwen--Qwen2.5-7B-Instruct.json"), "--gpus", "8", "--gpu-memory", "80",
                  "--tensor-parallel-size", "8")
    assert result.returncode == 1
    assert "28 attention heads don't split 8 ways" in result.stdout
    assert "valid sizes that fit: 1, 2, 4" in result.stdout


def test_quantized_checkpoints_explain_the_sizes_they_rule_out():
    awq_model = str(QUANTIZED_CONFIGS / "Qwen2.5-72B-AWQ-unpadded-mlp.json")
    awq = plan(awq_model, "--gpus", "8", "--gpu-memory", "80")
    assert awq.returncode == 0, awq.stdout
    assert sorted(table_rows(awq.stdout)) == QUANTIZED_VALID_SIZES["Qwen2.5-72B-AWQ-unpadded-mlp"]
    assert "MLP 29568, awq groups of 128" in awq.stdout and "awq (4-bit weights): weights 40.1 GB" in awq.stdout
    assert "(8: the MLP per GPU 3696 (29568 / 8) is not a multiple of the AWQ group size 128)" in awq.stdout
    two = plan(awq_model, "--gpus", "8", "--gpu-memory", "80", "--tensor-parallel-size", "2")
    assert two.returncode == 1
    assert "the MLP per GPU 14784 (29568 / 2) is not a multiple of the AWQ group size 128" in two.stdout

    fp8 = plan(str(QUANTIZED_CONFIGS / "Qwen--Qwen3-235B-A22B-FP8.json"), "--gpus", "8", "--gpu-memory", "80")
    assert fp8.returncode == 0, fp8.stdout
    rows = table_rows(fp8.stdout)
    assert sorted(rows) == QUANTIZED_VALID_SIZES["Qwen--Qwen3-235B-A22B-FP8"]
    assert "<- recommended" in rows[8]
    assert "Warning: TENSOR_PARALLEL_SIZE=8 gives each GPU 192 of every expert's 1536-wide MLP" in fp8.stdout


def test_pipeline_stages_must_use_every_gpu():
    result = plan(str(MODEL_CONFIGS / "meta-llama--Meta-Llama-3-70B.json"), "--gpus", "8", "--gpu-memory", "80",
                  "--pipeline-parallel-size", "3")
    assert result.returncode == 1
    assert "TENSOR_PARALLEL_SIZE=auto -> 2 x PIPELINE_PARALLEL_SIZE=3 = 6 GPUs, but this pod has 8" in result.stdout
    assert "TENSOR_PARALLEL_SIZE=4 x PIPELINE_PARALLEL_SIZE=2" in result.stdout
    # The table says so row by row: TP 1 and 2 fit in memory but leave GPUs idle.
    assert table_rows(result.stdout)[2].endswith("no: TP x PP must equal the 8 GPUs")


def test_options_change_the_plan():
    model = str(MODEL_CONFIGS / "Qwen--Qwen2.5-7B-Instruct.json")
    short = plan(model, "--gpus", "1", "--gpu-memory", "20", "--max-model-len", "8192")
    assert short.returncode == 0 and "MAX_MODEL_LEN 8,192" in short.stdout
    full = plan(model, "--gpus", "1", "--gpu-memory", "20")
    assert full.returncode == 1 and "a shorter MAX_MODEL_LEN" in full.stdout
    # On 21 GB, ~29k tokens of 16-bit KV cache fit, not one 32k sequence; an FP8 KV cache halves a token.
    assert plan(model, "--gpus", "1", "--gpu-memory", "21").returncode == 1
    assert plan(model, "--gpus", "1", "--gpu-memory", "21", "--kv-cache-dtype", "fp8").returncode == 0


def test_pcie_topology_is_reported():
    model = str(MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json")
    result = plan(model, "--gpus", "4", "--gpu-memory", "48", "--topology", str(TOPOLOGY / "pcie-4x.txt"))
    assert result.returncode == 0
    assert "Warning: Tensor-parallel GPUs talk over PCIe, not NVLink" in result.stdout
    assert "Interconnect: PCIe between 6 GPU pairs (PHB, PIX, SYS)" in result.stdout
    nvlink = plan(model, "--gpus", "8", "--gpu-memory", "80", "--topology", str(TOPOLOGY / "h100-sxm-8x.txt"))
    assert "Interconnect: NVLink between every pair of GPUs in the group" in nvlink.stdout
    assert "Warning" not in nvlink.stdout


def test_local_model_folder(tmp_path):
    (tmp_path / "config.json").write_text((MODEL_CONFIGS / "mistralai--Mixtral-8x7B-v0.1.json").read_text())
    result = plan(str(tmp_path), "--gpus", "2", "--gpu-memory", "80")
    assert result.returncode == 0, result.stdout
    assert "46.70 B parameters" in result.stdout and "8 experts x MLP 14336" in result.stdout
    assert "<- recommended" in table_rows(result.stdout)[2]


def test_hub_id_reads_only_config_json(tmp_path):
    write_hub_cache(tmp_path, "Qwen/Qwen2.5-72B-Instruct",
                    json.loads((MODEL_CONFIGS / "Qwen--Qwen2.5-72B-Instruct.json").read_text()))
    result = plan("Qwen/Qwen2.5-72B-Instruct", "--gpus", "4", "--gpu-memory", "80", HF_HUB_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Model      Qwen/Qwen2.5-72B-Instruct: 72.71 B parameters" in result.stdout


def test_unreadable_model_and_missing_pod(tmp_path):
    missing = plan("org/not-cached", "--gpus", "1", "--gpu-memory", "80", HF_HUB_CACHE=str(tmp_path))
    assert missing.returncode == 2 and "is not in the cache" in missing.stderr
    no_gpus = plan(str(MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json"))
    assert no_gpus.returncode != 0 and "pass --gpus N and --gpu-memory GB" in no_gpus.stderr
    bad_size = plan(str(MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json"), "--tensor-parallel-size", "two")
    assert bad_size.returncode == 2 and "'auto' or a whole number" in bad_size.stderr

