"""`openai_route` jobs, answered by vLLM's own serving layer (OpenAI, Anthropic, pooling, tokenize) on the
worker's one engine.

RunPod's OpenAI base URL (https://api.runpod.ai/v2/<endpoint_id>/openai/v1) turns each request into a
job {"openai_route": "/v1/chat/completions", "openai_input": <request body>}. We build vLLM's app state
(`init_app_state`, as `vllm serve` does) on the running AsyncLLM, pick the route in the one route table
(worker/routes/table.py), validate the body with vLLM's request model and call its serving class: no
second engine, no HTTP hop, no protocol of our own.

Output, per job:
- stream: true  -> the SSE events vLLM writes ("data: {...}\n\n" ... "data: [DONE]\n\n"), joined into
  job chunks by the native streams' flush rule (the first token at once, then at most one chunk per
  STREAM_FLUSH_INTERVAL_MS, since each chunk is one POST to RunPod). RunPod relays them verbatim and
  joined events are still valid SSE. An error vLLM meets mid-stream is its own SSE error event
  ("data: {"error": ...}"), which the openai client raises; so is JOB_TIMEOUT_S running out.
- otherwise     -> one chunk: the response JSON (a dict).
- an error before any output (unknown model or route, malformed body, bad parameter, max_tokens past
  the context), streaming or not -> the job fails with one chunk {"error": "<JSON>"}, the JSON being
  OpenAI's error body {"error": {"message", "type", "param", "code"}} (code: the HTTP status), or on
  Anthropic's routes Anthropic's {"type": "error", "error": {"type", "message"}} (the type names the
  status). So the relay can answer with that status and body before any SSE, as `vllm serve` does.
  Why a JSON *string*: the runpod SDK fails a job on any chunk with a truthy "error" and keeps only
  `str(error)`; a dict would reach the relay as a Python repr no client parses. worker-vllm yields
  `ErrorResponse.model_dump()`, which went through as a normal output while vLLM's error body was flat
  and becomes such a repr now that it is nested under "error". The string also matches native jobs'
  errors ({"error": "<JSON>"}, worker/requests/errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import State
from starlette.responses import JSONResponse, Response

from config.settings import WorkerSettings
from worker.jobs.output import coalesce_events, until
from worker.model_files.adapters import Adapter
from worker.requests.errors import JobError
from worker.requests.limits import (
    INVALID_TEXT,
    InputLimits,
    first_invalid_text,
    text_chars,
)
from worker.requests.lora import openai_lora_modules
from worker.routes.table import NO_STORED_RESPONSES, ROUTES, Route, find_route
from worker.startup.server_args import server_args
from worker.vllm_api import (
    AnthropicError,
    AnthropicErrorResponse,
    AsyncLLM,
    ErrorResponse,
    ResponsesRequest,
    VLLMValidationError,
    clean_loc_for_param,
    create_error_response,
    init_app_state,
    responses_sse_events,
)

log = logging.getLogger(__name__)

# Anthropic's error type for each HTTP status (https://docs.anthropic.com/en/api/errors): a relay answers
# an Anthropic-shaped failure with the status its type stands for.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


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

    async def handle(self, job_input: dict, job_id: str) -> AsyncIterator[Any]:
        """One openai_route job -> its output chunks (see the module docstring)."""
        path = job_input.get("openai_route")
        found = find_route(path)
        route = found[0] if found else None
        dialect = route.dialect if route else "openai"
        deadline = asyncio.get_running_loop().time() + self.settings.job_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._call(path, found, job_input.get("openai_input"))
        except TimeoutError:
            result = self._timeout_error()
        except Exception as error:
            if self.engine.errored:  # engine death: the job handler fails the job and restarts the worker
                raise
            result = create_error_response(error)  # typed and coded as vLLM's server would answer it
            if result.error.code >= HTTPStatus.INTERNAL_SERVER_ERROR:
                log.exception("openai job %s failed unexpectedly", job_id)
        if isinstance(result, Response):
            result = _from_http_response(result)
        if isinstance(result, ErrorResponse):
            log.info("openai job %s failed: %s %s", job_id, result.error.code, result.error.type)
            yield error_output(result, dialect)
        elif isinstance(result, BaseModel):
            # As vLLM's routers write them: Anthropic's without nulls, the others by field alias.
            yield result.model_dump(mode="json", exclude_none=True) if dialect == "anthropic" else result.model_dump(
                mode="json", by_alias=True
            )
        elif isinstance(result, dict):
            yield result
        else:
            if path == "/v1/responses":  # vLLM's Responses stream yields event objects; its router writes SSE
                result = responses_sse_events(result)
            # aclosing: a cancelled job closes vLLM's generator, which aborts the engine request.
            async with contextlib.aclosing(result) as events:
                try:
                    async for chunk in coalesce_events(
                        until(deadline, events),
                        flush_interval_s=self.settings.stream_flush_interval_ms / 1000,
                        max_chars=self.settings.stream_max_chunk_chars,
                        immediate=route.first_token_event if route else 1,
                    ):
                        yield chunk
                except TimeoutError:
                    yield _stream_error_event(self._timeout_error(), dialect)

    async def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any] | ErrorResponse:
        """A route's whole (not streamed) answer as JSON, or its error: for native jobs that vLLM's
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

    def _timeout_error(self) -> ErrorResponse:
        return create_error_response(
            f"the request ran longer than JOB_TIMEOUT_S={self.settings.job_timeout_s:g} s and was aborted",
            err_type="TimeoutError",
            status_code=HTTPStatus.REQUEST_TIMEOUT,
        )

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
        refused = _over_limits(body, self.limits)
        if refused is not None:
            return refused
        request = _parse(route.adapter, body)
        if isinstance(request, ErrorResponse):
            return request
        refusal = _refuse_stored_state(request)
        if refusal is not None:
            return refusal
        return await answer(request, None)  # no HTTP request behind a job: vLLM takes None for it


def _over_limits(body: Any, limits: InputLimits) -> ErrorResponse | None:
    """The worker sees the body before vLLM: a body over MAX_INPUT_CHARS, text that is not Unicode, or a prompt
    too long in characters for the context is refused before vLLM validates, renders or tokenizes it."""
    size = limits.input_too_large(body)
    if size is not None:
        problem, fix = limits.describe_input_limit(size)
        return create_error_response(
            f"{problem}. {fix}", err_type="RequestEntityTooLarge",
            status_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE, param="openai_input",
        )
    loc = first_invalid_text(body)
    if loc is not None:
        param = ".".join(map(str, loc)) or "openai_input"
        problem, fix = INVALID_TEXT
        return create_error_response(f"{param}: {problem}. {fix}", err_type=HTTPStatus.BAD_REQUEST.phrase, param=param)
    if not isinstance(body, dict):
        return None
    # A completions prompt is one text or a list of them (or token ids, which vLLM counts cheaply itself).
    texts: list[tuple[str, int]] = []
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.append(("prompt", len(prompt)))
    elif isinstance(prompt, list):
        texts += [(f"prompt.{i}", len(text)) for i, text in enumerate(prompt) if isinstance(text, str)]
    if "messages" in body:
        texts.append(("messages", text_chars(body["messages"])))
    for param, chars in texts:
        if limits.prompt_too_long(chars):
            problem, fix = limits.describe_prompt_limit(chars)
            return create_error_response(f"{problem}. {fix}", err_type=HTTPStatus.BAD_REQUEST.phrase, param=param)
    return None


def _refuse_stored_state(request: Any) -> ErrorResponse | None:
    """Responses API requests that need a stored response, refused with the reason (routes.NO_STORED_RESPONSES).
    `store: true` itself is accepted and not honoured, as `vllm serve` does without a store."""
    if not isinstance(request, ResponsesRequest):
        return None
    for param, wanted in (("previous_response_id", request.previous_response_id), ("background", request.background)):
        if wanted:
            return create_error_response(
                f"{param} needs a stored response, and {NO_STORED_RESPONSES}. Send the whole conversation in "
                "`input` instead (or as `previous_input_messages`), and wait for the answer in the same job",
                err_type="invalid_request_error",
                param=param,
            )
    return None


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


def error_output(response: ErrorResponse, dialect: str = "openai") -> dict[str, str]:
    """A failed job's one chunk: {"error": "<JSON>"}, the JSON being the route's own error body:
    OpenAI's {"error": {"message", "type", "param", "code"}} or Anthropic's {"type": "error", "error":
    {"type", "message"}} (Anthropic's type names its HTTP status, ANTHROPIC_ERROR_TYPES)."""
    return {"error": json.dumps(_error_body(response, dialect), ensure_ascii=False)}


def _error_body(response: ErrorResponse, dialect: str) -> dict[str, Any]:
    if dialect != "anthropic":
        return response.model_dump()
    code = response.error.code
    error_type = ANTHROPIC_ERROR_TYPES.get(code, "invalid_request_error" if code < 500 else "api_error")
    return AnthropicErrorResponse(error=AnthropicError(type=error_type, message=response.error.message)).model_dump()


def _stream_error_event(response: ErrorResponse, dialect: str) -> str:
    """An error once a stream has started: Anthropic's `error` event, or the SSE error OpenAI's client raises."""
    body = json.dumps(_error_body(response, dialect), ensure_ascii=False)
    return f"event: error\ndata: {body}\n\n" if dialect == "anthropic" else f"data: {body}\n\n"


def _parse(adapter: TypeAdapter, body: Any) -> Any:
    """The body as vLLM's request model, or the 400 `vllm serve` answers a body it cannot validate with."""
    if not isinstance(body, dict):
        return create_error_response(
            f"openai_input must be the request body as a JSON object, got {type(body).__name__}",
            err_type=HTTPStatus.BAD_REQUEST.phrase,
            param="openai_input",
        )
    try:
        return adapter.validate_python(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        # As vLLM's validation handler: the parameter a vLLM check names, else the first field's path.
        named = [
            e["ctx"]["error"].parameter for e in errors if isinstance(e.get("ctx", {}).get("error"), VLLMValidationError)
        ]
        param = named[0] if named else clean_loc_for_param(errors[0]["loc"]) or None
        lines = [f"  {clean_loc_for_param(e['loc']) or 'body'}: {e['msg']}" for e in errors[:10]]
        message = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''}:\n" + "\n".join(lines)
        return create_error_response(message, err_type=HTTPStatus.BAD_REQUEST.phrase, param=param)


# The HTTP status a client sees for a job that failed outside vLLM's serving layer.
_STATUS_OF_JOB_ERROR = {
    "timeout": (HTTPStatus.REQUEST_TIMEOUT, "TimeoutError"),
    "engine_start_failed": (HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
    "engine_dead": (HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
}


def openai_error_output(error: JobError, route: Any = None) -> dict[str, str]:
    """A job error (engine start-up failed or died, timeout, internal) as the route's error body that
    openai_route jobs fail with, like every other error on these routes."""
    status, err_type = _STATUS_OF_JOB_ERROR.get(error.type, (HTTPStatus.INTERNAL_SERVER_ERROR, "InternalServerError"))
    message = f"{error.message}. {error.fix}" if error.fix else error.message
    found = find_route(route)
    return error_output(
        create_error_response(message, err_type=err_type, status_code=status), found[0].dialect if found else "openai"
    )


