"""RunPod Serverless entry point: checked settings -> the queue worker (engine, job handler, runpod SDK).

    python handler.py                                  # local test mode, runs test_input.json once
    python handler.py --test_input '{"input": {...}}'  # local test mode, this input
    python handler.py --rp_serve_api                   # the SDK's local HTTP server (/run, /runsync, /stream)

On RunPod (RUNPOD_WEBHOOK_GET_JOB set) it takes jobs until the platform stops it. Settings come from
environment variables (config/settings.py; docs/settings.md lists them).
"""

import sys

from worker.engine.shutdown import skip_final_collection
from worker.startup.environment import set_default

if __name__ == "__mp_main__":
    # vLLM's engine processes are spawned, so they import this file as __mp_main__: let them exit at once.
    skip_final_collection()

# Before the runpod SDK is imported: it reads its log level once.
set_default("RUNPOD_LOG_LEVEL", "INFO")

from worker.startup.checks import checked_settings  # noqa: E402
from worker.transports.load_balancer.server import run_load_balancer  # noqa: E402
from worker.transports.queue.worker import run_queue_worker  # noqa: E402


def main() -> None:
    settings = checked_settings()
    if settings.endpoint_type == "load_balancer":  # direct HTTP (docs/load-balancing.md): no SDK, no job loop
        run_load_balancer(settings)
    run_queue_worker(settings, sys.argv[1:])


if __name__ == "__main__":
    main()
