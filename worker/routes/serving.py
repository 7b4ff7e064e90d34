"""Every route `vllm serve` answers, answered in-process by vLLM's own serving layer (OpenAI, Anthropic,
pooling, tokenize) on the worker's one engine, for any transport (queue jobs, direct HTTP).

We build vLLM's app state (`init_app_state`, as `vllm serve` does) on the running AsyncLLM, pick the route in
the one route table (worker/routes/table.py), check the body (worker/routes/input_checks.py), validate it with
vLLM's request model and call its serving class: no second engine, no HTTP hop, no protocol of our own.
`answer` gives the response JSON, its SSE events as vLLM writes them, or the error in the route's API shape
(worker/routes/errors.py); JOB_TIMEOUT_S bounds it and ends a stream with an SSE error event.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from starlette.datastructures import State
from starlette.responses import JSONResponse, Response

from config.settings import WorkerSettings
from worker.model_files.adapters import Adapter
from worker.requests.deadline import Deadline
from worker.requests.errors import JobError
from worker.requests.limits import (
    InputLimits,
)
from worker.requests.lora import openai_lora_modules
from worker.routes.errors import error_body, job_error_response, stream_error_event
from worker.routes.input_checks import parse_body, refuse_over_limits, refuse_stored_state
from worker.routes.table import ROUTES, Route, find_route
from worker.startup.server_args import server_args
from worker.vllm_api import (
    AsyncLLM,
    ErrorResponse,
    create_error_response,
    init_app_state,
    responses_sse_events,
)

log = logging.getLogger(__name__)


@dataclass
class RouteAnswer:
    """What a route answers: a JSON body (the response, or the error when `status` is 4xx/5xx) or SSE events."""

    dialect: str  # "openai" or "anthropic": the API shape of the body and the events
    status: int = HTTPStatus.OK
    body: dict[str, Any] | None = None
    events: AsyncIterator[str] | None = None  # "data: {...}\n\n" ..., ending with an error event on a failure
    first_token_event: int = 1  # the event that carries the first token (a stream's role event comes before it)

    @property
    def failed(self) -> bool:
        return self.status >= HTTPStatus.BAD_REQUEST


async def _bounded(events: AsyncIterator[str], deadline: Deadline, dialect: str) -> AsyncIterator[str]:
    # aclosing: a caller that stops reading closes vLLM's generator, which aborts the engine request.
    async with contextlib.aclosing(events):
        try:
            async for event in deadline.each(events):
                yield event
        except JobError as error:  # the deadline, mid-stream
            yield stream_error_event(job_error_response(error), dialect)


class OpenAIRoutes:
    """vLLM's serving objects (its app state) and the route table that picks one for each job."""

    def __init__(self, engine: AsyncLLM, state: State, settings: WorkerSettings, limits: InputLimits) -> None:
        self.engine = engine
        self.settings = settings
        self.limits = limits
        self.state = state
        # A route is served when vLLM built its serving object for this model's tasks.
        self.served = tuple(route.path for route in ROUTES if getattr(state, route.serving, None) is not None)

    @classmethod
    async def create(
        cls,
        engine: AsyncLLM,
        settings: WorkerSettings,
        limits: InputLimits | None = None,
        adapters: Sequence[Adapter] = (),
    ) -> OpenAIRoutes:
        """vLLM's app state on the running engine, as `vllm serve` builds it from its options.
        adapters: LORA_MODULES as fetched; `model` = an adapter's name picks it, /v1/models lists them."""
        args = server_args(settings, engine.model_config.model)
        args.lora_modules = openai_lora_modules(list(adapters))
        # The reasoning parser is an engine option: the app state reads it from the engine's config.
        args.structured_outputs_config = engine.vllm_config.structured_outputs_config
        state = State()
        await init_app_state(engine, state, args, await engine.get_supported_tasks())
        if limits is None:
            limits = InputLimits.of(engine.get_tokenizer(), engine.model_config.max_model_len, settings.max_input_chars)
        responses = getattr(state, "openai_serving_responses", None)
        if responses is not None:
            # Even with VLLM_ENABLE_RESPONSES_API_STORE: a worker's store would only grow, and no other
            # worker could read it (routes.NO_STORED_RESPONSES).
            responses.enable_store = False
        return cls(engine, state, settings, limits)

    async def answer(self, path: Any, body: Any, deadline: Deadline, request_id: str) -> RouteAnswer:
        """One request to a route, as vLLM's server would answer it: its JSON, its SSE events (bounded by
        `deadline`, closing them aborts the engine request), or its error in the route's API shape."""
        found = find_route(path)
        route = found[0] if found else None
        dialect = route.dialect if route else "openai"
        try:
            result = await deadline.wait(self._call(path, found, body))
        except JobError as error:  # the deadline
            result = job_error_response(error)
        except Exception as error:
            if self.engine.errored:  # engine death: the caller fails the request and the worker exits
                raise
            result = create_error_response(error)  # typed and coded as vLLM's server would answer it
            if result.error.code >= HTTPStatus.INTERNAL_SERVER_ERROR:
                log.exception("route request %s failed unexpectedly", request_id)
        if isinstance(result, Response):
            result = _from_http_response(result)
        if isinstance(result, ErrorResponse):
            log.info("route request %s failed: %s %s", request_id, result.error.code, result.error.type)
            return RouteAnswer(dialect, status=result.error.code, body=error_body(result, dialect))
        if isinstance(result, BaseModel):
            # As vLLM's routers write them: Anthropic's without nulls, the others by field alias.
            dumped = result.model_dump(mode="json", exclude_none=True) if dialect == "anthropic" else result.model_dump(
                mode="json", by_alias=True
            )
            return RouteAnswer(dialect, body=dumped)
        if isinstance(result, dict):
            return RouteAnswer(dialect, body=result)
        if path == "/v1/responses":  # vLLM's Responses stream yields event objects; its router writes SSE
            result = responses_sse_events(result)
        return RouteAnswer(dialect, events=_bounded(result, deadline, dialect), first_token_event=route.first_token_event)

    async def json_answer(self, path: str, body: dict[str, Any]) -> dict[str, Any] | ErrorResponse:
        """A route's whole (not streamed) answer as JSON, or vLLM's error: for native jobs that vLLM's
        serving classes answer (worker/jobs/pooling.py)."""
        try:
            result = await self._call(path, find_route(path), body)
        except Exception as error:
            if self.engine.errored:
                raise
            result = create_error_response(error)
        if isinstance(result, Response):
            result = _from_http_response(result)
        return result.model_dump(mode="json", by_alias=True) if isinstance(result, BaseModel) and not isinstance(
            result, ErrorResponse
        ) else result

    async def _call(self, path: Any, found: tuple[Route, dict[str, str]] | None, body: Any) -> Any:
        if found is None or found[0].path not in self.served:
            served = ", ".join(self.served)
            return create_error_response(
                f"unknown openai_route {path!r}; for this model the worker serves {served}",
                err_type="NotFoundError",
                status_code=HTTPStatus.NOT_FOUND,
                param="openai_route",
            )
        route, _params = found
        if route.refused:
            return create_error_response(
                f"{route.path}: {route.refused}", err_type="NotFoundError", status_code=HTTPStatus.NOT_FOUND
            )
        answer = getattr(getattr(self.state, route.serving), route.method)
        if route.adapter is None:
            return await answer()
        refused = refuse_over_limits(body, self.limits)
        if refused is not None:
            return refused
        request = parse_body(route.adapter, body)
        if isinstance(request, ErrorResponse):
            return request
        refusal = refuse_stored_state(request)
        if refusal is not None:
            return refusal
        return await answer(request, None)  # no HTTP request behind a job: vLLM takes None for it


def _from_http_response(response: Response) -> dict | ErrorResponse:
    """vLLM's pooling servings answer with a finished HTTP response: its JSON body, or its error."""
    if not isinstance(response, JSONResponse):  # encoding_format "bytes": a binary body no job output holds
        return create_error_response(
            f"this request answers with {response.media_type or 'binary'} content, which a job's JSON output "
            "cannot carry; ask for JSON (for embeddings: encoding_format \"float\" or \"base64\")",
            param="encoding_format",
        )
    body = json.loads(response.body)
    if response.status_code >= HTTPStatus.BAD_REQUEST:
        return ErrorResponse.model_validate(body)
    return body


