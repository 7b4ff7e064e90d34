"""vLLM's OpenAI server options (`vllm serve`'s parser and checks): the served model name, TOOL_CALL_PARSER,
ENABLE_AUTO_TOOL_CHOICE, REASONING_PARSER and OPENAI_SERVER_ARGS. Parsed at start, so a bad option stops
the worker before it takes a job; the route layer is built from the result."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from config.errors import config_error
from config.settings import WorkerSettings
from worker.startup.parsers import RaisingParser
from worker.vllm_api import (
    BaseFrontendArgs,
    FlexibleArgumentParser,
    ReasoningParserManager,
    ToolParserManager,
    import_plugin,
    make_arg_parser,
    validate_parsed_serve_args,
    vllm_version,
)

# Settings that map to `vllm serve` flags; OPENAI_SERVER_ARGS may set any other frontend option.
_SETTING_FLAGS = {
    "tool_call_parser": "TOOL_CALL_PARSER",
    "enable_auto_tool_choice": "ENABLE_AUTO_TOOL_CHOICE",
    "reasoning_parser": "REASONING_PARSER",
    "served_model_name": "SERVED_MODEL_NAME",
    "lora_modules": "LORA_MODULES",
}


_FRONTEND_OPTIONS = {f.name for f in dataclasses.fields(BaseFrontendArgs)} - set(_SETTING_FLAGS)


def server_args(settings: WorkerSettings, model: str) -> argparse.Namespace:
    """vLLM's OpenAI server options, parsed by `vllm serve`'s own parser and checks: the served model
    name, TOOL_CALL_PARSER, ENABLE_AUTO_TOOL_CHOICE, REASONING_PARSER and OPENAI_SERVER_ARGS.

    """
    argv = ["--model", model, "--served-model-name", settings.served_name]
    if settings.tool_call_parser:
        argv += ["--tool-call-parser", settings.tool_call_parser]
    if settings.enable_auto_tool_choice:
        argv.append("--enable-auto-tool-choice")
    if settings.reasoning_parser:
        argv += ["--reasoning-parser", settings.reasoning_parser]
    parser = make_arg_parser(RaisingParser())
    ours = _parse_serve_args(parser, argv)
    try:
        extra = shlex.split(settings.openai_server_args)
    except ValueError as error:
        raise config_error(f"OPENAI_SERVER_ARGS: {error} (quote it as a shell would)") from None
    args = _parse_serve_args(parser, argv + extra)
    changed = sorted(name for name, value in vars(args).items() if getattr(ours, name, None) != value)
    misplaced = [name for name in changed if name not in _FRONTEND_OPTIONS]
    if misplaced:
        names = ", ".join(f"{name} (use {_SETTING_FLAGS[name]})" if name in _SETTING_FLAGS else name for name in misplaced)
        raise config_error(
            "OPENAI_SERVER_ARGS: sets options that are not OpenAI server "
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
        raise config_error(f"OPENAI_SERVER_ARGS: {error}") from None
    return args


def _parse_serve_args(parser: FlexibleArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except ValueError as error:
        raise config_error(f"OPENAI_SERVER_ARGS: {error}") from None
    except SystemExit:  # --help or --version: argparse printed and would end the worker
        raise config_error(
            "OPENAI_SERVER_ARGS: --help/--version print and exit; "
            "see `vllm serve --help` for the options"
        ) from None


def _load_parser_plugins(tool_parser_plugin: str | None, reasoning_parser_plugin: str | None) -> None:
    """Import plugin parsers (they register themselves) before their names are looked up, as `vllm serve`
    does in launcher.setup_server, with the same importer; it logs why and returns None on failure."""
    for where, plugin in (("OPENAI_SERVER_ARGS --tool-parser-plugin", tool_parser_plugin),
                          ("ENGINE_ARGS reasoning_parser_plugin", reasoning_parser_plugin)):
        if plugin and import_plugin(plugin) is None:
            raise config_error(
                f"{where}={plugin!r}: could not be imported (the log above "
                "says why); give an importable module or the path of a .py file"
            )


def _check_registered(env_var: str, name: str, registered: list[str]) -> None:
    if name not in registered:
        raise config_error(
            f"{env_var}={name!r}: not a parser vLLM {vllm_version} knows "
            f"(allowed: {', '.join(sorted(registered))})"
        )
