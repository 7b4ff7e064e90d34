"""worker/requests/deadline.py, the one JOB_TIMEOUT_S rule, on plain async generators (the engine paths that use it:
tests/requests/test_cancellation.py, tests/routes/test_openai_routes.py)."""

from __future__ import annotations

import asyncio

import pytest

from worker.requests.deadline import Deadline
from worker.requests.errors import JobError


async def ticks(closed: list[str], every_s: float = 0.02):
    try:
        for i in range(10_000):
            await asyncio.sleep(every_s)
            yield i
    finally:
        closed.append("closed")


def test_a_stream_past_its_deadline_ends_in_the_timeout_error_and_its_wait_is_cancelled():
    closed: list[str] = []

    async def scenario():
        got = []
        with pytest.raises(JobError) as raised:
            async for item in Deadline(0.2).each(ticks(closed)):
                got.append(item)
        return got, raised.value

    got, error = asyncio.run(scenario())
    assert error.type == "timeout" and "JOB_TIMEOUT_S=0.2" in error.message and error.fix
    assert got and closed == ["closed"], "the wait for the next item was cancelled, closing the stream"


def test_the_deadline_never_fires_inside_the_callers_code_between_two_items():
    async def scenario():
        got = []
        with pytest.raises(JobError):
            async for item in Deadline(0.05).each(ticks([])):
                got.append(item)
                await asyncio.sleep(0.2)  # the caller's own await runs past the deadline, uncancelled
        return got

    assert asyncio.run(scenario()) == [0]


def test_a_cancel_from_outside_stays_a_cancel():
    async def consume():
        async for _ in Deadline(30).each(ticks([])):
            pass

    async def scenario():
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_an_await_past_its_deadline_ends_in_the_same_error():
    async def scenario():
        return await Deadline(0.05).wait(asyncio.sleep(5))

    with pytest.raises(JobError, match="JOB_TIMEOUT_S=0.05"):
        asyncio.run(scenario())


def test_a_stream_that_ends_in_time_is_whole():
    async def short():
        for i in range(3):
            yield i

    async def scenario():
        return [item async for item in Deadline(5).each(short())]

    assert asyncio.run(scenario()) == [0, 1, 2]
