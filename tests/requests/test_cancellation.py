"""Cancelled, abandoned and timed-out jobs abort their vLLM request: the engine stops generating for them."""

from __future__ import annotations

import asyncio

from tests.helpers import job_error

LONG_JOB = {"prompt": "Write a long story", "sampling_params": {"max_tokens": 1800, "ignore_eos": True}, "stream": True}


async def wait_until_idle(engine, timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while engine.get_num_unfinished_requests() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return engine.get_num_unfinished_requests()


def test_cancelling_the_job_task_aborts_the_request(loop, job_handler, running_engine):
    engine = running_engine

    async def scenario():
        first_chunk = asyncio.Event()

        async def job():
            # What the runpod SDK does: iterate the handler in a task, cancel the task on /cancel.
            async for _ in job_handler({"id": "cancel-me", "input": LONG_JOB}):
                first_chunk.set()

        task = asyncio.create_task(job())
        await asyncio.wait_for(first_chunk.wait(), 60)
        running = engine.get_num_unfinished_requests()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return running, await wait_until_idle(engine)

    running, after = loop.run_until_complete(scenario())
    assert running == 1
    assert after == 0


def test_a_stream_nobody_reads_any_more_is_aborted_when_closed(loop, job_handler, running_engine):
    engine = running_engine

    async def scenario():
        stream = job_handler({"id": "abandon-me", "input": LONG_JOB})
        await anext(stream)
        running = engine.get_num_unfinished_requests()
        await stream.aclose()
        return running, await wait_until_idle(engine)

    running, after = loop.run_until_complete(scenario())
    assert running == 1
    assert after == 0


def test_job_timeout_aborts_the_request_and_fails_the_job(loop, worker_settings, engine_handle, running_engine):
    from worker.jobs.dispatch import JobHandler

    handler = JobHandler(worker_settings.model_copy(update={"job_timeout_s": 0.5}), engine_handle).handle

    async def scenario():
        chunks = [c async for c in handler({"id": "slow", "input": {**LONG_JOB, "stream": False}})]
        return chunks, await wait_until_idle(running_engine)

    chunks, after = loop.run_until_complete(scenario())
    error = job_error(chunks)
    assert error["type"] == "timeout"
    assert "JOB_TIMEOUT_S=0.5" in error["message"]
    assert len(chunks) == 1, "no partial result before the timeout error"
    assert after == 0
