"""Settings, engine-argument env vars and ENGINE_ARGS -> vLLM's AsyncEngineArgs, checked at start.

Every AsyncEngineArgs field is also an env var of its upper-case name (MAX_NUM_SEQS=8, ENABLE_PREFIX_CACHING=true,
KV_CACHE_DTYPE=fp8, SPECULATIVE_CONFIG='{...}'): each value is parsed by the parser `vllm serve` uses for
`--max-num-seqs 8` (`AsyncEngineArgs.add_cli_args`), so types, choices and JSON config objects are vLLM's own.
Fields with a setting of their own (DTYPE, MAX_MODEL_LEN, ...) are read by the settings; the same option given
twice (MAX_NUM_SEQS and ENGINE_ARGS.max_num_seqs) is an error naming both.

`check_engine_args` runs at start (handler.py), before any download: it builds AsyncEngineArgs without an engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import shlex
import typing
from functools import cache
from typing import Any

from huggingface_hub.errors import LocalEntryNotFoundError

from config.engine_env import SHARED_ENV_NAMES, engine_arg_env, env_name, typo_hints
from config.errors import config_error
from config.secrets import masked_if_secret
from config.settings import FIRST_CLASS_ENGINE_ARGS, WorkerSettings, setting_names
from worker.startup.parsers import RaisingParser
from worker.vllm_api import AsyncEngineArgs

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@cache
def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(AsyncEngineArgs)}


@cache
def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    parser = AsyncEngineArgs.add_cli_args(RaisingParser(add_help=False))
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    return parser, actions


@cache
def engine_arg_env_names() -> dict[str, str]:
    """{ENV_NAME: field} of the engine arguments settable as env vars: every field vLLM's parser takes,
    less those a setting controls and those other programs' env vars share."""
    _, actions = _parser()
    return {
        env_name(name): name
        for name in _fields()
        if name in actions and name not in FIRST_CLASS_ENGINE_ARGS and env_name(name) not in SHARED_ENV_NAMES
    }


def known_env_names() -> set[str]:
    """Every env var this worker reads: settings and engine arguments (for typo hints)."""
    return setting_names() | set(engine_arg_env_names())


def given_engine_arg_env() -> dict[str, str]:
    """{ENV_NAME: raw value} of the engine arguments set as env vars. An engine argument that a setting of
    another name controls (MODEL, REVISION, DOWNLOAD_DIR) is an error naming that setting."""
    renamed = {env_name(name): setting for name, setting in FIRST_CLASS_ENGINE_ARGS.items() if env_name(name) != setting}
    raw = engine_arg_env(list(engine_arg_env_names()) + list(renamed))
    problems = [f"{name}: a setting controls it: set {renamed[name]} instead" for name in raw if name in renamed]
    if problems:
        raise config_error(*problems)
    return raw


def parsed_engine_arg_env() -> dict[str, Any]:
    """{field: value} of the engine arguments set as env vars, each parsed by vLLM's parser."""
    fields = engine_arg_env_names()
    return {fields[name]: _parse_env_value(name, fields[name], value) for name, value in given_engine_arg_env().items()}


def _parse_env_value(env_var: str, field: str, value: str) -> Any:
    parser, actions = _parser()
    action = actions[field]
    flag = action.option_strings[0]
    if action.nargs == 0:  # a switch: --flag / --no-flag
        word = value.strip().lower()
        if word not in _TRUE | _FALSE:
            raise config_error(f"{env_var}={value!r}: must be true or false")
        negative = next((s for s in action.option_strings if s.startswith("--no-")), None)
        if word in _FALSE and negative is None:
            return False  # store_true switches: false is their default
        argv = [flag if word in _TRUE else negative]
    elif action.nargs in ("+", "*"):
        argv = [flag, *shlex.split(value)]
    else:
        argv = [f"{flag}={value}"]  # "=": a value starting with '-' stays a value
    try:
        return getattr(parser.parse_args(argv), field)
    except (ValueError, TypeError) as error:
        shown = repr(masked_if_secret(field, value))
        raise config_error(f"{env_var}={shown}: {error}") from None


def build_engine_args(
    settings: WorkerSettings,
    model_path: str,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    sized: dict[str, Any] | None = None,
) -> AsyncEngineArgs:
    """Settings + engine-argument env vars + ENGINE_ARGS -> vLLM's AsyncEngineArgs; any bad one is a
    settings error naming the env var. sized: arguments the worker worked out (LoRA sizes, image limit);
    engine-argument env vars and ENGINE_ARGS still win over them."""
    fields = _fields()
    _check_engine_args_setting(settings.engine_args, fields)
    from_env = parsed_engine_arg_env()
    twice = sorted(set(from_env) & set(settings.engine_args))
    if twice:
        raise config_error(*(f"{env_name(name)} and ENGINE_ARGS.{name} both set {name}: keep one" for name in twice))
    args = {**_setting_args(settings, model_path, tensor_parallel_size, pipeline_parallel_size), **(sized or {})}
    args.update(from_env)
    args.update({name: _as_config(fields[name], value) for name, value in settings.engine_args.items()})
    try:
        return AsyncEngineArgs(**args)
    except (TypeError, ValueError) as error:
        raise config_error(f"ENGINE_ARGS / engine env vars: {error}") from None


def _check_engine_args_setting(engine_args: dict[str, Any], fields: dict[str, dataclasses.Field]) -> None:
    """ENGINE_ARGS names only AsyncEngineArgs fields, and a fixed-choice option one of its choices."""
    unknown = sorted(set(engine_args) - set(fields))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise config_error(
            "ENGINE_ARGS: unknown vLLM engine argument(s) " + ", ".join(hints)
            + " (allowed: the fields of vllm.engine.arg_utils.AsyncEngineArgs, in snake_case)"
        )
    for name, value in engine_args.items():
        # Options vLLM types as a fixed set (runner: generate or pooling; convert: embed or classify, ...):
        # AsyncEngineArgs takes any value and fails only when the engine is built.
        allowed = typing.get_args(fields[name].type) if typing.get_origin(fields[name].type) is typing.Literal else ()
        if allowed and value not in allowed:
            raise config_error(f"ENGINE_ARGS: {name}={value!r} is not one of vLLM's options ({', '.join(map(repr, allowed))})")


def _setting_args(settings: WorkerSettings, model_path: str, tp: int, pp: int) -> dict[str, Any]:
    """The engine arguments the worker's own settings give."""
    args: dict[str, Any] = {
        "model": model_path,
        "served_model_name": [settings.served_name],
        "revision": settings.model_revision if model_path == settings.model_name else None,
        "trust_remote_code": settings.trust_remote_code,
        "tensor_parallel_size": tp,
        "pipeline_parallel_size": pp,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enforce_eager": settings.enforce_eager,
        # The engine needs it too: structured outputs start after the reasoning ends.
        "reasoning_parser": settings.reasoning_parser or "",
        # Per-request log lines would carry prompts into the logs (ENABLE_LOG_REQUESTS=true turns them on).
        "enable_log_requests": False,
    }
    if settings.in_cluster:
        # vLLM's multiprocessing multi-node executor; node 0 runs the engine, the others its headless workers.
        args.update(
            distributed_executor_backend="mp",
            nnodes=settings.cluster_nodes,
            node_rank=settings.cluster_node_rank,
            master_addr=settings.cluster_master_addr,
            # Bounds the wait for the other nodes at start (and any collective later).
            distributed_timeout_seconds=settings.cluster_join_timeout_s,
        )
        if settings.cluster_master_port:
            args["master_port"] = settings.cluster_master_port
    return args


def _as_config(field: dataclasses.Field, value: Any) -> Any:
    """A JSON object given for one of vLLM's config-object arguments (e.g. structured_outputs_config)
    becomes that config class, as `vllm serve --structured-outputs-config '{...}'` makes it; vLLM itself
    converts only some of them from dicts."""
    if not isinstance(value, dict):
        return value
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if default is None or isinstance(default, dict) or not dataclasses.is_dataclass(default):
        return value
    try:
        return type(default)(**value)
    except (TypeError, ValueError) as error:
        problem = " ".join(line.strip() for line in str(error).splitlines() if "errors.pydantic.dev" not in line)
        raise config_error(
            f"ENGINE_ARGS: {field.name}: {problem} (allowed: the fields of vLLM's {type(default).__name__})"
        ) from None


def check_engine_args(settings: WorkerSettings) -> dict[str, Any]:
    """At start, before any download: every engine argument (env vars and ENGINE_ARGS) parsed and built into
    AsyncEngineArgs, no engine made. Returns the engine-argument env vars given (secrets masked), for the log."""
    tp = settings.tensor_parallel_size if isinstance(settings.tensor_parallel_size, int) else 1
    try:
        build_engine_args(settings, settings.model_name, tp, settings.pipeline_parallel_size)
    except LocalEntryNotFoundError:
        # With HF_HUB_OFFLINE vLLM looks the model up in the cache once every argument is converted; a
        # model not there yet is the download step's to report, with its own message.
        pass
    return {name: masked_if_secret(name, value) for name, value in given_engine_arg_env().items()}


def typo_warnings() -> list[str]:
    """A warning for each env var close to a name this worker reads (MAX_NUM_SEQ -> MAX_NUM_SEQS)."""
    return typo_hints(known_env_names())
