"""Session fixtures: the tiny model, one session event loop, and ONE engine for the whole session.
Helpers that tests import live in tests/helpers/ (conftest holds fixtures only).

The environment is set before vLLM is imported: offline hub, a small CPU KV cache, no graph compile.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Eager mode + no dynamo: the engine starts in ~15 s instead of ~50 s on the CPU build.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "true")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from devtools.tiny_model import make_tiny_model  # noqa: E402
from tests.helpers import TINY_MODEL_DIR, FatalRecorder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return make_tiny_model(TINY_MODEL_DIR)


@pytest.fixture(scope="session")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def worker_settings(tiny_model):
    return load_settings(model_name=str(tiny_model), enforce_eager=True, max_concurrency=32)


@pytest.fixture(scope="session")
def engine_handle(loop, worker_settings):
    from worker.engine.handle import EngineHandle

    handle = EngineHandle(worker_settings, on_fatal=FatalRecorder())
    yield handle
    handle.shutdown()
    loop.run_until_complete(asyncio.sleep(0))  # let the cancelled watchdog task finish


@pytest.fixture(scope="session")
def running_engine(loop, engine_handle):
    """The session's vLLM engine, started (tests that look at the engine itself need it built first)."""
    return loop.run_until_complete(engine_handle.get())


@pytest.fixture(scope="session")
def job_handler(worker_settings, engine_handle):
    from worker.jobs.dispatch import JobHandler

    return JobHandler(worker_settings, engine_handle).handle


@pytest.fixture(scope="session")
def run_job(loop, job_handler):
    """run_job(input) -> the list of chunks the handler yields, as the SDK would collect them."""

    def run(job_input: Any, job_id: str = "test-job") -> list[Any]:
        async def collect():
            return [chunk async for chunk in job_handler({"id": job_id, "input": job_input})]

        return loop.run_until_complete(collect())

    return run


_exit_status = 0


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """Leave as soon as the report is out. After a full run, pytest's final garbage collection can
    reach a zmq context of vLLM's engine client and block forever in its term() (seen in CI-like
    runs, after "N passed" was printed); the engines are already shut down at this point."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


# --- the OpenAI-compatible routes of the session engine, through a RunPod-like gateway ------------------------


@pytest.fixture(scope="session")
def gateway(loop, job_handler):
    from tests.helpers.openai_gateway import OpenAIGateway

    gateway = OpenAIGateway(job_handler)
    loop.run_until_complete(gateway.start())
    yield gateway
    loop.run_until_complete(gateway.stop())


@pytest.fixture(scope="session")
def call(loop):
    """call(fn, *args, **kwargs): run a blocking client call in a thread while the session loop runs."""

    def run(fn, *args, **kwargs):
        return loop.run_until_complete(asyncio.to_thread(fn, *args, **kwargs))

    return run


@pytest.fixture(scope="session")
def client(gateway):
    """The official openai client, pointed at the gateway."""
    import openai

    return openai.OpenAI(base_url=gateway.base_url, api_key="unused-by-the-test-gateway", max_retries=0, timeout=180)


@pytest.fixture(scope="session")
def model(worker_settings):
    return worker_settings.served_name
