"""`openai_route` jobs, answered by vLLM's own OpenAI serving layer on the worker's one engine.

RunPod's OpenAI base URL (https://api.runpod.ai/v2/<endpoint_id>/openai/v1) turns each request into a
job {"openai_route": "/v1/chat/completions", "openai_input": <request body>}. We build vLLM's app state
(`init_app_state`, as `vllm serve` does) on the running AsyncLLM, validate the body with vLLM's request
models and call its serving classes: no second engine, no HTTP hop, no protocol of our own.

Output, per job:
- stream: true  -> the SSE events vLLM writes ("data: {...}\n\n" ... "data: [DONE]\n\n"), joined into
  job chunks by the native streams' flush rule (the first token at once, then at most one chunk per
  STREAM_FLUSH_INTERVAL_MS, since each chunk is one POST to RunPod). RunPod relays them verbatim and
  joined events are still valid SSE. An error vLLM meets mid-stream is its own SSE error event
  ("data: {"error": ...}"), which the openai client raises; so is JOB_TIMEOUT_S running out.
- otherwise     -> one chunk: the response JSON (a dict).
- an error before any output (unknown model or route, malformed body, bad parameter, max_tokens past
  the context), streaming or not -> the job fails with one chunk {"error": "<JSON>"}, the JSON being
  OpenAI's error body {"error": {"message", "type", "param", "code"}} (code: the HTTP status). So the
  relay can answer with that status and body before any SSE, as `vllm serve` answers such a stream.
  Why a JSON *string*: the runpod SDK fails a job on any chunk with a truthy "error" and keeps only
  `str(error)`; a dict would reach the relay as a Python repr no client parses. worker-vllm yields
  `ErrorResponse.model_dump()`, which went through as a normal output while vLLM's error body was flat
  and becomes such a repr now that it is nested under "error". The string also matches native jobs'
  errors ({"error": "<JSON>"}, worker/serving/errors.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import shlex
from collections.abc import AsyncIterator, Sequence
from http import HTTPStatus
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError
from starlette.datastructures import State

from config.settings import SettingsError, WorkerSettings
from worker.model_files.adapters import Adapter
from worker.serving.errors import JobError
from worker.serving.lora import openai_lora_modules
from worker.serving.streaming import coalesce_events, until
from worker.vllm_api import (
    AsyncLLM,
    BaseFrontendArgs,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    FlexibleArgumentParser,
    ReasoningParserManager,
    ToolParserManager,
    VLLMValidationError,
    clean_loc_for_param,
    create_error_response,
    import_plugin,
    init_app_state,
    make_arg_parser,
    validate_parsed_serve_args,
    vllm_version,
)

log = logging.getLogger("worker.serving.openai")

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models")


class OpenAIRoutes:
    """vLLM's serving objects for /v1/models, /v1/chat/completions and /v1/completions."""

    def __init__(self, engine: AsyncLLM, state: State, settings: WorkerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.models = state.openai_serving_models
        self.serving = {
            "/v1/chat/completions": (ChatCompletionRequest, state.openai_serving_chat.create_chat_completion),
            "/v1/completions": (CompletionRequest, state.openai_serving_completion.create_completion),
        }

    @classmethod
    async def create(
        cls, engine: AsyncLLM, settings: WorkerSettings, adapters: Sequence[Adapter] = ()
    ) -> OpenAIRoutes:
        """vLLM's app state on the running engine, as `vllm serve` builds it from its options.
        adapters: LORA_MODULES as fetched; `model` = an adapter's name picks it, /v1/models lists them."""
        args = server_args(settings, engine.model_config.model)
        args.lora_modules = openai_lora_modules(list(adapters))
        # The reasoning parser is an engine option: the app state reads it from the engine's config.
        args.structured_outputs_config = engine.vllm_config.structured_outputs_config
        state = State()
        await init_app_state(engine, state, args, await engine.get_supported_tasks())
        return cls(engine, state, settings)

    async def handle(self, job_input: dict, job_id: str) -> AsyncIterator[Any]:
        """One openai_route job -> its output chunks (see the module docstring)."""
        route = job_input.get("openai_route")
        deadline = asyncio.get_running_loop().time() + self.settings.job_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._call(route, job_input.get("openai_input"))
        except TimeoutError:
            result = self._timeout_error()
        except Exception as error:
            if self.engine.errored:  # engine death: the job handler fails the job and restarts the worker
                raise
            result = create_error_response(error)  # typed and coded as vLLM's server would answer it
            if result.error.code >= HTTPStatus.INTERNAL_SERVER_ERROR:
                log.exception("openai job %s failed unexpectedly", job_id)
        if isinstance(result, ErrorResponse):
            log.info("openai job %s failed: %s %s", job_id, result.error.code, result.error.type)
            yield {"error": json.dumps(result.model_dump(), ensure_ascii=False)}
        elif isinstance(result, BaseModel):
            yield result.model_dump(mode="json")
        else:
            # aclosing: a cancelled job closes vLLM's generator, which aborts the engine request.
            async with contextlib.aclosing(result) as events:
                try:
                    async for chunk in coalesce_events(
                        until(deadline, events),
                        flush_interval_s=self.settings.stream_flush_interval_ms / 1000,
                        max_chars=self.settings.stream_max_chunk_chars,
                        # A chat stream opens with a role-only event; its first token is the second.
                        immediate=2 if route == "/v1/chat/completions" else 1,
                    ):
                        yield chunk
                except TimeoutError:
                    yield f"data: {json.dumps(self._timeout_error().model_dump())}\n\n"

    def _timeout_error(self) -> ErrorResponse:
        return create_error_response(
            f"the request ran longer than JOB_TIMEOUT_S={self.settings.job_timeout_s:g} s and was aborted",
            err_type="TimeoutError",
            status_code=HTTPStatus.REQUEST_TIMEOUT,
        )

    async def _call(self, route: Any, body: Any) -> Any:
        if route == "/v1/models":
            return await self.models.show_available_models()
        if route not in self.serving:
            return create_error_response(
                f"unknown openai_route {route!r}; this worker serves {', '.join(ROUTES)}",
                err_type="NotFoundError",
                status_code=HTTPStatus.NOT_FOUND,
                param="openai_route",
            )
        request_model, create = self.serving[route]
        request = _parse(request_model, body)
        return request if isinstance(request, ErrorResponse) else await create(request)


def _parse(request_model: type[BaseModel], body: Any) -> BaseModel | ErrorResponse:
    """The body as vLLM's request model, or the 400 `vllm serve` answers a body it cannot validate with."""
    if not isinstance(body, dict):
        return create_error_response(
            f"openai_input must be the request body as a JSON object, got {type(body).__name__}",
            err_type=HTTPStatus.BAD_REQUEST.phrase,
            param="openai_input",
        )
    try:
        return request_model.model_validate(body)
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


# The HTTP status an OpenAI client sees for a job that failed outside vLLM's serving layer.
_STATUS_OF_JOB_ERROR = {
    "timeout": (HTTPStatus.REQUEST_TIMEOUT, "TimeoutError"),
    "engine_start_failed": (HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
    "engine_dead": (HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
}


def openai_error_output(error: JobError) -> dict[str, str]:
    """A job error (engine start-up failed or died, timeout, internal) as the OpenAI error body that
    openai_route jobs fail with, like every other error on these routes."""
    status, err_type = _STATUS_OF_JOB_ERROR.get(error.type, (HTTPStatus.INTERNAL_SERVER_ERROR, "InternalServerError"))
    message = f"{error.message}. {error.fix}" if error.fix else error.message
    response = create_error_response(message, err_type=err_type, status_code=status)
    return {"error": json.dumps(response.model_dump(), ensure_ascii=False)}


# Settings that map to `vllm serve` flags; OPENAI_SERVER_ARGS may set any other frontend option.
_SETTING_FLAGS = {
    "tool_call_parser": "TOOL_CALL_PARSER",
    "enable_auto_tool_choice": "ENABLE_AUTO_TOOL_CHOICE",
    "reasoning_parser": "REASONING_PARSER",
    "served_model_name": "SERVED_MODEL_NAME",
    "lora_modules": "LORA_MODULES",
}
_FRONTEND_OPTIONS = {f.name for f in dataclasses.fields(BaseFrontendArgs)} - set(_SETTING_FLAGS)


class _SettingsArgumentParser(FlexibleArgumentParser):
    """`vllm serve`'s parser, raising a settings error where argparse would print usage and exit."""

    def error(self, message: str) -> NoReturn:
        raise SettingsError(f"Invalid worker configuration:\n  OPENAI_SERVER_ARGS: {message}")


def server_args(settings: WorkerSettings, model: str) -> argparse.Namespace:
    """vLLM's OpenAI server options, parsed by `vllm serve`'s own parser and checks: the served model
    name, TOOL_CALL_PARSER, ENABLE_AUTO_TOOL_CHOICE, REASONING_PARSER and OPENAI_SERVER_ARGS.

    Called at start (handler.py), so a bad option stops the worker before it takes a job.
    """
    argv = ["--model", model, "--served-model-name", settings.served_name]
    if settings.tool_call_parser:
        argv += ["--tool-call-parser", settings.tool_call_parser]
    if settings.enable_auto_tool_choice:
        argv.append("--enable-auto-tool-choice")
    if settings.reasoning_parser:
        argv += ["--reasoning-parser", settings.reasoning_parser]
    parser = make_arg_parser(_SettingsArgumentParser())
    ours = _parse_serve_args(parser, argv)
    try:
        extra = shlex.split(settings.openai_server_args)
    except ValueError as error:
        raise SettingsError(f"Invalid worker configuration:\n  OPENAI_SERVER_ARGS: {error} (quote it as a shell would)") from None
    args = _parse_serve_args(parser, argv + extra)
    changed = sorted(name for name, value in vars(args).items() if getattr(ours, name, None) != value)
    misplaced = [name for name in changed if name not in _FRONTEND_OPTIONS]
    if misplaced:
        names = ", ".join(f"{name} (use {_SETTING_FLAGS[name]})" if name in _SETTING_FLAGS else name for name in misplaced)
        raise SettingsError(
            "Invalid worker configuration:\n  OPENAI_SERVER_ARGS: sets options that are not OpenAI server "
            f"options: {names}; engine options go in ENGINE_ARGS or their own setting"
        )
    _load_parser_plugins(args.tool_parser_plugin, settings.engine_args.get("reasoning_parser_plugin"))
    if settings.tool_call_parser:
        _check_registered("TOOL_CALL_PARSER", settings.tool_call_parser, ToolParserManager.list_registered())
    if settings.reasoning_parser:
        _check_registered("REASONING_PARSER", settings.reasoning_parser, ReasoningParserManager.list_registered())
    try:
        validate_parsed_serve_args(args)
    except Exception as error:  # TypeError, ValueError, VLLMValidationError: whatever vLLM's checks raise
        raise SettingsError(f"Invalid worker configuration:\n  OPENAI_SERVER_ARGS: {error}") from None
    return args


def _parse_serve_args(parser: FlexibleArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit:  # --help or --version: argparse printed and would end the worker
        raise SettingsError(
            "Invalid worker configuration:\n  OPENAI_SERVER_ARGS: --help/--version print and exit; "
            "see `vllm serve --help` for the options"
        ) from None


def _load_parser_plugins(tool_parser_plugin: str | None, reasoning_parser_plugin: str | None) -> None:
    """Import plugin parsers (they register themselves) before their names are looked up, as `vllm serve`
    does in launcher.setup_server, with the same importer; it logs why and returns None on failure."""
    for where, plugin in (("OPENAI_SERVER_ARGS --tool-parser-plugin", tool_parser_plugin),
                          ("ENGINE_ARGS reasoning_parser_plugin", reasoning_parser_plugin)):
        if plugin and import_plugin(plugin) is None:
            raise SettingsError(
                f"Invalid worker configuration:\n  {where}={plugin!r}: could not be imported (the log above "
                "says why); give an importable module or the path of a .py file"
            )


def _check_registered(env_var: str, name: str, registered: list[str]) -> None:
    if name not in registered:
        raise SettingsError(
            f"Invalid worker configuration:\n  {env_var}={name!r}: not a parser vLLM {vllm_version} knows "
            f"(allowed: {', '.join(sorted(registered))})"
        )
