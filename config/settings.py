"""The worker's env-configured settings: the one place the worker's own environment variables are read.

Every user-facing knob is a field here; `.runpod/hub.json` offers the same names and defaults
(tests/test_deploy.py keeps the two in step). A bad value stops start-up with one message that
names the variable, the value and what is allowed (`load_settings`).
"""

from __future__ import annotations

import json
import os
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import config_error
from config.migration import apply_migration
from config.secrets import MASK, mask_secret_keys

Dtype = Literal["auto", "float16", "bfloat16", "float32"]
DTYPE_CHOICES: tuple[str, ...] = typing.get_args(Dtype)
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
TP_SIZE_ALLOWED = "'auto' or a whole number >= 1"


def parse_tensor_parallel_size(value: Any) -> Any:
    """"auto" stays a string; "4" becomes 4 so the int branch validates it (the plan CLI parses the same way)."""
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


def _parse_host_list(value: Any) -> Any:
    if isinstance(value, str):
        return [host.strip() for host in value.split(",") if host.strip()]
    return value


class LoraModule(BaseModel):
    """One LoRA adapter: the name requests use, and a hub repo id, a local folder or a network-volume path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[^\s=,]+$")
    path: str = Field(min_length=1)


def _parse_lora_modules(value: Any) -> Any:
    """`name=path` pairs (space or comma separated) or JSON (a list of {"name", "path"} objects or
    `name=path` strings, or one object), as `vllm serve --lora-modules` takes them."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text[0] in "[{":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"is not valid JSON ({error})") from None
        items = parsed if isinstance(parsed, list) else [parsed]
    else:
        items = text.replace(",", " ").split()
    modules = []
    for item in items:
        if isinstance(item, str):
            name, sep, path = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not name=path")
            item = {"name": name.strip(), "path": path.strip()}
        modules.append(item)
    return modules


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
    preshard: bool = Field(
        default=False,
        description="With TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE > 1: the first start writes vLLM's "
        "pre-sharded weights next to the model cache (per model, revision, TP, PP, dtype and quantization), "
        "and later starts load them, each GPU reading only its own part.",
    )
    compile_cache_on_volume: bool = Field(
        default=True,
        description="Keep vLLM's and torch's compile caches on the network volume (per vLLM version, model, "
        "TP size and GPU type), so a new worker skips compiling; false keeps them in the container.",
    )

    # --- parallelism and memory -----------------------------------------------------------------
    tensor_parallel_size: Annotated[
        Literal["auto"] | Annotated[int, Field(ge=1, le=1024)],
        BeforeValidator(parse_tensor_parallel_size),
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
        default=DEFAULT_GPU_MEMORY_UTILIZATION, gt=0.0, le=1.0, description="Fraction of each GPU's memory vLLM may use."
    )
    enforce_eager: bool = Field(
        default=False, description="Skip CUDA graph capture / compilation: faster start, slower decode."
    )
    engine_args: Annotated[dict[str, Any], NoDecode, BeforeValidator(_parse_engine_args)] = Field(
        default_factory=dict,
        description="JSON object of any other vLLM engine argument, e.g. "
        "'{\"max_num_seqs\": 128, \"enable_prefix_caching\": true}'.",
    )

    # --- LoRA adapters -------------------------------------------------------------------------
    lora_modules: Annotated[list[LoraModule], NoDecode, BeforeValidator(_parse_lora_modules)] = Field(
        default_factory=list,
        description="LoRA adapters to serve on the base model, as `vllm serve --lora-modules` takes them: "
        "'name=path' pairs (space separated) or a JSON list of {\"name\", \"path\"}; a path is a hub repo id, "
        "a local folder or a network-volume folder. Requests pick one by name (OpenAI `model`, native `lora`).",
    )

    # --- images in requests ----------------------------------------------------------------------
    max_images_per_prompt: int = Field(
        default=4, ge=0, le=64, description="Images one request may carry (vision-language models)."
    )
    max_image_bytes: int = Field(
        default=10_000_000, ge=1, description="Largest image, in bytes, a request may send or name by URL."
    )
    max_image_pixels: int = Field(
        default=16_777_216, ge=1, description="Largest image, in pixels (width x height), a request may send."
    )
    media_fetch_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Time to fetch one image URL (DNS, redirects and body)."
    )
    media_allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_parse_host_list)] = Field(
        default_factory=list,
        description="Hosts (comma separated) whose image URLs may resolve to private or loopback addresses; "
        "every other URL must reach a public address.",
    )

    # --- serving ---------------------------------------------------------------------------------
    max_concurrency: int = Field(
        default=64, ge=1, le=4096, description="Jobs this worker runs at once (they share the engine)."
    )
    concurrency_mode: Annotated[
        Literal["adaptive", "fixed"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)
    ] = Field(
        default="adaptive",
        description="adaptive: take only the jobs the engine can start now (up to MAX_CONCURRENCY), leaving the "
        "rest queued at RunPod for its autoscaler and other workers; fixed: always hold MAX_CONCURRENCY jobs.",
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
    result_delivery_timeout_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a job's result, or a stream chunk, is retried while RunPod's API refuses it or cannot be "
        "reached (the worker serves other jobs meanwhile); 0: the runpod SDK's own 3 attempts.",
    )
    result_delivery_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="After SIGTERM, how long results still being delivered are retried before the worker exits; "
        "anything undelivered then is logged.",
    )
    stream_flush_interval_ms: float = Field(
        default=250.0,
        ge=0,
        description="Streamed text is sent at most this often (the first delta at once, the last at once).",
    )
    stream_max_chunk_chars: int = Field(
        default=65536, ge=1, description="A stream chunk is sent early once it holds this many characters."
    )
    max_input_chars: int | None = Field(
        default=None,
        ge=1,
        description="Largest job input (its JSON, in characters) a job may send; a larger one is refused before any "
        "work. Default: what the context can hold (context tokens x the tokenizer's longest token) + 1 MiB.",
    )
    worker_log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
    ] = Field(default="INFO", description="Level of the worker's own log lines (vLLM and the runpod SDK have theirs).")

    # --- endpoint type (docs/load-balancing.md) -----------------------------------------------------
    endpoint_type: Literal["queue", "load_balancer"] = Field(
        default="queue",
        description="The RunPod endpoint type this worker serves: 'queue' takes jobs from RunPod's queue; "
        "'load_balancer' serves the same routes over HTTP on PORT, with /ping on PORT_HEALTH. Must match the "
        "type the endpoint was created with.",
    )
    port: int = Field(
        default=80, ge=1, le=65535,
        description="load_balancer: the HTTP port of the routes (RunPod's default, 80); expose it on the endpoint.",
    )
    port_health: int | None = Field(
        default=None, ge=1, le=65535,
        description="load_balancer: the port RunPod's load balancer sends GET /ping to; default PORT.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="load_balancer: a Bearer token (or x-api-key) every request but /ping and /health must carry; "
        "for a worker reachable other than through RunPod's authenticated gateway. Never logged.",
    )

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

    # --- multi-node (RunPod Instant Clusters) -------------------------------------------------------
    # Each reads the worker's own CLUSTER_* variable first, else the one RunPod sets on an Instant Cluster.
    cluster_num_nodes: int | None = Field(
        default=None, ge=1, le=64, validation_alias=AliasChoices("cluster_num_nodes", "num_nodes"),
        description="Nodes the model spans (default RunPod's NUM_NODES); more than 1 runs one engine across "
        "the cluster: tensor parallelism inside each node, pipeline parallelism across nodes.",
    )
    cluster_node_rank: int | None = Field(
        default=None, ge=0, le=63, validation_alias=AliasChoices("cluster_node_rank", "node_rank"),
        description="This node's rank (default RunPod's NODE_RANK): 0 serves jobs, 1..N-1 run vLLM's "
        "headless workers only.",
    )
    cluster_master_addr: str | None = Field(
        default=None, validation_alias=AliasChoices("cluster_master_addr", "primary_addr"),
        description="Address of node 0 that every node connects to (default RunPod's PRIMARY_ADDR).",
    )
    cluster_master_port: int | None = Field(
        default=None, ge=1, le=65535, validation_alias=AliasChoices("cluster_master_port", "primary_port"),
        description="Port on node 0 for vLLM's process group (default RunPod's PRIMARY_PORT, else vLLM's 29501).",
    )
    cluster_node_addr: str | None = Field(
        default=None, validation_alias=AliasChoices("cluster_node_addr", "node_addr"),
        description="This node's address on the cluster network (default RunPod's NODE_ADDR); vLLM advertises "
        "it (VLLM_HOST_IP) and its interface carries gloo and NCCL traffic.",
    )
    cluster_gpus_per_node: int | None = Field(
        default=None, ge=1, le=64, validation_alias=AliasChoices("cluster_gpus_per_node", "num_trainers"),
        description="GPUs on each node (default RunPod's NUM_TRAINERS); every node must see this many, so all "
        "nodes plan the same layout. Default: the GPUs node 0 sees.",
    )
    gloo_socket_ifname: str | None = Field(
        default=None,
        description="Network interface for gloo between nodes, kept as given; default the interface holding "
        "CLUSTER_NODE_ADDR (ens1 on RunPod), else ens1.",
    )
    nccl_socket_ifname: str | None = Field(
        default=None,
        description="Network interface for NCCL between nodes, kept as given; default as GLOO_SOCKET_IFNAME.",
    )
    cluster_join_timeout_s: int = Field(
        default=600, ge=1,
        description="How long node 0 waits for the other nodes to join (and they for node 0) before it stops "
        "with a message naming the missing node ranks.",
    )
    cluster_step_timeout_s: int = Field(
        default=60, ge=1,
        description="A model step that gets no answer from every node within this long fails the in-flight jobs "
        "and stops node 0 (a node died); sets vLLM's VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS.",
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
            names = ", ".join(f"{name} (use {FIRST_CLASS_ENGINE_ARGS[name]})" for name in shadowed)
            raise ValueError(f"ENGINE_ARGS sets what a setting of its own controls: {names}")
        return self

    @model_validator(mode="after")
    def _lora_names_are_unique(self) -> "WorkerSettings":
        names = [module.name for module in self.lora_modules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"LORA_MODULES names each adapter once; repeated: {', '.join(repeated)}")
        if self.served_name in names:
            raise ValueError(
                f"LORA_MODULES: adapter name {self.served_name!r} is the base model's served name; rename the adapter"
            )
        return self

    @model_validator(mode="after")
    def _auto_tool_choice_has_a_parser(self) -> "WorkerSettings":
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError(
                "ENABLE_AUTO_TOOL_CHOICE=true needs TOOL_CALL_PARSER, the parser for the model's "
                "tool-call format (e.g. hermes, llama3_json, mistral)"
            )
        return self

    @model_validator(mode="after")
    def _cluster_is_complete(self) -> "WorkerSettings":
        if not self.in_cluster:
            return self
        if self.cluster_node_rank is None or self.cluster_node_rank >= self.cluster_nodes:
            raise ValueError(
                f"CLUSTER_NUM_NODES (or NUM_NODES)={self.cluster_nodes} needs CLUSTER_NODE_RANK (or NODE_RANK) "
                f"from 0 to {self.cluster_nodes - 1}; it is {self.cluster_node_rank}"
            )
        if not self.cluster_master_addr:
            raise ValueError(
                f"CLUSTER_NUM_NODES (or NUM_NODES)={self.cluster_nodes} needs CLUSTER_MASTER_ADDR (or PRIMARY_ADDR), "
                "the address of node 0"
            )
        return self

    @property
    def cluster_nodes(self) -> int:
        """Nodes the engine spans: 1 on a single pod."""
        return self.cluster_num_nodes or 1

    @property
    def in_cluster(self) -> bool:
        return self.cluster_nodes > 1

    @property
    def is_follower(self) -> bool:
        """A node 1..N-1 of a cluster: it runs vLLM's headless workers, not the job handler."""
        return self.in_cluster and bool(self.cluster_node_rank)

    @property
    def hub_token(self) -> str | None:
        """HF_TOKEN as the hub needs it (whitespace from a pasted token stripped), or None."""
        if self.hf_token is None:
            return None
        return self.hf_token.get_secret_value().strip() or None

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model_name

    @property
    def health_port(self) -> int:
        """load_balancer: where GET /ping is answered (PORT_HEALTH, else PORT)."""
        return self.port_health or self.port

    def masked(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets stay masked by SecretStr, and so do ENGINE_ARGS
        entries whose names say they hold one."""
        shown = {name: (str(value) if isinstance(value, SecretStr) else value) for name, value in self}
        shown["engine_args"] = mask_secret_keys(self.engine_args)
        return shown


# Engine arguments that have a setting of their own: ENGINE_ARGS and engine-argument env vars may not set them
# too. The value is the setting to use instead.
FIRST_CLASS_ENGINE_ARGS = {
    "hf_token": "HF_TOKEN",
    "model": "MODEL_NAME",
    "revision": "MODEL_REVISION",
    "trust_remote_code": "TRUST_REMOTE_CODE",
    "download_dir": "MODEL_CACHE_DIR",
    "tensor_parallel_size": "TENSOR_PARALLEL_SIZE",
    "pipeline_parallel_size": "PIPELINE_PARALLEL_SIZE",
    "dtype": "DTYPE",
    "quantization": "QUANTIZATION",
    "max_model_len": "MAX_MODEL_LEN",
    "gpu_memory_utilization": "GPU_MEMORY_UTILIZATION",
    "enforce_eager": "ENFORCE_EAGER",
    "served_model_name": "SERVED_MODEL_NAME",
    "reasoning_parser": "REASONING_PARSER",
}
_FIRST_CLASS_ENGINE_ARGS = set(FIRST_CLASS_ENGINE_ARGS)


def setting_names() -> set[str]:
    """The env var names WorkerSettings reads."""
    return {name.upper() for name in WorkerSettings.model_fields}


def load_settings(**overrides: Any) -> WorkerSettings:
    """Read settings from the environment (overrides win), turning validation errors into one message.

    Names of RunPod's official vLLM worker are applied first (config/migration.py): an alias is read as
    the setting it names, a name this worker does not take stops start-up with what to set instead.
    """
    renamed = apply_migration(os.environ, setting_names())
    try:
        return WorkerSettings(**{**renamed, **overrides})
    except ValidationError as error:
        raise config_error(*describe_settings_error(error)) from None


def describe_settings_error(error: ValidationError) -> list[str]:
    """One line per invalid setting: the env var, its value (secrets not shown) and what is allowed."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule across settings: its message names them
            lines.append(message)
            continue
        field = str(item["loc"][0])
        env_var = field.upper()
        value = item.get("input")
        if isinstance(value, SecretStr) or field in ("hf_token", "api_key"):
            shown = repr(MASK)
        elif field == "engine_args" and isinstance(value, str):
            shown = "<not shown: it may hold secrets>"
        elif isinstance(value, dict):
            shown = json.dumps(value)
        else:
            shown = repr(value)
        allowed = _allowed_values(field)
        lines.append(f"{env_var}={shown}: {message}" + (f" (allowed: {allowed})" if allowed else ""))
    return lines


def _allowed_values(field: str) -> str:
    info = WorkerSettings.model_fields.get(field)
    if info is None:
        return ""
    if field == "tensor_parallel_size":
        return TP_SIZE_ALLOWED
    if field == "worker_log_level":
        return "DEBUG, INFO, WARNING, ERROR"
    if field == "concurrency_mode":
        return "adaptive, fixed"
    if field == "dtype":
        return ", ".join(DTYPE_CHOICES)
    return info.description or ""
