"""A route's errors in its own API's shape: OpenAI's {"error": {"message", "type", "param", "code"}} or
Anthropic's {"type": "error", "error": {"type", "message"}} (the type names the HTTP status), whole or as
the SSE error event of a stream already started; and the worker's own failures (timeout, engine start-up
failed or died) as such an error."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from worker.requests.errors import JobError
from worker.routes.table import find_route
from worker.vllm_api import (
    AnthropicError,
    AnthropicErrorResponse,
    ErrorResponse,
    create_error_response,
)

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


def error_body(response: ErrorResponse, dialect: str) -> dict[str, Any]:
    """vLLM's error as the route's API writes it (`dialect`: "openai" or "anthropic")."""
    if dialect != "anthropic":
        return response.model_dump()
    code = response.error.code
    error_type = ANTHROPIC_ERROR_TYPES.get(code, "invalid_request_error" if code < 500 else "api_error")
    return AnthropicErrorResponse(error=AnthropicError(type=error_type, message=response.error.message)).model_dump()


def stream_error_event(response: ErrorResponse, dialect: str) -> str:
    """An error once a stream has started: Anthropic's `error` event, or the SSE error OpenAI's client raises."""
    body = json.dumps(error_body(response, dialect), ensure_ascii=False)
    return f"event: error\ndata: {body}\n\n" if dialect == "anthropic" else f"data: {body}\n\n"


# The HTTP status a client sees for a request that failed outside vLLM's serving layer.
_STATUS_OF_JOB_ERROR = {
    "timeout": (HTTPStatus.REQUEST_TIMEOUT, "TimeoutError"),
    "engine_start_failed": (HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
    "engine_dead": (HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
}


def job_error_response(error: JobError) -> ErrorResponse:
    """A worker failure (timeout, engine start-up failed or died, internal) as the error vLLM's server would
    answer with, so a route's clients get the route's error body whatever failed."""
    status, err_type = _STATUS_OF_JOB_ERROR.get(error.type, (HTTPStatus.INTERNAL_SERVER_ERROR, "InternalServerError"))
    message = f"{error.message}. {error.fix}" if error.fix else error.message
    return create_error_response(message, err_type=err_type, status_code=status)


def dialect_of(path: Any) -> str:
    """The API a route path speaks ("openai" for an unknown path: the worker's own errors are OpenAI-shaped)."""
    found = find_route(path)
    return found[0].dialect if found else "openai"
