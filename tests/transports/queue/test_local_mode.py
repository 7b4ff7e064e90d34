"""The worker as users run it: `python handler.py` in the runpod SDK's local test mode, in a subprocess.

Also the real test of tensor parallelism on the CPU backend: greedy tokens at TENSOR_PARALLEL_SIZE=2
equal those at 1, and an invalid size fails fast, before vLLM is built.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.helpers import GREEDY_JOB, ROOT, job_error, job_result, run_local_mode, worker_env


def test_test_input_json_at_the_root_is_valid_and_runs(tiny_model):
    test_input = json.loads((ROOT / "test_input.json").read_text())
    done = run_local_mode(tiny_model, test_input["input"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = job_result(done.stdout)["output"]
    assert output["choices"][0]["text"]
    assert output["usage"]["completion_tokens"] > 0


@pytest.mark.slow
def test_tensor_parallel_2_gives_the_same_greedy_output_as_1(tiny_model, run_job):
    single = run_job(GREEDY_JOB)[0]
    done = run_local_mode(tiny_model, GREEDY_JOB, TENSOR_PARALLEL_SIZE="2", VLLM_CPU_OMP_THREADS_BIND="0|1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tensor_parallel_size=2" in done.stdout + done.stderr
    tp2 = job_result(done.stdout)["output"]
    assert tp2["choices"][0]["text"] == single["choices"][0]["text"]
    assert tp2["usage"] == single["usage"]


def test_stream_job_in_local_mode_prints_all_chunks(tiny_model):
    done = run_local_mode(tiny_model, {**GREEDY_JOB, "stream": True}, STREAM_FLUSH_INTERVAL_MS="0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    chunks = job_result(done.stdout)["output"]
    assert isinstance(chunks, list) and len(chunks) > 1
    assert chunks[-1]["usage"]["completion_tokens"] == 32


def test_invalid_tensor_parallel_size_fails_fast_before_vllm_is_built(tiny_model):
    started = time.perf_counter()
    done = run_local_mode(tiny_model, GREEDY_JOB, TENSOR_PARALLEL_SIZE="3", timeout=120)
    elapsed = time.perf_counter() - started
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "building the vLLM engine" not in log
    error = job_error([job_result_or_error(done.stdout)])
    assert error["type"] == "engine_start_failed"
    # The message names the model's shape and the sizes to use instead.
    assert "3" in error["message"] and "1, 2, 4" in error["message"], error["message"]
    assert elapsed < 60


def test_openai_job_on_a_worker_that_cannot_start_gets_an_openai_error(tiny_model):
    chat = {"model": str(tiny_model), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    done = run_local_mode(
        tiny_model, {"openai_route": "/v1/chat/completions", "openai_input": chat}, TENSOR_PARALLEL_SIZE="3", timeout=120
    )
    assert done.returncode != 0
    error = job_error([job_result_or_error(done.stdout)])["error"]
    assert (error["code"], error["type"]) == (503, "ServiceUnavailableError"), error
    assert "1, 2, 4" in error["message"]


def test_bad_openai_server_option_stops_the_worker_with_one_message(tiny_model):
    done = run_local_mode(tiny_model, GREEDY_JOB, TOOL_CALL_PARSER="hermes2", timeout=120)
    assert done.returncode == 2
    assert "TOOL_CALL_PARSER='hermes2': not a parser vLLM" in done.stderr
    assert "building the vLLM engine" not in done.stdout + done.stderr


def job_result_or_error(stdout: str) -> dict:
    match = re.search(r"failed with error: (.*)$", stdout, re.MULTILINE)
    assert match, stdout[-3000:]
    return {"error": match.group(1)}


def test_bad_setting_stops_the_worker_with_one_message(tiny_model):
    done = run_local_mode(tiny_model, GREEDY_JOB, DTYPE="float64", timeout=60)
    assert done.returncode == 2
    assert "DTYPE='float64'" in done.stderr and "auto, float16, bfloat16, float32" in done.stderr


def test_sdk_local_api_server_runs_jobs_over_http(tiny_model, tmp_path):
    """`python handler.py --rp_serve_api`: the SDK's own FastAPI server, called over real HTTP."""
    import httpx

    from tests.helpers.fake_runpod import WorkerProcess, free_port

    port = free_port()
    env = {k: v for k, v in worker_env(tiny_model).items() if not k.startswith("RUNPOD_WEBHOOK")}
    process = WorkerProcess(ROOT, env, tmp_path / "api.log", args=["--rp_serve_api", "--rp_api_port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/docs", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.proc.poll() is None, process.log()[-3000:]
                time.sleep(0.5)
        done = httpx.post(f"{base}/runsync", json={"input": {**GREEDY_JOB, "stream": True}}, timeout=300).json()
        chunks = done["output"]
        assert chunks[-1]["usage"]["completion_tokens"] == 32
        assert "".join(c["text"] for chunk in chunks for c in chunk["choices"])
        failed = httpx.post(f"{base}/runsync", json={"input": {"prompt": 1}}, timeout=60).json()
        assert "input.prompt" in json.dumps(failed)
    finally:
        process.stop()
