"""RunPod Serverless entry point: settings -> engine handle -> job handler -> runpod.serverless.start.

    python handler.py                                  # local test mode, runs test_input.json once
    python handler.py --test_input '{"input": {...}}'  # local test mode, this input
    python handler.py --rp_serve_api                   # the SDK's local HTTP server (/run, /runsync, /stream)

On RunPod (RUNPOD_WEBHOOK_GET_JOB set) it takes jobs until the platform stops it. Settings come from
environment variables (config/settings.py; the README lists them).
"""

import logging
import os
import sys

if __name__ == "__mp_main__":
    # vLLM's engine processes are spawned, so they import this file as __mp_main__: let them exit at once.
    from worker.engine.shutdown import skip_final_collection

    skip_final_collection()

# The SDK's DEBUG lines print every job's input and output (prompts, completions): off unless asked for.
os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")

import runpod  # noqa: E402

from config.errors import SettingsError  # noqa: E402
from config.settings import load_settings  # noqa: E402
from worker.engine.handle import EngineHandle, EngineStartError  # noqa: E402
from worker.engine.shutdown import exit_now  # noqa: E402
from worker.jobs.dispatch import JobHandler, collect_stream  # noqa: E402
from worker.logs import configure_logging  # noqa: E402
from worker.transports.queue.job_loop import install as install_event_driven_job_loop  # noqa: E402
from worker.transports.queue.job_loop import use_uvloop  # noqa: E402

log = logging.getLogger("worker")


def is_local_test_run(argv: list[str]) -> bool:
    """Whether the SDK will run one job from test_input and exit (it calls handlers without streaming)."""
    if "--rp_serve_api" in argv or os.environ.get("RUNPOD_REALTIME_PORT"):
        return False
    return any(arg.startswith("--test_input") for arg in argv) or not os.environ.get("RUNPOD_WEBHOOK_GET_JOB")


def runs_job_loop(argv: list[str]) -> bool:
    """Whether the SDK will take jobs from RunPod, running its fitness checks first (as runpod.serverless.worker)."""
    return not is_local_test_run(argv) and "--rp_serve_api" not in argv and not os.environ.get("RUNPOD_REALTIME_PORT")


def run_fitness_checks_now() -> None:
    """With WARM_START, run the SDK's fitness checks (ours and its GPU memory test) before vLLM takes the
    GPUs' memory, not after as `start` would; they exit the worker on failure, as in the SDK."""
    import asyncio

    from runpod.serverless.modules.rp_fitness import (
        clear_fitness_checks,
        run_fitness_checks,
    )

    asyncio.run(run_fitness_checks())
    clear_fitness_checks()  # passed; `start` finds none left to run again


def check_configuration(settings) -> None:
    """Every check that needs no model files, before the first job and any download (with or without
    WARM_START): engine arguments (env vars and ENGINE_ARGS, by vLLM's parser) and the OpenAI server
    options. Raises SettingsError; logs the engine-argument env vars given and likely typos."""
    from worker.startup.engine_args import check_engine_args, typo_warnings
    from worker.startup.server_args import server_args

    for typo in typo_warnings():
        log.warning("%s", typo)
    engine_env = check_engine_args(settings)
    if engine_env:
        log.info("engine arguments from env vars: %s", engine_env)
    server_args(settings, settings.model_name)


def main() -> None:
    configure_logging()
    try:
        settings = load_settings()
        configure_logging(settings.worker_log_level)
        log.info("settings: %s", settings.masked())
        if settings.in_cluster:
            from worker.startup.cluster import prepare_node

            prepare_node(settings)  # nodes 1..N-1 run vLLM's headless workers in here and never return
        check_configuration(settings)
    except SettingsError as error:
        log.error("%s", error)
        sys.exit(2)

    from worker.startup.fitness import register_fitness_checks

    register_fitness_checks(settings)
    engine = EngineHandle(settings)
    if settings.warm_start or settings.in_cluster:  # across nodes the engine starts with the worker
        if runs_job_loop(sys.argv[1:]):
            run_fitness_checks_now()
        try:
            engine.start_now()
        except EngineStartError:
            sys.exit(1)  # the reason is logged; the platform replaces this worker
    jobs = JobHandler(settings, engine)
    exit_code = 0
    install_event_driven_job_loop()  # a taken job starts at once, not on the SDK's next 100 ms tick
    use_uvloop()
    try:
        runpod.serverless.start(
            {
                "handler": collect_stream(jobs.handle) if is_local_test_run(sys.argv[1:]) else jobs.handle,
                "concurrency_modifier": jobs.concurrency,
                "return_aggregate_stream": True,
            }
        )
    except SystemExit as stop:  # local test mode ends with sys.exit(0) or sys.exit(1)
        exit_code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        # The SDK returns after SIGTERM once in-flight jobs are done: stop vLLM's processes with us.
        engine.shutdown()
    exit_now(exit_code)


if __name__ == "__main__":
    main()
