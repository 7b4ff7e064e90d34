"""What the tests share: paths inside the repo, the reference model configs and their expected TP sizes,
and helpers to run the worker. Every test module takes its helpers from here (or a module beside this one);
nothing reads outside the repository."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# config.json shapes of public models (copied from the model cards; file name = repo id with "/" as "--").
MODEL_CONFIGS = FIXTURES / "hub-configs"
# Quantized checkpoints' config.json, written for these tests.
QUANTIZED_CONFIGS = FIXTURES / "model-configs"
TOPOLOGY = FIXTURES / "topology"
TINY_MODEL_DIR = ROOT / ".models" / "tiny-llama"
# SmolLM2-135M-Instruct, made by devtools/real_model.py (scripts/setup.sh makes it at its default path).
REAL_MODEL_DIR = ROOT / ".models" / "smollm2-135m-instruct"


def reference_config(name: str) -> dict:
    folder = QUANTIZED_CONFIGS if (QUANTIZED_CONFIGS / f"{name}.json").exists() else MODEL_CONFIGS
    return json.loads((folder / f"{name}.json").read_text())


# Worked out by hand: candidates are the divisors of the attention heads; keep those where the KV heads
# split (kv % tp == 0) or replicate (tp % kv == 0) evenly and the MLP width divides.
VALID_SIZES = {
    # 32 heads, 8 KV, MLP 14336 = 2^11 x 7
    "meta-llama--Meta-Llama-3-8B": [1, 2, 4, 8, 16, 32],
    # 64 heads, 8 KV, MLP 28672 = 2^12 x 7
    "meta-llama--Meta-Llama-3-70B": [1, 2, 4, 8, 16, 32, 64],
    # 128 heads, 8 KV, MLP 53248 = 2^12 x 13
    "meta-llama--Llama-3.1-405B": [1, 2, 4, 8, 16, 32, 64, 128],
    # 32 heads, 8 KV, MLP 14336
    "mistralai--Mistral-7B-v0.3": [1, 2, 4, 8, 16, 32],
    # 32 heads, 8 KV, expert MLP 14336: each of the 8 experts splits like a dense MLP
    "mistralai--Mixtral-8x7B-v0.1": [1, 2, 4, 8, 16, 32],
    # 28 heads (1,2,4,7,14,28), 4 KV: 7 and 14 neither split nor replicate 4; MLP 18944 = 2^8 x 74 rules out 28
    "Qwen--Qwen2.5-7B-Instruct": [1, 2, 4],
    # 64 heads, 8 KV, MLP 29568 = 2^7 x 3 x 7 x 11
    "Qwen--Qwen2.5-72B-Instruct": [1, 2, 4, 8, 16, 32, 64],
    # 14 heads (1,2,7,14), 2 KV: 7 fails; MLP 4864 = 2^8 x 19 rules out 14
    "Qwen--Qwen2.5-0.5B-Instruct": [1, 2],
    # 9 heads (1,3,9), 3 KV: 9 replicates 3 evenly, but MLP 1536 = 2^9 x 3 rules it out
    "HuggingFaceTB--SmolLM2-135M-Instruct": [1, 3],
}


# Worked out by hand, as above, then no GPU's share may cut through a quantization scale (vLLM 0.32): the inputs
# of the row-parallel layers (attention output = heads x head_dim, the dense MLP) split by TP must hold whole
# FP8 blocks / AWQ groups; each GPU's share of an expert's MLP must too, unless vLLM can fall back to finer
# scales: gcd(block or group, expert MLP per GPU, hidden size) >= 32.
QUANTIZED_VALID_SIZES = {
    # 64 heads, 4 KV heads (split at 1, 2, 4; replicated from 8), experts 1536 = 2^9 x 3: 1..64 before blocks.
    # Attention output 64 x 128 = 8192: 8192 / 64 = 128 is whole blocks. Expert MLP per GPU vs blocks of 128:
    # 1536, 768, 384 whole; 192 (TP 8): gcd(128, 192, 4096) = 64 -> refined to 64x64 blocks;
    # 96 (TP 16): gcd = 32 -> 32x32; 48 (TP 32): gcd = 16, 24 (TP 64): gcd = 8 -> under 32, rejected.
    "Qwen--Qwen3-235B-A22B-FP8": [1, 2, 4, 8, 16],
    # 64 heads, 8 KV heads, MLP 29568 = 128 x 231 (231 = 3 x 7 x 11, odd): 1..64 before groups.
    # down_proj input per GPU 29568 / 2 = 14784 = 115.5 groups of 128: every TP > 1 cuts a group.
    "Qwen2.5-72B-AWQ-unpadded-mlp": [1],
}


class FatalRecorder:
    """Stands in for process exit inside the test process (tests/transports/queue/test_platform.py checks the real exit)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def job_error(chunks: list[Any]) -> dict[str, Any]:
    """The structured error of a failed job (its last chunk)."""
    assert chunks and "error" in chunks[-1], f"expected an error, got {chunks!r}"
    return json.loads(chunks[-1]["error"])


def worker_env(tiny_model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_WEBHOOK")}
    env.update(
        MODEL_NAME=str(tiny_model),
        ENFORCE_EAGER="true",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_local_mode(tiny_model: Path, job_input: dict, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`python handler.py --test_input ...`: the SDK's local test mode, in a subprocess."""
    return subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps({"input": job_input})],
        cwd=ROOT,
        env=worker_env(tiny_model, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


GREEDY_JOB = {"prompt": "The capital of France is", "sampling_params": {"temperature": 0, "max_tokens": 32}}


def job_result(stdout: str) -> dict:
    """The SDK's local mode logs `Job result: {...}` (a Python dict repr) once the job ends."""
    match = re.search(r"Job result: (\{.*\})\s*$", stdout, re.MULTILINE)
    assert match, stdout[-3000:]
    return ast.literal_eval(match.group(1))
