"""The adaptive job target (worker/engine/load.py) on plain numbers, and the SDK-facing modifier
(worker/transports/queue/concurrency.py) fed through vLLM's stat logger interface: no engine, fast. Then a
burst through `python handler.py` (the SDK's real job loop) against the RunPod stand-in, per mode."""

from __future__ import annotations

import logging
import re
import statistics
from types import SimpleNamespace

import pytest

from config.settings import load_settings
from tests.helpers import ROOT, worker_env
from tests.helpers.fake_runpod import FakeRunPod, warmed_worker
from worker.engine.load import (
    CALM_STEPS,
    KV_HIGH_WATER,
    KV_LOW_WATER,
    MIN_HEADROOM,
    EngineLoad,
    EngineLoadSignal,
    LoadController,
    job_target,
    ready_jobs,
)
from worker.transports.queue.concurrency import AdaptiveConcurrency, FixedConcurrency, concurrency_modifier
from worker.vllm_api import SchedulerStats, StatLoggerBase

CAP = 64


def test_requests_waiting_for_a_slot_hold_the_target_at_the_running_requests_plus_a_few_ready_jobs():
    assert job_target(EngineLoad(running=8, waiting=3, max_running=8), target=40, cap=CAP, calm=False) == 12
    assert job_target(EngineLoad(running=4, waiting=1, max_running=4), target=9, cap=CAP, calm=True) == 6
    assert job_target(EngineLoad(running=4, waiting=1), target=9, cap=CAP, calm=False) == 6, "max_num_seqs unknown"
    assert job_target(EngineLoad(running=4, waiting=1, max_running=8), target=6, cap=CAP, calm=False) == 6, "a slot free"


def test_a_kv_cache_at_its_high_water_mark_holds_the_target_even_with_nothing_waiting():
    load = EngineLoad(running=20, waiting=0, kv_cache_usage=KV_HIGH_WATER, max_running=256)
    assert job_target(load, target=60, cap=CAP, calm=True) == 30


def test_room_for_long_enough_grows_the_target_by_headroom_up_to_what_the_engine_can_run():
    assert job_target(EngineLoad(running=0, max_running=256), target=1, cap=CAP, calm=True) == MIN_HEADROOM
    assert job_target(EngineLoad(running=10, max_running=256), target=12, cap=CAP, calm=True) == 15
    # never past max_num_seqs plus its ready jobs, however long the room lasts
    for limit in (1, 2, 4, 8, 64):
        grown = [job_target(EngineLoad(running=r, max_running=limit), 1, cap=1000, calm=True) for r in range(limit)]
        assert max(grown) <= limit + ready_jobs(limit), (limit, grown)
    # ... and a target it had is kept: room does not shrink it
    assert job_target(EngineLoad(running=1, max_running=256), target=30, cap=CAP, calm=True) == 30


def test_room_not_yet_long_enough_or_kv_between_the_marks_keeps_the_target():
    assert job_target(EngineLoad(running=10, max_running=256), target=12, cap=CAP, calm=False) == 12
    between = EngineLoad(running=10, kv_cache_usage=(KV_LOW_WATER + KV_HIGH_WATER) / 2, max_running=256)
    assert job_target(between, target=12, cap=CAP, calm=True) == 12


def test_never_below_the_running_requests_plus_one_and_never_above_the_cap():
    # a job with n=8 runs 8 requests: the worker still takes its next job
    assert job_target(EngineLoad(running=8, max_running=256), target=2, cap=CAP, calm=False) == 9
    assert job_target(EngineLoad(running=200, waiting=50, max_running=256), target=64, cap=CAP, calm=False) == CAP
    assert job_target(EngineLoad(running=0, waiting=0), target=1, cap=1, calm=True) == 1


def test_the_controller_grows_only_after_calm_steps():
    controller = LoadController(cap=CAP)
    assert controller.target == 1, "before the engine's first step: the one job that starts a lazy engine"
    room = EngineLoad(running=1, max_running=8)
    assert CALM_STEPS == 2
    assert [controller.update(room) for _ in range(3)] == [2, 1 + MIN_HEADROOM, 1 + MIN_HEADROOM]
    assert controller.update(EngineLoad(running=3, max_running=8)) == 5, "still calm: headroom over 3 running"


def test_the_controller_shrinks_once_requests_wait_two_steps_for_a_slot():
    controller = LoadController(cap=CAP)
    controller.target = 20
    backlog = EngineLoad(running=8, waiting=3, max_running=8)
    assert [controller.update(backlog) for _ in range(2)] == [20, 12], "a backlog from its second step on"
    # one step with a slot free (a request ended, a waiting one goes in next) does not grow it back
    assert controller.update(EngineLoad(running=7, max_running=8)) == 12
    assert controller.update(backlog) == 12


def test_requests_waiting_while_slots_are_free_are_no_backlog():
    """Prefills sharing a step's token budget wait a step or two with slots free: the target stays."""
    controller = LoadController(cap=CAP)
    controller.target = 10
    assert {controller.update(EngineLoad(running=5, waiting=3, max_running=8)) for _ in range(4)} == {10}


def test_a_request_waiting_one_step_is_no_backlog():
    """A job reaching the engine mid-step shows as waiting in that step's stats only: no flapping target."""
    controller = LoadController(cap=CAP)
    controller.target = 5
    steps = [EngineLoad(running=3, waiting=1, max_running=4), EngineLoad(running=4, max_running=4)] * 5
    assert {controller.update(load) for load in steps} == {5}


def test_a_request_ending_while_others_wait_does_not_shrink_the_target():
    """The step a request ends in shows one running fewer, before the waiting one takes its place."""
    controller = LoadController(cap=CAP)
    controller.target = 6
    full, one_ended = EngineLoad(running=4, waiting=1, max_running=4), EngineLoad(running=3, waiting=1, max_running=4)
    assert {controller.update(load) for load in [full, full, one_ended, full, one_ended, full]} == {6}


def test_the_controller_does_not_flap_on_kv_usage_between_the_marks():
    controller = LoadController(cap=CAP)
    controller.target = 36
    assert controller.update(EngineLoad(running=24, kv_cache_usage=0.95, max_running=256)) == 36
    swings = [KV_LOW_WATER + 0.01, KV_HIGH_WATER - 0.01] * 5
    assert {controller.update(EngineLoad(running=24, kv_cache_usage=kv, max_running=256)) for kv in swings} == {36}


def stat_logger_of(signal: EngineLoadSignal, max_num_seqs: int, engine_index: int = 0) -> StatLoggerBase:
    """The logger vLLM builds from the factory the worker passes to AsyncLLM.from_engine_args."""
    vllm_config = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs))
    return signal.stat_logger(vllm_config, engine_index)


def record(logger: StatLoggerBase, running: int, waiting: int, kv: float = 0.1, engine_idx: int = 0) -> None:
    stats = SchedulerStats(num_running_reqs=running, num_waiting_reqs=waiting, kv_cache_usage=kv)
    logger.record(stats, None, engine_idx=engine_idx)


def test_the_stat_logger_is_vllms_interface_and_sums_data_parallel_engines():
    signal = EngineLoadSignal()
    first, second = stat_logger_of(signal, 8, 0), stat_logger_of(signal, 8, 1)
    assert isinstance(first, StatLoggerBase)
    record(first, 8, 2, kv=0.5, engine_idx=0)
    record(second, 3, 0, kv=0.7, engine_idx=1)
    assert signal.latest == EngineLoad(running=11, waiting=2, kv_cache_usage=0.7, max_running=16)
    first.record(None, None, engine_idx=0)  # a step whose stats went to another front-end: no change
    assert signal.latest.running == 11


def test_the_adaptive_modifier_follows_the_engine_logs_changes_and_wakes_a_full_loop(caplog):
    signal = EngineLoadSignal()
    logger = stat_logger_of(signal, 4)
    modifier = AdaptiveConcurrency(signal, cap=CAP)
    wake_ups = []
    modifier.notify_on_change(lambda: wake_ups.append(modifier(0)))
    with caplog.at_level(logging.INFO, logger="worker.transports.queue.concurrency"):
        for _ in range(CALM_STEPS):
            record(logger, 2, 0)  # the running requests plus one at once, then headroom once calm
        assert modifier(1) == 4 and wake_ups == [3, 4]
        for _ in range(5):  # the same load, step after step: no line after the second
            record(logger, 4, 3)
        assert modifier(4) == 6 and wake_ups == [3, 4, 5, 6]
        record(logger, 2, 0, kv=0.95)
        record(logger, 2, 0, kv=0.95)
        assert modifier(6) == 3 and wake_ups == [3, 4, 5, 6], "a shrinking target wakes nothing"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "job target 1 -> 3 (engine: 2 running, 0 waiting, KV cache 10%; cap 64)",
        "job target 3 -> 4 (engine: 2 running, 0 waiting, KV cache 10%; cap 64)",
        "job target 4 -> 5 (engine: 4 running, 3 waiting, KV cache 10%; cap 64)",
        "job target 5 -> 6 (engine: 4 running, 3 waiting, KV cache 10%; cap 64)",
        "job target 6 -> 3 (engine: 2 running, 0 waiting, KV cache 95%; cap 64)",
    ]


@pytest.mark.parametrize("mode, event_driven, expected", [
    ("adaptive", True, AdaptiveConcurrency),
    ("fixed", True, FixedConcurrency),
    ("adaptive", False, FixedConcurrency),  # the SDK's own loop would drain the worker on every change
])
def test_concurrency_mode_picks_the_modifier(mode, event_driven, expected, caplog):
    settings = load_settings(model_name="m", concurrency_mode=mode, max_concurrency=12)
    modifier = concurrency_modifier(settings, EngineLoadSignal(), event_driven)
    assert type(modifier) is expected
    if expected is FixedConcurrency:
        assert modifier(1) == 12
    assert ("needs the worker's own job loop" in caplog.text) == (mode == "adaptive" and not event_driven)


def test_adaptive_is_the_default_and_a_bad_mode_names_the_env_var():
    from config.errors import SettingsError

    assert load_settings(model_name="m").concurrency_mode == "adaptive"
    with pytest.raises(SettingsError, match=r"CONCURRENCY_MODE='auto'.*allowed: adaptive, fixed"):
        load_settings(model_name="m", concurrency_mode="auto")


# --- a burst through the worker's real job loop, per CONCURRENCY_MODE ------------------------------------------

ENGINE_LIMIT = 4  # MAX_NUM_SEQS: the requests the engine runs at once
WORKER_CAP = 8  # MAX_CONCURRENCY
BURST = 20


def burst_job(i: int) -> dict:
    return {"prompt": f"Burst {i}: describe item {i * 31}", "sampling_params": {"temperature": 0, "max_tokens": 48, "ignore_eos": True}}


def run_burst(tiny_model, log_path, mode: str) -> tuple[dict[str, str], list[int], dict, str]:
    """One worker in `mode` takes a burst of BURST jobs queued at once: each job's text, what the worker held
    at each take and result while jobs still queued, one job's metrics, and the worker's log."""
    platform = FakeRunPod().start()
    worker_id = f"{mode}-worker"
    env = worker_env(
        tiny_model, WARM_START="true", CONCURRENCY_MODE=mode, MAX_CONCURRENCY=str(WORKER_CAP),
        MAX_NUM_SEQS=str(ENGINE_LIMIT), **platform.env(RUNPOD_POD_ID=worker_id),
    )
    # Its own working directory: the SDK's file of jobs in progress there starts empty.
    workdir = log_path.parent / mode
    workdir.mkdir()
    process = warmed_worker(ROOT, platform, env, log_path, cwd=workdir)
    try:
        ids = [f"burst-{i}" for i in range(BURST)]
        platform.submit_burst([(job_id, burst_job(i)) for i, job_id in enumerate(ids)])
        results = platform.wait_for_results(ids, timeout=300)
        held = [count for count in platform.held_while_queued(worker_id)]
        texts = {}
        for job_id in ids:
            assert "error" not in results[job_id], results[job_id]
            output = results[job_id]["output"]
            texts[job_id] = "".join(c["text"] for chunk in output for c in chunk["choices"])
        return texts, held, results[ids[-1]]["output"][-1]["metrics"], process.log()
    except TimeoutError:
        raise AssertionError(process.log()[-5000:]) from None
    finally:
        process.stop()
        platform.stop()


@pytest.mark.slow
def test_adaptive_holds_what_the_engine_runs_fixed_holds_max_concurrency_same_outputs(tiny_model, tmp_path):
    adaptive_texts, adaptive_held, metrics, adaptive_log = run_burst(tiny_model, tmp_path / "adaptive.log", "adaptive")
    fixed_texts, fixed_held, _, fixed_log = run_burst(tiny_model, tmp_path / "fixed.log", "fixed")

    # The worker's own target: never past what the engine runs plus its ready jobs.
    most = ENGINE_LIMIT + ready_jobs(ENGINE_LIMIT)
    targets = [int(after) for after in re.findall(r"job target \d+ -> (\d+)", adaptive_log)]
    assert targets and max(targets) <= most, targets
    # What the platform sees held also counts results still being posted (delivery.py frees a job's slot as
    # its result goes out), a few for a moment where several jobs end in one step, more on a slower machine:
    # most of the time, the target and not MAX_CONCURRENCY.
    assert adaptive_held and statistics.median(adaptive_held) <= most, adaptive_held
    assert max(fixed_held) >= WORKER_CAP, fixed_held  # fixed takes all MAX_CONCURRENCY allows
    assert adaptive_texts == fixed_texts, "every job's output is the same in both modes"
    assert {"engine_running", "engine_waiting"} <= set(metrics), metrics
    assert "job target" in adaptive_log and "job target" not in fixed_log
    print(f"\nheld while jobs queued: adaptive max {max(adaptive_held)}, fixed max {max(fixed_held)}")
