"""Results and stream chunks reach the platform whole while it refuses some of them
(worker/transports/queue/delivery.py): the worker as RunPod runs it (handler.py, the real runpod SDK, the tiny
model's engine) against the RunPod stand-in with fault injection. One worker for the module; the SIGTERM test
runs last and stops it."""

from __future__ import annotations

import re
import signal
import time

import pytest
from runpod.serverless.modules import rp_job, rp_scale
from runpod.version import __version__ as runpod_version

from devtools.runpod_standin import Faults
from tests.helpers import ROOT, worker_env
from tests.helpers.fake_runpod import FakeRunPod, warmed_worker
from worker.transports.queue import delivery
from worker.transports.queue.job_loop import EventDrivenJobScaler

# RESULT_DELIVERY_TIMEOUT_S for the module's worker: a post refused 30% of the time gets ~11 tries in it
# (0.3^11 ~ 2e-6 that one is lost), and the test of a result refused past it waits it out.
BOUND_S = 15
# RESULT_DELIVERY_GRACE_S: a few of the backoff's longest waits (4 s), under the bound.
GRACE_S = 12
JOBS = 16


def test_the_installed_sdk_is_the_one_delivery_was_written_for():
    # A failure here means a runpod upgrade: re-read rp_http._transmit and _handle_result and rp_job.handle_job,
    # adapt delivery.py, then re-pin.
    assert runpod_version == delivery.PINNED_RUNPOD_VERSION
    assert delivery.sdk_is_pinned_one()


def test_install_replaces_the_sdks_posting_and_its_scaler_and_0_keeps_the_sdks(monkeypatch):
    monkeypatch.setattr(rp_scale, "JobScaler", EventDrivenJobScaler)
    monkeypatch.setattr(rp_job, "send_result", rp_job.send_result)
    monkeypatch.setattr(rp_job, "stream_result", rp_job.stream_result)
    sdk_send_result = rp_job.send_result
    assert delivery.install(0, GRACE_S) is False
    assert rp_job.send_result is sdk_send_result and rp_scale.JobScaler is EventDrivenJobScaler
    assert delivery.install(BOUND_S, GRACE_S) is True
    assert rp_scale.JobScaler is delivery.DeliveringJobScaler
    assert rp_job.send_result == delivery.DeliveringJobScaler.deliveries.send_result
    assert rp_job.stream_result == delivery.DeliveringJobScaler.deliveries.stream_result


@pytest.fixture(scope="module")
def platform():
    fake = FakeRunPod().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def worker(platform, tiny_model, tmp_path_factory):
    env = worker_env(
        tiny_model,
        WARM_START="true",
        MAX_CONCURRENCY="16",
        STREAM_FLUSH_INTERVAL_MS="50",
        RESULT_DELIVERY_TIMEOUT_S=str(BOUND_S),
        RESULT_DELIVERY_GRACE_S=str(GRACE_S),
        **platform.env(),
    )
    process = warmed_worker(ROOT, platform, env, tmp_path_factory.mktemp("worker") / "worker.log", timeout=300)
    yield process
    process.stop()


def greedy_job(i: int) -> dict:
    job = {"prompt": f"Job {i}: about {i * 7919 % 1000}", "sampling_params": {"temperature": 0, "max_tokens": 24}}
    return {**job, "stream": True} if i % 2 == 0 else job


def text_of(outputs: list[dict]) -> str:
    return "".join(choice["text"] for output in outputs for choice in output["choices"])


def run_jobs(platform: FakeRunPod, prefix: str) -> dict[int, dict]:
    """JOBS jobs, half streamed, all submitted at once: for each, its final output's text and the text its stream
    client saw."""
    ids = {i: f"{prefix}-{i}" for i in range(JOBS)}
    for i, job_id in ids.items():
        platform.submit(job_id, greedy_job(i))
    results = platform.wait_for_results(list(ids.values()), timeout=300)
    runs = {}
    for i, job_id in ids.items():
        assert "error" not in results[job_id], results[job_id]
        streamed = [post["output"] for post in platform.streams[job_id]]
        runs[i] = {"output": results[job_id]["output"], "streamed": streamed}
    return runs


def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_with_30_percent_of_results_and_chunks_refused_every_job_completes_with_the_fault_free_output(platform, worker):
    platform.set_faults(Faults())
    fault_free = run_jobs(platform, "fault-free")
    platform.set_faults(Faults(stream=0.3, done=0.3, seed=28))
    refused = run_jobs(platform, "refused")
    platform.set_faults(Faults())

    assert platform.refused["done"] > 0 and platform.refused["stream"] > 0
    for i in range(JOBS):
        assert platform.result_counts[f"refused-{i}"] == 1
        assert text_of(refused[i]["output"]) == text_of(fault_free[i]["output"]), f"job {i}"
        if i % 2 == 0:
            # The stream carried every chunk the job made, once each, in order: exactly its aggregated output.
            assert refused[i]["streamed"] == refused[i]["output"], f"job {i}'s stream"
            assert text_of(refused[i]["streamed"]) == text_of(fault_free[i]["streamed"])
    assert platform.posts_after_final == 0


def test_posts_refused_past_the_bound_are_logged_as_lost_the_stream_stops_whole_and_the_worker_keeps_serving(
    platform, worker
):
    """A streamed job whose every post is refused: its first chunk is given up on after the bound, its stream ends
    there (no later chunk is posted: no gap), then its result is given up on after the bound too."""
    platform.set_faults(Faults(stream=1.0, done=1.0, jobs=frozenset({"refused-for-good"})))
    platform.submit("refused-for-good", greedy_job(0))
    until(lambda: platform.refused_by_job["refused-for-good"] >= 1, 120, "the job's first post")
    platform.submit("served-meanwhile", greedy_job(2))
    assert "error" not in platform.wait_for_results(["served-meanwhile"], timeout=120)["served-meanwhile"]

    until(lambda: "job refused-for-good: its result" in worker.log(), 2 * BOUND_S + 120, "the result's loss")
    log = worker.log()
    for what in ("stream chunk", "result"):
        lost = re.search(
            rf"job refused-for-good: its {what} \((\d+) bytes\) was not delivered: \d+ attempt\(s\) in ([\d.]+) s, "
            r"the last: HTTP 503",
            log,
        )
        assert lost, log[-3000:]
        assert int(lost[1]) > 0
        assert float(lost[2]) >= BOUND_S, f"the {what} was retried for the whole bound"
    assert "job refused-for-good: its stream ends here" in log
    assert "test-api-key" not in log, "failures are logged without the request's headers"
    assert "refused-for-good" not in platform.streams and "refused-for-good" not in platform.results
    assert platform.refused_by_job["refused-for-good"] > 6, "each post was retried, not dropped after 3 attempts"

    platform.set_faults(Faults())
    platform.submit("after-the-loss", greedy_job(3))
    assert "error" not in platform.wait_for_results(["after-the-loss"], timeout=120)["after-the-loss"]


def test_sigterm_waits_for_pending_results_within_the_grace_and_logs_what_it_could_not_deliver(platform, worker):
    """Runs last: it stops the module's worker."""
    held = ["accepted-after-sigterm", "refused-to-the-end"]
    platform.set_faults(Faults(done=1.0, jobs=frozenset(held)))
    for i, job_id in enumerate(held):
        platform.submit(job_id, greedy_job(i))
    until(lambda: all(platform.refused_by_job[job_id] >= 1 for job_id in held), 120, "both results' first posts")

    worker.proc.send_signal(signal.SIGTERM)
    platform.set_faults(Faults(done=1.0, jobs=frozenset({"refused-to-the-end"})))
    code = worker.proc.wait(timeout=GRACE_S + 120)
    log = worker.log()
    assert code == 0, log[-3000:]
    assert "error" not in platform.results["accepted-after-sigterm"], "delivered within the grace"
    assert "refused-to-the-end" not in platform.results
    assert re.search(r"job refused-to-the-end: its result \(\d+ bytes\) was not delivered", log), log[-3000:]
    assert "still being delivered" in log
