"""Job results and stream chunks posted until RunPod acknowledges them: in order, each once.

The runpod SDK 1.10.0 posts each result and each stream chunk with three attempts (`rp_http._transmit`:
aiohttp_retry's FibonacciRetry, which retries a 5xx answer but no connection error) and then drops it with an
error line. A platform blip of a few seconds then loses a finished job's result (the platform shows the job
IN_PROGRESS until its execution timeout, then runs it again or fails it) or leaves a gap in a stream.

`install()` replaces the two functions the SDK's `rp_job.handle_job` calls:
- `send_result` (the final result) hands the result to a background task and returns, so the job's slot takes
  the next job at once. The task posts it until it is acknowledged, retrying refusals (5xx, 408, 429), connection
  errors and timeouts with capped exponential backoff and full jitter (the `backoff` package, a dependency of the
  SDK), for RESULT_DELIVERY_TIMEOUT_S at most. Any other 4xx is the platform's final word (an unknown or expired
  job): not retried. A result given up on is logged with the job id and its size. Until its result is settled
  the job stays in the SDK's job progress, which the heartbeat reports to RunPod, so the platform does not take
  it for lost; it does not count against the worker's concurrency.
- `stream_result` (one chunk) retries the same way before returning, so `handle_job` asks the job's generator
  for its next chunk only once this one is acknowledged (vLLM keeps generating meanwhile; the text made in the
  wait comes as the next chunk). A chunk given up on ends that job's stream: its later chunks are not posted, so
  a stream client never sees a gap; the final result, the whole output, is still delivered.

A timeout or a dropped connection after the request was sent is ambiguous: the platform may have recorded it.
Both posts are retried then (at least once, not at most once): a second final result is harmless (RunPod keeps a
finished job's first result), and a stream chunk seen twice is the rarer and visible failure where a lost one is
silent (docs/delivery.md has the reasoning). A refusal or a connection that never opened cannot duplicate.

On SIGTERM the SDK drains the running jobs; then `DeliveringJobScaler` waits for the results still being
delivered until RESULT_DELIVERY_GRACE_S after the signal, and logs each one still undelivered then.

Requests go through the SDK's own session (its auth headers), URLs (`rp_http.JOB_DONE_URL`, `JOB_STREAM_URL`),
body and headers, as `_transmit` and `_handle_result` build them; the job id is sent as X-Request-ID on each
request instead of being set on the shared session. Installed only on the SDK code this was written against
(`PINNED_*_SHA256`) and over the event-driven job loop; on any other it warns and the SDK posts as it does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from typing import Any

import aiohttp
import backoff
from runpod.serverless.modules import rp_http, rp_job, rp_scale
from runpod.version import __version__ as runpod_version

from worker.transports.queue.job_loop import PINNED_RUNPOD_VERSION, EventDrivenJobScaler, source_sha256

log = logging.getLogger(__name__)

# sha256 of `inspect.getsource` in runpod 1.10.0 of what this module copies or relies on: the request `_transmit`
# makes, the URL and body `_handle_result` builds, and how `rp_job.handle_job` calls send_result / stream_result
# (chunks one at a time, then the result). A new SDK version: re-read the three, adapt, then re-pin.
PINNED_TRANSMIT_SHA256 = "fc9d60458af96c8a0eb199cececa4567735921defe1cf290a31bd38be9647457"
PINNED_HANDLE_RESULT_SHA256 = "ce88ccb812bcc41f5b9f2200aafe3c61c84a84ed7a6c939bd1034755fd564d9f"
PINNED_HANDLE_JOB_SHA256 = "849f93639768bc87621130e1df5c4475e7a8c5665d890b2ca707903cb2672b8c"
# Waits between attempts: full jitter over FIRST * 2^n, capped; a refusal blip of a few hundred ms costs about
# that much, a long outage is probed every few seconds.
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 4.0
# One attempt that hangs must not use up the whole delivery bound (the SDK's session allows 600 s).
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=60)
# Retried besides every 5xx: the platform asks for the request again later.
RETRIED_STATUSES = frozenset({408, 429})
# The headers the SDK's `_transmit` posts a result with.
POST_HEADERS = {"charset": "utf-8", "Content-Type": "application/x-www-form-urlencoded"}
DELIVERY_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def sdk_is_pinned_one() -> bool:
    return (
        runpod_version == PINNED_RUNPOD_VERSION
        and source_sha256(rp_http._transmit) == PINNED_TRANSMIT_SHA256
        and source_sha256(rp_http._handle_result) == PINNED_HANDLE_RESULT_SHA256
        and source_sha256(rp_job.handle_job) == PINNED_HANDLE_JOB_SHA256
    )


def refused_for_good(error: Exception) -> bool:
    """An answer the platform would give again: a 4xx other than 408/429."""
    return (
        isinstance(error, aiohttp.ClientResponseError)
        and error.status < 500
        and error.status not in RETRIED_STATUSES
    )


class ResultDeliveries:
    """The SDK's `send_result` and `stream_result`, posting until acknowledged; the results still on their way."""

    def __init__(self, timeout_s: float, grace_s: float) -> None:
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.results: dict[str, asyncio.Task] = {}  # job id -> the task delivering its final result
        self._stream_ended: set[str] = set()  # jobs whose stream stopped at a chunk never acknowledged
        self._no_retry_after = math.inf  # time.monotonic(); set at SIGTERM

    def stop_retrying_in(self, seconds: float) -> None:
        """From `seconds` from now on, a failed attempt is the last one (a second call keeps the first deadline)."""
        self._no_retry_after = min(self._no_retry_after, time.monotonic() + seconds)

    async def send_result(
        self, session: aiohttp.ClientSession, job_data: Any, job: dict, is_stream: bool = False
    ) -> None:
        """Start delivering the job's final result in the background; return at once."""
        job_id = job["id"]
        body = serialized(job_data, job_id)
        self._stream_ended.discard(job_id)
        if body is None:
            return
        url = rp_http.JOB_DONE_URL.replace("$ID", job_id) + f"&isStream={'true' if is_stream else 'false'}"
        task = asyncio.create_task(self._deliver_result(session, url, body, job_id))
        self.results[job_id] = task
        task.add_done_callback(functools.partial(self._forget_result, job_id))

    async def stream_result(self, session: aiohttp.ClientSession, job_data: Any, job: dict) -> None:
        """Post one stream chunk until acknowledged; after a chunk given up on, post none of the job's later ones."""
        job_id = job["id"]
        body = serialized(job_data, job_id)
        if job_id in self._stream_ended or body is None:
            return
        url = rp_http.JOB_STREAM_URL.replace("$ID", job_id) + "&isStream=false"
        if not await self._post_until_acknowledged(session, url, body, job_id, "stream chunk"):
            self._stream_ended.add(job_id)
            log.error("job %s: its stream ends here (no later chunk is posted); its result has it all", job_id)

    async def drain(self) -> None:
        """Wait for the results still being delivered until the grace after SIGTERM is over; cancel the rest."""
        tasks = set(self.results.values())
        if not tasks:
            return
        wait_s = max(0.0, self._no_retry_after - time.monotonic())
        log.info("waiting up to %.1f s for %d result(s) still being delivered", wait_s, len(tasks))
        _, undelivered = await asyncio.wait(tasks, timeout=None if math.isinf(wait_s) else wait_s)
        for task in undelivered:
            task.cancel()  # logged by _deliver_result
        await asyncio.gather(*undelivered, return_exceptions=True)

    async def _deliver_result(self, session: aiohttp.ClientSession, url: str, body: str, job_id: str) -> None:
        try:
            await self._post_until_acknowledged(session, url, body, job_id, "result")
        except asyncio.CancelledError:
            log.error("job %s: its result (%d bytes) was not delivered before the worker exited", job_id, size(body))
            raise
        finally:
            rp_http.log.info("Finished.", job_id)  # the SDK's line once a result is settled

    async def _post_until_acknowledged(
        self, session: aiohttp.ClientSession, url: str, body: str, job_id: str, what: str
    ) -> bool:
        headers = {**POST_HEADERS, "X-Request-ID": job_id}

        async def post_once() -> None:
            post = session.post(url, data=body, headers=headers, raise_for_status=True, timeout=ATTEMPT_TIMEOUT)
            async with post as answer:
                await answer.text()

        def log_retried(details: dict) -> None:
            if details["tries"] > 1:
                log.info("job %s: %s delivered at try %d, %.1f s", job_id, what, details["tries"], details["elapsed"])

        def log_lost(details: dict) -> None:
            log.error(
                "job %s: its %s (%d bytes) was not delivered: %d attempt(s) in %.1f s, the last: %s",
                job_id, what, size(body), details["tries"], details["elapsed"], described(details["exception"]),
            )

        retrying = backoff.on_exception(
            backoff.expo,
            DELIVERY_ERRORS,
            factor=BACKOFF_FIRST_S,
            max_value=BACKOFF_CAP_S,
            jitter=backoff.full_jitter,
            max_time=self.timeout_s,
            giveup=lambda error: refused_for_good(error) or time.monotonic() >= self._no_retry_after,
            on_success=log_retried,
            on_giveup=log_lost,
            logger=None,
        )(post_once)
        try:
            await retrying()
        except DELIVERY_ERRORS:
            return False
        return True

    def _forget_result(self, job_id: str, task: asyncio.Task) -> None:
        if self.results.get(job_id) is task:
            del self.results[job_id]


def described(error: Exception) -> str:
    """The failure in a few words: an aiohttp error's repr holds the request's headers, the API key among them."""
    if isinstance(error, aiohttp.ClientResponseError):
        return f"HTTP {error.status} {error.message}"
    return f"{type(error).__name__}: {error}"


def size(body: str) -> int:
    return len(body.encode())


def serialized(job_data: Any, job_id: str) -> str | None:
    """The body the SDK posts; None (logged, as the SDK logs it) for data JSON cannot carry."""
    try:
        return json.dumps(job_data, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        log.error("job %s: its result cannot be sent as JSON: %s", job_id, error)
        return None


class DeliveringJobScaler(EventDrivenJobScaler):
    """The event-driven job loop, which keeps a job in job progress while its result is delivered and, at
    shutdown, waits for the results still on their way."""

    deliveries: ResultDeliveries  # set by install(), shared with the rp_job functions it replaced

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self._held: set[str] = set()  # jobs kept in job progress until their results are settled

    def kill_worker(self) -> None:
        super().kill_worker()
        self.deliveries.stop_retrying_in(self.deliveries.grace_s)

    def current_occupancy(self) -> int:
        return super().current_occupancy() - len(self._held)

    async def handle_job(self, session, job: dict) -> None:
        try:
            await super().handle_job(session, job)  # its `finally` took the job out of job progress
        finally:
            delivery = self.deliveries.results.get(job["id"])
            if delivery is not None and not delivery.done():
                self.job_progress.add(job)  # still reported by the heartbeat while its result is on its way
                self._held.add(job["id"])
                delivery.add_done_callback(functools.partial(self._release, job))

    async def run_jobs(self, session) -> None:
        try:
            await super().run_jobs(session)
        finally:
            await self.deliveries.drain()  # before the SDK closes the session

    def _release(self, job: dict, _delivery: asyncio.Task) -> None:
        self._held.discard(job["id"])
        self.job_progress.remove(job)


def install(timeout_s: float, grace_s: float) -> bool:
    """Make the SDK post results and stream chunks until acknowledged (for `timeout_s` each at most); False when
    the SDK's own posting stays: `timeout_s` 0, another SDK, or the event-driven job loop not installed."""
    if timeout_s == 0:
        log.info("RESULT_DELIVERY_TIMEOUT_S=0: results and stream chunks are posted as the runpod SDK posts them")
        return False
    if not sdk_is_pinned_one() or rp_scale.JobScaler is not EventDrivenJobScaler:
        log.warning(
            "runpod %s is not the SDK result delivery was written for (runpod %s, with the event-driven job loop): "
            "results and stream chunks get the SDK's 3 attempts, then are dropped",
            runpod_version,
            PINNED_RUNPOD_VERSION,
        )
        return False
    deliveries = ResultDeliveries(timeout_s, grace_s)
    DeliveringJobScaler.deliveries = deliveries
    rp_job.send_result = deliveries.send_result
    rp_job.stream_result = deliveries.stream_result
    rp_scale.JobScaler = DeliveringJobScaler
    return True
