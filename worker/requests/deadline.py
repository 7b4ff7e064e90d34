"""JOB_TIMEOUT_S, the one deadline of every request (native, pooling, route): an await or a stream bounded by
it, and the one error it ends with. Bounding each await (not a timer around the whole job) means the deadline
never fires inside a caller's code between two items, and an abandoned stream is closed by its caller's
`aclosing`, which aborts the engine request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from worker.requests.errors import JobError

T = TypeVar("T")


class Deadline:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = asyncio.get_running_loop().time() + timeout_s

    def error(self) -> JobError:
        return JobError(
            "timeout",
            f"the request ran longer than JOB_TIMEOUT_S={self.timeout_s:g} s and was aborted",
            "Ask for less (fewer tokens with max_tokens, fewer texts), or raise JOB_TIMEOUT_S on the endpoint.",
        )

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """`awaitable`'s result, or the timeout JobError once the deadline has passed."""
        try:
            async with asyncio.timeout_at(self.at):
                return await awaitable
        except TimeoutError:
            raise self.error() from None

    async def each(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """`items`, ending in the timeout JobError once the deadline has passed. One timer per stream, not one
        per item (the per-token path stays a flag check): at the deadline it cancels only a wait for the next
        item, never the caller's own code between two."""
        iterator = aiter(items)
        task = asyncio.current_task()
        state = {"waiting": False, "expired": False}

        def expire() -> None:
            state["expired"] = True
            if state["waiting"]:
                task.cancel()

        timer = asyncio.get_running_loop().call_at(self.at, expire)
        try:
            while True:
                if state["expired"]:
                    raise self.error()
                state["waiting"] = True
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if state["expired"] and task.uncancel() == 0:  # our cancel, and no one else's
                        raise self.error() from None
                    raise
                finally:
                    state["waiting"] = False
                yield item
        finally:
            timer.cancel()
