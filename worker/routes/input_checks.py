"""Checks on a route's request before vLLM sees it, each answering as `vllm serve` would (an ErrorResponse) or
None: the worker's input limits (before any tokenization), Responses API requests that need a stored response,
and the body parsed by vLLM's own request model."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import TypeAdapter, ValidationError

from worker.requests.limits import (
    INVALID_TEXT,
    InputLimits,
    first_invalid_text,
    text_chars,
)
from worker.routes.table import NO_STORED_RESPONSES
from worker.vllm_api import (
    ErrorResponse,
    ResponsesRequest,
    VLLMValidationError,
    clean_loc_for_param,
    create_error_response,
)


def refuse_over_limits(body: Any, limits: InputLimits) -> ErrorResponse | None:
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


def refuse_stored_state(request: Any) -> ErrorResponse | None:
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


def parse_body(adapter: TypeAdapter, body: Any) -> Any:
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
