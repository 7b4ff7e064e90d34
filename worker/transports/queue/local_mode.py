"""The runpod SDK's local modes (`python handler.py`, `--test_input`, `--rp_serve_api`) told apart from a
deployed worker taking jobs from RunPod, and the handler view local test mode needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from config.environment import runpod_job_api_url, runpod_realtime_port


def is_local_test_run(argv: list[str]) -> bool:
    """Whether the SDK will run one job from test_input and exit (it calls handlers without streaming)."""
    if "--rp_serve_api" in argv or runpod_realtime_port():
        return False
    return any(arg.startswith("--test_input") for arg in argv) or not runpod_job_api_url()


def runs_job_loop(argv: list[str]) -> bool:
    """Whether the SDK will take jobs from RunPod, running its fitness checks first (as runpod.serverless.worker)."""
    return not is_local_test_run(argv) and "--rp_serve_api" not in argv and not runpod_realtime_port()


def collect_stream(handler: Callable[[dict[str, Any]], AsyncIterator[Any]]):
    """A non-generator view of the handler for the SDK's local test mode, which runs handlers with
    `run_job` and would otherwise print a generator object: one result, or the list of stream chunks."""

    async def run_to_end(job: dict[str, Any]) -> Any:
        chunks = [chunk async for chunk in handler(job)]
        errors = [c for c in chunks if isinstance(c, dict) and "error" in c]
        if errors:
            return errors[-1]
        return chunks[0] if len(chunks) == 1 else chunks

    return run_to_end
