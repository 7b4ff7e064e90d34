"""`python -m bench` runs end to end on the tiny model, and a stream takes no more chunks than its flush
interval allows, however fast the machine generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config.settings import WorkerSettings
from tests.helpers import ROOT, worker_env


def run_bench(model, *args: str) -> str:
    """`python -m bench ARGS` with MODEL_NAME=model, as a user runs it; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT, env=worker_env(model), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_runs_and_a_512_token_stream_takes_one_chunk_per_flush_interval(tiny_model, tmp_path):
    out = tmp_path / "bench.json"
    stdout = run_bench(
        tiny_model, "generate", "--concurrency", "1", "4", "--max-tokens", "512", "--jobs", "4", "--rounds", "1", "--json", str(out)
    )
    assert "| TP | load s | conc | path" in stdout
    report = json.loads(out.read_text())
    rows = {(r["path"], r["concurrency"]): r for r in report["results"]}
    assert set(rows) == {("worker", 1), ("vllm", 1), ("worker", 4), ("vllm", 4)}
    for (path, _), row in rows.items():
        assert row["tokens_per_s_aggregate"] > 0 and row["ttft_p50_ms"] > 0
    # vLLM yields about once per token (it merges only what the reader has not taken yet).
    assert rows[("vllm", 1)]["chunks_per_job"] > 200
    # The first token at once, then at most one chunk per flush interval, and the final one: on any machine.
    interval_s = WorkerSettings.model_fields["stream_flush_interval_ms"].default / 1000
    for concurrency in (1, 4):
        row = rows[("worker", concurrency)]
        assert row["chunks_per_job"] <= row["decode_s_mean"] / interval_s + 2, row


@pytest.mark.slow
def test_bench_embedding_load_prints_the_worker_vllm_ratio(tmp_path):
    from devtools.tiny_model import make_tiny_pooling_model

    out = tmp_path / "bench-embed.json"
    model = make_tiny_pooling_model("embedding")
    stdout = run_bench(model, "embed", "--texts", "32", "--concurrency", "8", "--rounds", "1", "--json", str(out))
    assert "| load s | texts | conc | path   | latency p50 ms" in stdout
    rows = {r["path"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"worker", "vllm"}
    assert all(r["texts_per_s"] > 0 and r["texts"] == 32 for r in rows.values())


@pytest.mark.slow
def test_sdk_bench_splits_each_jobs_time_to_first_post(tiny_model, tmp_path):
    """`sdk`: jobs go through the SDK's job loop against the stand-in in its own process; every stage of a
    job's time to first POST is measured, and they add up to it (one clock across the two processes). Two
    clients on a worker with room for one: each next job waits for a slot, and every job still ends."""
    out = tmp_path / "bench-sdk.json"
    stdout = run_bench(
        tiny_model, "sdk", "--concurrency", "2", "--max-concurrency", "1", "--max-tokens", "8", "--jobs", "6",
        "--rounds", "1", "--json", str(out),
    )
    assert "the worker's MAX_CONCURRENCY 1;" in stdout and "| added per job p50 ms |" in stdout
    (row,) = json.loads(out.read_text())["sdk_results"]
    assert row["job_loop"] == "event" and row["concurrency"] == 2 and row["jobs"] == 6 and row["jobs_per_s"] > 0
    stages = row["stage_p50_ms"]
    assert set(stages) == {"take", "start", "build", "engine", "post"} and all(v >= 0 for v in stages.values())
    assert 0 < row["added_per_job_p50_ms"] < row["to_first_post_p50_ms"]


def test_sdk_bench_runs_the_standin_below_the_workers_priority():
    """RunPod's API is not on the worker's machine: in the bench its stand-in takes only CPU the worker leaves."""
    from bench.sdk import STANDIN_NICENESS, StandinProcess

    standin = StandinProcess()
    env = standin.start()
    try:
        assert env["RUNPOD_WEBHOOK_GET_JOB"].startswith("http://127.0.0.1:")
        niceness = os.getpriority(os.PRIO_PROCESS, standin._process.pid)
        assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + STANDIN_NICENESS)
    finally:
        standin.stop()
