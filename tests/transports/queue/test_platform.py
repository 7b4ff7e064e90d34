"""The worker in production mode: the runpod SDK's real job loop against a fake RunPod API on loopback.

Covers what only the whole process shows: load through the job loop, cancellation through the stop
channel, secrets in everything captured, and the exit after the engine dies.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from tests.helpers import ROOT, worker_env
from tests.helpers.fake_runpod import FakeRunPod, WorkerProcess, warmed_worker

SECRET_TOKEN = "hf_TESTSECRETdoNotLeak0123456789"
SECRET_API_KEY = "rpa_TESTAPIKEYdoNotLeak9876543210"


@pytest.fixture(scope="module")
def platform():
    fake = FakeRunPod().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def worker(platform, tiny_model, tmp_path_factory):
    env = worker_env(
        tiny_model,
        HF_TOKEN=SECRET_TOKEN,
        MAX_CONCURRENCY="32",
        STREAM_FLUSH_INTERVAL_MS="50",
        **platform.env(RUNPOD_AI_API_KEY=SECRET_API_KEY),
    )
    # The first job waits for the engine build; then the worker is warm for the rest.
    process = warmed_worker(ROOT, platform, env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield process
    process.stop()


def greedy_job(i: int) -> dict:
    return {"prompt": f"Request {i}: tell me about item {i * 7919 % 1000}", "sampling_params": {"temperature": 0, "max_tokens": 24, "seed": i}}


@pytest.mark.slow
def test_200_jobs_at_32_concurrent_complete_whole_and_each_gets_its_own_output(platform, worker, run_job):
    count = 200
    # Reference outputs for a sample, computed one at a time on the in-process engine (same model, greedy).
    reference = {i: run_job(greedy_job(i))[0]["choices"][0]["text"] for i in range(0, count, 20)}

    ids = [f"load-{i}" for i in range(count)]
    started = time.monotonic()
    for i, job_id in enumerate(ids):
        job = greedy_job(i)
        if i % 3 == 0:
            job = {**job, "stream": True}
        platform.submit(job_id, job)
    results = platform.wait_for_results(ids, timeout=600)
    elapsed = time.monotonic() - started

    for i, job_id in enumerate(ids):
        result = results[job_id]
        assert "error" not in result, result
        assert platform.result_counts[job_id] == 1, f"{job_id} was reported {platform.result_counts[job_id]} times"
        if i % 3 == 0:
            chunks = [c["output"] for c in platform.streams[job_id]]
            assert chunks == result["output"], "the aggregate equals what was streamed"
        else:
            chunks = result["output"]
        text = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
        assert chunks[-1]["usage"]["completion_tokens"] == 24 or chunks[-1]["choices"][0]["finish_reason"] == "stop"
        if i in reference:
            assert text == reference[i], f"{job_id} got another job's output"
    print(f"\nload: {count} jobs at concurrency 32 through the SDK job loop in {elapsed:.1f} s")


def test_cancel_through_the_stop_channel_stops_the_job_and_the_worker_goes_on(platform, worker):
    long_job = {"prompt": "Write forever", "sampling_params": {"max_tokens": 1900, "ignore_eos": True, "n": 4}, "stream": True}
    platform.submit("to-cancel", long_job)
    deadline = time.monotonic() + 60
    while not platform.streams.get("to-cancel") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert platform.streams.get("to-cancel"), "the job should have started streaming"
    platform.cancel("to-cancel")
    # The SDK takes the stop at its next stop-channel poll (it waits 1 s between empty ones), a busy machine later.
    deadline = time.monotonic() + 60
    while "Job stopped." not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = worker.log()
    handed = f"stop polls answered: {platform.stops_handed}, still to hand out: {platform.to_stop}"
    assert "Stopping job." in log and "Job stopped." in log, f"{handed}\n{log[-6000:]}"
    time.sleep(1.0)  # a chunk already on the wire as the job stopped
    streamed_after_cancel = len(platform.streams["to-cancel"])
    time.sleep(1.5)
    assert len(platform.streams["to-cancel"]) == streamed_after_cancel, "no chunks after the job was stopped"
    assert "to-cancel" not in platform.results
    # vLLM logs the abort it received for the job's request.
    platform.submit("after-cancel", {"prompt": "next", "sampling_params": {"max_tokens": 4}})
    assert "error" not in platform.wait_for_results(["after-cancel"], timeout=60)["after-cancel"]


def test_bad_input_through_the_job_loop_fails_only_that_job(platform, worker):
    platform.submit("bad", {"prompt": "x", "sampling_params": {"temperature": "hot"}})
    platform.submit("good", {"prompt": "x", "sampling_params": {"max_tokens": 3}})
    results = platform.wait_for_results(["bad", "good"], timeout=60)
    error = json.loads(results["bad"]["error"])
    assert error["fields"][0]["field"] == "input.sampling_params.temperature"
    assert "error" not in results["good"]


def test_secrets_never_appear_in_logs_or_outputs(platform, worker):
    platform.submit("secret-check", {"prompt": "x", "sampling_params": {"max_tokens": 3, "tempreture": 1}})
    platform.wait_for_results(["secret-check"], timeout=60)
    captured = worker.log() + json.dumps(platform.results) + json.dumps(platform.streams)
    assert "settings:" in captured, "the settings are logged at start (masked)"
    assert SECRET_TOKEN not in captured
    assert SECRET_API_KEY not in captured


@pytest.mark.slow
def test_engine_death_fails_in_flight_jobs_and_exits_non_zero_quickly(tiny_model, tmp_path):
    fake = FakeRunPod().start()
    # WARM_START: the engine is built before the first job is taken.
    process = WorkerProcess(ROOT, worker_env(tiny_model, WARM_START="true", **fake.env()), tmp_path / "worker.log")
    try:
        fake.submit("warm", {"prompt": "warm", "sampling_params": {"max_tokens": 2}})
        fake.wait_for_results(["warm"], timeout=240)
        log = process.log()
        assert log.index("engine ready in") < log.index("Jobs in queue:"), "WARM_START builds the engine first"
        # ... after the fitness checks, which the SDK would otherwise run on GPUs vLLM already holds.
        assert log.index("fitness check(s)") < log.index("building the vLLM engine"), log[:3000]
        assert log.count("fitness check(s)") == 1, "the checks run once"
        assert "engine_start_wait_ms" not in json.dumps(fake.results["warm"])
        fake.submit("in-flight", {"prompt": "long", "sampling_params": {"max_tokens": 1900, "ignore_eos": True, "n": 8}, "stream": True})
        deadline = time.monotonic() + 60
        while not fake.streams.get("in-flight") and time.monotonic() < deadline:
            time.sleep(0.05)
        engine_cores = [p for p in psutil.Process(process.proc.pid).children(recursive=True) if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()]
        assert engine_cores, [p.cmdline() for p in psutil.Process(process.proc.pid).children(recursive=True)]
        assert "in-flight" not in fake.results, "the job must still be running when the engine dies"
        killed_at = time.monotonic()
        for core in engine_cores:
            os.kill(core.pid, signal.SIGKILL)
        code = process.proc.wait(timeout=30)
        exit_s = time.monotonic() - killed_at
        result = fake.wait_for_results(["in-flight"], timeout=5)["in-flight"]
        assert "error" in result, (result, fake.streams.get("in-flight", [])[-2:], process.log()[-3000:])
        error = json.loads(result["error"])
        assert error["type"] == "engine_dead", error
        assert code != 0
        assert exit_s < 10, f"the worker took {exit_s:.1f} s to exit"
        print(f"\nengine death: worker exited with code {code} {exit_s:.2f} s after the engine was killed")
    finally:
        process.stop()
        fake.stop()


def test_sigterm_finishes_in_flight_jobs_then_exits_promptly_and_cleanly(tiny_model, tmp_path):
    """RunPod's grace before SIGKILL is finite: after the last job, the worker must go at once, with vLLM's
    engine shut down cleanly (no force kill, no leaked shared memory). The exit time is printed, not asserted."""
    fake = FakeRunPod().start()
    process = WorkerProcess(ROOT, worker_env(tiny_model, WARM_START="true", **fake.env()), tmp_path / "worker.log")
    try:
        fake.submit("warm", {"prompt": "warm", "sampling_params": {"max_tokens": 2}})
        fake.wait_for_results(["warm"], timeout=240)
        ids = [f"draining-{i}" for i in range(4)]
        for job_id in ids:
            fake.submit(job_id, {"prompt": "long", "sampling_params": {"max_tokens": 300, "ignore_eos": True}, "stream": True})
        deadline = time.monotonic() + 60
        while not all(fake.streams.get(job_id) for job_id in ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(fake.streams.get(job_id) for job_id in ids), "the jobs should be streaming"
        signalled_at = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        last_result_at = signalled_at
        while process.proc.poll() is None and time.monotonic() - signalled_at < 60:
            if len(fake.results) < len(ids) + 1:
                last_result_at = time.monotonic()
            time.sleep(0.02)
        exited_at = time.monotonic()
        code = process.proc.wait(timeout=5)
        for job_id in ids:
            result = fake.results[job_id]
            assert "error" not in result, result
            assert result["output"][-1]["usage"]["completion_tokens"] == 300, "in-flight jobs finish whole"
        log = process.log()
        assert code == 0, log[-3000:]
        assert "force killing" not in log, log[-3000:]
        assert "leaked shared_memory" not in log, log[-3000:]
        print(
            f"\nSIGTERM: {len(ids)} in-flight jobs finished {last_result_at - signalled_at:.2f} s after it; "
            f"the worker exited {exited_at - last_result_at:.2f} s after the last job (code {code})"
        )
    finally:
        process.stop()
        fake.stop()
