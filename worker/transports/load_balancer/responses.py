"""One HTTP request to a route of the table, answered through the route layer (worker/routes/serving.py) as
`vllm serve` would answer it: the response JSON with its status, or its SSE events written one by one as vLLM
yields them (no coalescing: no RunPod post per chunk here), or the error in the route's API shape.

A client that disconnects mid-stream closes the events at once (EventStream), which aborts the engine request.
The body is read up to a bound before it is parsed, so a huge body costs no more memory than that bound.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Send

from worker.requests.deadline import Deadline
from worker.requests.errors import JobError
from worker.routes.errors import error_body, job_error_response, stream_error_event
from worker.routes.serving import RouteAnswer
from worker.routes.table import Route
from worker.transports.load_balancer.lifecycle import ENGINE_DEAD, Lifecycle
from worker.vllm_api import ErrorResponse, create_error_response

# The raw body may take this many bytes per character the input limit counts: JSON writes a character outside
# the Basic Multilingual Plane as two \uXXXX escapes (12 bytes); it is one character once parsed.
BODY_BYTES_PER_CHAR = 12
# Seconds a client is told to wait (Retry-After) when the worker is starting, full or draining.
RETRY_AFTER_S = 1

STARTING = JobError(
    "engine_starting",
    "the engine is still starting (GET /ping answers 204 until it serves)",
    "Retry shortly; RunPod sends requests only to workers whose /ping answers 200.",
)


class EventStream(StreamingResponse):
    """SSE events as they come; the events are closed whatever ends the response (a client that disconnects
    cancels the send, which would otherwise leave vLLM's generator open until garbage collection)."""

    media_type = "text/event-stream"

    async def stream_response(self, send: Send) -> None:
        async with contextlib.aclosing(self.body_iterator):
            await super().stream_response(send)


def error_response(error: ErrorResponse, dialect: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error, dialect), status_code=error.error.code, headers=headers)


def worker_error_response(error: JobError, dialect: str) -> JSONResponse:
    """A failure of the worker (starting, start-up failed, engine dead) as the route's error, with Retry-After."""
    return error_response(job_error_response(error), dialect, {"Retry-After": str(RETRY_AFTER_S)})


async def answer_request(lifecycle: Lifecycle, route: Route, request: Request) -> Response:
    routes = lifecycle.routes
    if routes is None or lifecycle.engine_dead:
        failure = ENGINE_DEAD if lifecycle.engine_dead else lifecycle.start_error or STARTING
        return worker_error_response(failure, route.dialect)
    body = await read_body(request, routes.limits.max_input_chars * BODY_BYTES_PER_CHAR, takes_body=route.adapter is not None)
    if isinstance(body, ErrorResponse):
        return error_response(body, route.dialect)
    deadline = Deadline(lifecycle.settings.job_timeout_s)
    try:
        answer = await routes.answer(request.scope["path"], body, deadline, f"http-{uuid.uuid4().hex}")
    except Exception:
        if not lifecycle.engine_dead:
            raise
        lifecycle.report_engine_dead()  # the route layer raises only when the engine died
        return worker_error_response(ENGINE_DEAD, route.dialect)
    if answer.events is None:
        return JSONResponse(answer.body, status_code=answer.status)
    return EventStream(_events_until_engine_death(answer, lifecycle))


async def _events_until_engine_death(answer: RouteAnswer, lifecycle: Lifecycle) -> AsyncIterator[str]:
    """The answer's events; if the engine dies mid-stream, a last SSE error event saying so."""
    async with contextlib.aclosing(answer.events) as events:
        try:
            async for event in events:
                yield event
        except Exception:
            if not lifecycle.engine_dead:
                raise
            lifecycle.report_engine_dead()
            yield stream_error_event(job_error_response(ENGINE_DEAD), answer.dialect)


async def read_body(request: Request, max_bytes: int, *, takes_body: bool) -> Any:
    """The body as JSON (None when empty), or the 4xx error vLLM's server answers a body it cannot take with."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if takes_body:
            return create_error_response("the request has no body: send the request as a JSON object")
        return None
    try:
        body = json.loads(raw)
    except ValueError as error:  # not JSON, or not UTF-8
        return create_error_response(f"the request body is not valid JSON: {error}")
    if takes_body and not isinstance(body, dict):
        return create_error_response(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _too_large(max_bytes: int) -> ErrorResponse:
    return create_error_response(
        f"the request body is more than {max_bytes:,} bytes: more than MAX_INPUT_CHARS allows. Send a shorter "
        "prompt, or raise MAX_INPUT_CHARS",
        err_type="RequestEntityTooLarge",
        status_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    )
