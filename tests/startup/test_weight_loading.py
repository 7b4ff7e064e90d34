"""Weight loading on real engines (`python handler.py` in the SDK's local mode): the emulated network volume
gets the network loader and the same greedy text as local disk; PRESHARD=true at TENSOR_PARALLEL_SIZE=2
writes vLLM's sharded state on the first start and loads it on the next, with the original's greedy text."""

from __future__ import annotations

import json

import pytest

from config.settings import load_settings
from devtools.slow_volume import SlowVolume, fuse_unavailable_reason
from tests.helpers import GREEDY_JOB, job_result, run_local_mode
from worker.startup.preshard import MANIFEST_NAME, is_complete, preshard_key, preshard_root


@pytest.mark.slow
@pytest.mark.skipif(fuse_unavailable_reason() is not None, reason=f"no FUSE mount here: {fuse_unavailable_reason()}")
def test_weights_on_the_emulated_volume_stream_and_answer_as_from_local_disk(tiny_model, tmp_path, run_job):
    local = run_job(GREEDY_JOB)[0]
    with SlowVolume(tiny_model, tmp_path / "volume", latency_ms=2) as volume:
        done = run_local_mode(tiny_model, GREEDY_JOB, MODEL_NAME=str(tmp_path / "volume"))
        served = volume.stats()
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    breakdown = next(line for line in log.splitlines() if "engine ready in" in line)
    assert "storage=network (fuse.slow_volume" in breakdown and "strategy=runai_streamer" in breakdown, breakdown
    assert "weights_load_s=" in breakdown, breakdown
    assert served.bytes >= (tiny_model / "model.safetensors").stat().st_size
    output = job_result(done.stdout)["output"]
    assert output["choices"][0]["text"] == local["choices"][0]["text"]


@pytest.mark.slow
def test_presharded_tensor_parallel_2_start_answers_as_the_original(tiny_model, tmp_path):
    env = dict(TENSOR_PARALLEL_SIZE="2", VLLM_CPU_OMP_THREADS_BIND="0|1", PRESHARD="true",
               MODEL_CACHE_DIR=str(tmp_path / "hub"))
    settings = load_settings(model_name=str(tiny_model), model_cache_dir=env["MODEL_CACHE_DIR"], preshard=True)
    folder = preshard_root(settings) / preshard_key(settings, str(tiny_model), 2, 1)

    first = run_local_mode(tiny_model, GREEDY_JOB, **env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    assert "pre-sharded weights written to" in first.stdout + first.stderr
    assert is_complete(folder)
    shards = json.loads((folder / MANIFEST_NAME).read_text())["files"]
    assert {"model-rank-0-part-0.safetensors", "model-rank-1-part-0.safetensors"} <= set(shards)
    assert not list(folder.parent.glob(".*partial*"))

    second = run_local_mode(tiny_model, GREEDY_JOB, **env)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert f"pre-sharded weights: loading {folder}" in log
    assert "strategy=sharded_state" in next(line for line in log.splitlines() if "engine ready in" in line)
    original, presharded = job_result(first.stdout)["output"], job_result(second.stdout)["output"]
    assert presharded["choices"][0]["text"] == original["choices"][0]["text"]
    assert presharded["usage"] == original["usage"]
