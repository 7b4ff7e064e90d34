"""The worker's env-configured settings: the one place environment variables are read.

Every user-facing knob is a field here; `.runpod/hub.json` offers the same names and defaults
(tests/test_deploy.py keeps the two in step). A bad value stops start-up with one message that
names the variable, the value and what is allowed (`load_settings`).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Dtype = Literal["auto", "float16", "bfloat16", "float32"]


def _parse_tensor_parallel_size(value: Any) -> Any:
    # "auto" stays a string; "4" becomes 4 so the int branch validates it.
    if isinstance(value, str):
        value = value.strip().lower()
        return value if value == "auto" else _int_or_raw(value)
    return value


def _int_or_raw(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def _parse_engine_args(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"must be a JSON object, e.g. '{{\"enforce_eager\": true}}' ({error})") from None
    return value


class WorkerSettings(BaseSettings):
    """Settings read from the environment (names are the upper-case field names)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", validate_default=True, frozen=True,
        # RunPod sends a blank field as "": treat it as unset, not as an empty value.
        env_ignore_empty=True,
    )

    # --- model -------------------------------------------------------------------------------
    model_name: str = Field(
        default="",
        description="Hugging Face repo id (org/name) or a local folder with config.json and weights.",
    )
    model_revision: str | None = Field(
        default=None, description="Branch, tag or commit of MODEL_NAME on the hub; default the main branch."
    )
    hf_token: SecretStr | None = Field(
        default=None, description="Hugging Face token for gated or private models. Never logged."
    )
    trust_remote_code: bool = Field(
        default=False, description="Run model code shipped in the repo (only for repos you trust)."
    )
    model_cache_dir: str | None = Field(
        default=None,
        description="Where models are downloaded. Default: /runpod-volume/huggingface-cache/hub when a network "
        "volume is mounted, else the Hugging Face default cache.",
    )
    network_volume_path: str | None = Field(
        default=None,
        description="Where the network volume is mounted; default /runpod-volume, where RunPod mounts it. "
        "The model cache and the compile cache go there when it exists.",
    )
    compile_cache_on_volume: bool = Field(
        default=True,
        description="Keep vLLM's and torch's compile caches on the network volume (per vLLM version, model, "
        "TP size and GPU type), so a new worker skips compiling; false keeps them in the container.",
    )

    # --- parallelism and memory -----------------------------------------------------------------
    tensor_parallel_size: Annotated[
        Literal["auto"] | Annotated[int, Field(ge=1, le=1024)],
        BeforeValidator(_parse_tensor_parallel_size),
    ] = Field(
        default="auto",
        description="GPUs to split the model across, or 'auto': the largest size the model allows "
        "that fits the visible GPUs.",
    )
    pipeline_parallel_size: int = Field(
        default=1, ge=1, le=64, description="Pipeline stages; TENSOR_PARALLEL_SIZE x this = GPUs used."
    )
    dtype: Dtype = Field(default="auto", description="Weight and activation dtype.")
    quantization: str | None = Field(
        default=None,
        description="vLLM quantization method (fp8, awq, gptq, bitsandbytes, ...); default from the model.",
    )
    max_model_len: int | None = Field(
        default=None, ge=1, description="Context length (prompt + output); default the model's own."
    )
    gpu_memory_utilization: float = Field(
        default=0.90, gt=0.0, le=1.0, description="Fraction of each GPU's memory vLLM may use."
    )
    enforce_eager: bool = Field(
        default=False, description="Skip CUDA graph capture / compilation: faster start, slower decode."
    )
    engine_args: Annotated[dict[str, Any], NoDecode, BeforeValidator(_parse_engine_args)] = Field(
        default_factory=dict,
        description="JSON object of any other vLLM engine argument, e.g. "
        "'{\"max_num_seqs\": 128, \"enable_prefix_caching\": true}'.",
    )

    # --- serving ---------------------------------------------------------------------------------
    max_concurrency: int = Field(
        default=64, ge=1, le=4096, description="Jobs this worker runs at once (they share the engine)."
    )
    default_max_tokens: int = Field(
        default=2048,
        ge=1,
        description="max_tokens when a job sets none: the rest of the context, capped at this.",
    )
    warm_start: bool = Field(
        default=False, description="Build the engine before taking the first job instead of on it."
    )
    served_model_name: str | None = Field(
        default=None, description="Model name the OpenAI routes answer to; default MODEL_NAME."
    )
    job_timeout_s: float = Field(
        default=600.0, gt=0, description="A job running longer is aborted and fails with a timeout error."
    )
    stream_flush_interval_ms: float = Field(
        default=250.0,
        ge=0,
        description="Streamed text is sent at most this often (the first delta at once, the last at once).",
    )
    stream_max_chunk_chars: int = Field(
        default=65536, ge=1, description="A stream chunk is sent early once it holds this many characters."
    )
    worker_log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
    ] = Field(default="INFO", description="Level of the worker's own log lines (vLLM and the runpod SDK have theirs).")

    # --- OpenAI routes (vLLM's OpenAI server options) ----------------------------------------------
    tool_call_parser: str | None = Field(
        default=None,
        description="vLLM tool-call parser matching the model's tool-call format (hermes, llama3_json, "
        "mistral, ...): needed for tool_choice 'required' or a named function.",
    )
    enable_auto_tool_choice: bool = Field(
        default=False, description="Let the model choose to call tools (tool_choice 'auto'); needs TOOL_CALL_PARSER."
    )
    reasoning_parser: str | None = Field(
        default=None,
        description="vLLM reasoning parser (deepseek_r1, qwen3, ...): a reasoning model's thinking is "
        "returned apart from its answer.",
    )
    openai_server_args: str = Field(
        default="",
        description="Any other option of vLLM's OpenAI server, as `vllm serve` flags (shell-quoted), e.g. "
        "--tool-strict-level parameter --default-chat-template-kwargs '{\"enable_thinking\": false}'",
    )

    @field_validator("model_name")
    @classmethod
    def _model_name_given(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is required: a Hugging Face repo id (org/name) or a local model folder")
        return value

    @model_validator(mode="after")
    def _engine_args_do_not_shadow_settings(self) -> "WorkerSettings":
        shadowed = sorted(set(self.engine_args) & _FIRST_CLASS_ENGINE_ARGS)
        if shadowed:
            names = ", ".join(f"{name} (use {name.upper()})" for name in shadowed)
            raise ValueError(f"ENGINE_ARGS sets what a setting of its own controls: {names}")
        return self

    @model_validator(mode="after")
    def _auto_tool_choice_has_a_parser(self) -> "WorkerSettings":
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError(
                "ENABLE_AUTO_TOOL_CHOICE=true needs TOOL_CALL_PARSER, the parser for the model's "
                "tool-call format (e.g. hermes, llama3_json, mistral)"
            )
        return self

    @property
    def hub_token(self) -> str | None:
        """HF_TOKEN as the hub needs it (whitespace from a pasted token stripped), or None."""
        if self.hf_token is None:
            return None
        return self.hf_token.get_secret_value().strip() or None

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model_name

    def masked(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets stay masked by SecretStr, and so do ENGINE_ARGS
        entries whose names say they hold one."""
        shown = {name: (str(value) if isinstance(value, SecretStr) else value) for name, value in self}
        shown["engine_args"] = _mask_secret_keys(self.engine_args)
        return shown


# Keys that name a secret (hf_token, api_key, aws_secret_access_key, password, ...), not max_num_batched_tokens.
_SECRET_NAME = re.compile(r"(^|_)token$|key$|secret|password|passwd|credential", re.IGNORECASE)


def _mask_secret_keys(value: Any) -> Any:
    """`value` with every entry whose key names a secret masked, at any depth (nested vLLM configs)."""
    if isinstance(value, dict):
        return {k: "**********" if _SECRET_NAME.search(str(k)) else _mask_secret_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_secret_keys(item) for item in value]
    return value

# Engine arguments that have a setting of their own: ENGINE_ARGS may not set them too.
_FIRST_CLASS_ENGINE_ARGS = {
    "hf_token",
    "model",
    "revision",
    "trust_remote_code",
    "download_dir",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "dtype",
    "quantization",
    "max_model_len",
    "gpu_memory_utilization",
    "enforce_eager",
    "served_model_name",
    "reasoning_parser",
}


class SettingsError(Exception):
    """Bad configuration: the message names each env var, its value and what is allowed."""


def load_settings(**overrides: Any) -> WorkerSettings:
    """Read settings from the environment (overrides win), turning validation errors into one message."""
    try:
        return WorkerSettings(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_settings_error(error)) from None


def describe_settings_error(error: ValidationError) -> str:
    lines = ["Invalid worker configuration:"]
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule across settings: its message names them
            lines.append(f"  {message}")
            continue
        field = str(item["loc"][0])
        env_var = field.upper()
        value = item.get("input")
        if isinstance(value, SecretStr) or field == "hf_token":
            shown = "'**********'"
        elif field == "engine_args" and isinstance(value, str):
            shown = "<not shown: it may hold secrets>"
        elif isinstance(value, dict):
            shown = json.dumps(value)
        else:
            shown = repr(value)
        allowed = _allowed_values(field)
        lines.append(f"  {env_var}={shown}: {message}" + (f" (allowed: {allowed})" if allowed else ""))
    return "\n".join(lines)


def _allowed_values(field: str) -> str:
    info = WorkerSettings.model_fields.get(field)
    if info is None:
        return ""
    if field == "tensor_parallel_size":
        return "'auto' or a whole number >= 1"
    if field == "worker_log_level":
        return "DEBUG, INFO, WARNING, ERROR"
    if field == "dtype":
        return "auto, float16, bfloat16, float32"
    return info.description or ""
