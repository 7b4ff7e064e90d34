"""A RunPod queue endpoint: the engine and the job handler under the runpod SDK's job loop (or its local
test modes), until the platform stops the worker."""

from __future__ import annotations

import sys

import runpod

from config.settings import WorkerSettings
from worker.engine.handle import EngineHandle, EngineStartError
from worker.engine.shutdown import exit_now
from worker.jobs.dispatch import JobHandler
from worker.transports.queue.concurrency import concurrency_modifier
from worker.transports.queue.delivery import install as install_result_delivery
from worker.transports.queue.fitness import register_fitness_checks, run_fitness_checks_now
from worker.transports.queue.job_loop import install as install_event_driven_job_loop
from worker.transports.queue.job_loop import use_uvloop
from worker.transports.queue.local_mode import collect_stream, is_local_test_run, runs_job_loop


def run_queue_worker(settings: WorkerSettings, argv: list[str]) -> None:
    """Serve jobs until the SDK returns (SIGTERM, or local test mode done), then exit with its code."""
    register_fitness_checks(settings)
    engine = EngineHandle(settings)
    if settings.warm_start or settings.in_cluster:  # across nodes the engine starts with the worker
        if runs_job_loop(argv):
            run_fitness_checks_now()
        try:
            engine.start_now()
        except EngineStartError:
            sys.exit(1)  # the reason is logged; the platform replaces this worker
    jobs = JobHandler(settings, engine)
    exit_code = 0
    event_driven = install_event_driven_job_loop()  # a taken job starts at once, not on the SDK's next 100 ms tick
    install_result_delivery(settings.result_delivery_timeout_s, settings.result_delivery_grace_s)
    use_uvloop()
    try:
        runpod.serverless.start(
            {
                "handler": collect_stream(jobs.handle) if is_local_test_run(argv) else jobs.handle,
                "concurrency_modifier": concurrency_modifier(settings, engine.load, event_driven),
                "return_aggregate_stream": True,
            }
        )
    except SystemExit as stop:  # local test mode ends with sys.exit(0) or sys.exit(1)
        exit_code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        # The SDK returns after SIGTERM once in-flight jobs are done: stop vLLM's processes with us.
        engine.shutdown()
    exit_now(exit_code)
