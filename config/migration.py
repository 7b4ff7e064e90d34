"""The env vars and job fields of RunPod's official vLLM worker (runpod-workers/worker-vllm), and what each is here.

One table, `MIGRATION`; the README's "Coming from runpod-workers/worker-vllm" section is generated from it
(scripts/settings_table.py) and tests/config/test_migration.py tests every row. Each name is one of:

- same     the same name and meaning here: a setting, or an engine argument env var (worker/startup/engine_args.py);
- alias    read as the setting or engine argument it names (giving both is an error naming both);
- vllm     an env var vLLM reads itself: it reaches vLLM unchanged;
- refused  stops the worker at start with one line saying what to set instead, unless its value is one
           that means what this worker does anyway (`accepted`).

No vLLM import here: settings (and the plan CLI) import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from config.errors import config_error


@dataclass(frozen=True)
class Migration:
    kind: Literal["same", "alias", "vllm", "refused"]
    becomes: str  # what the name is here, as the README shows it
    target: str | None = None  # alias: the env var it is read as
    accepted: tuple[str, ...] = ()  # refused: values (lower case) that match this worker's behaviour and pass
    # refused: env vars that do what the name did, with example values (tests check they are accepted)
    instead: dict[str, str] = field(default_factory=dict)


def same(becomes: str = "the same setting") -> Migration:
    return Migration("same", becomes)


def engine_arg(becomes: str = "the same vLLM engine argument (env var)") -> Migration:
    return Migration("same", becomes)


def alias(target: str, note: str = "") -> Migration:
    return Migration("alias", f"read as `{target}`" + (f" ({note})" if note else ""), target=target)


def refused(becomes: str, instead: dict[str, str] | None = None, accepted: tuple[str, ...] = ()) -> Migration:
    return Migration("refused", becomes, accepted=accepted, instead=instead or {})


def server_flag(flag: str) -> Migration:
    """An OpenAI server option the official worker read from its own env var: here an OPENAI_SERVER_ARGS flag."""
    return refused(
        f'set `OPENAI_SERVER_ARGS="{flag}"` (vLLM\'s OpenAI server option)',
        {"OPENAI_SERVER_ARGS": flag},
        accepted=("false", "0"),
    )


def gone(becomes: str, instead: dict[str, str] | None = None) -> Migration:
    return refused(f"not in vLLM 0.32: {becomes}", instead)


_STREAM_BATCHING = (
    "streams here are batched by time, not token count: set `STREAM_FLUSH_INTERVAL_MS` (and `STREAM_MAX_CHUNK_CHARS`)"
)
_STREAM_INSTEAD = {"STREAM_FLUSH_INTERVAL_MS": "250"}
_SPECULATIVE = "set `SPECULATIVE_CONFIG` to vLLM's JSON, e.g. '{\"method\": \"ngram\", \"num_speculative_tokens\": 5}'"
_SPECULATIVE_INSTEAD = {
    "SPECULATIVE_CONFIG": '{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}'
}

MIGRATION: dict[str, Migration] = {
    # --- model and tokenizer ---------------------------------------------------------------------------
    "MODEL_NAME": same(),
    "MODEL_REVISION": same(),
    "HF_TOKEN": same(),
    "TRUST_REMOTE_CODE": same(),
    "TOKENIZER_NAME": alias("TOKENIZER", "vLLM's tokenizer engine argument"),
    "TOKENIZER": engine_arg(),
    "TOKENIZER_REVISION": engine_arg(),
    "TOKENIZER_MODE": engine_arg(),
    "SKIP_TOKENIZER_INIT": engine_arg(),
    "CUSTOM_CHAT_TEMPLATE": refused(
        "set `OPENAI_SERVER_ARGS=\"--chat-template <file or template>\"` for the OpenAI routes; native jobs "
        "use the model's own template",
        {"OPENAI_SERVER_ARGS": "--chat-template '{% for m in messages %}{{ m.content }}{% endfor %}'"},
    ),
    "BASE_PATH": refused(
        "set `MODEL_CACHE_DIR=<BASE_PATH>/huggingface-cache/hub` (the default with a network volume)",
        {"MODEL_CACHE_DIR": "/runpod-volume/huggingface-cache/hub"},
    ),
    "DOWNLOAD_DIR": refused("set `MODEL_CACHE_DIR`", {"MODEL_CACHE_DIR": "/runpod-volume/huggingface-cache/hub"}),
    "LOAD_FORMAT": engine_arg(),
    "MODEL_LOADER_EXTRA_CONFIG": engine_arg(),
    "MAX_PARALLEL_LOADING_WORKERS": engine_arg(),
    # --- precision, memory, parallelism ----------------------------------------------------------------
    "DTYPE": same("the same setting (auto, float16, bfloat16, float32; `half` is `float16`)"),
    "KV_CACHE_DTYPE": engine_arg(),
    "QUANTIZATION": same(),
    "QUANTIZATION_PARAM_PATH": gone("KV cache scales are read from the checkpoint; remove it"),
    "MAX_MODEL_LEN": same(),
    "GPU_MEMORY_UTILIZATION": same("the same setting (default 0.90 here, 0.95 there)"),
    "TENSOR_PARALLEL_SIZE": same("the same setting (default `auto` here: the largest size that fits)"),
    "PIPELINE_PARALLEL_SIZE": same(),
    "DISTRIBUTED_EXECUTOR_BACKEND": engine_arg(),
    "WORKER_USE_RAY": gone("set `DISTRIBUTED_EXECUTOR_BACKEND=ray`", {"DISTRIBUTED_EXECUTOR_BACKEND": "ray"}),
    "RAY_WORKERS_USE_NSIGHT": engine_arg(),
    "ENABLE_EXPERT_PARALLEL": engine_arg(),
    "BLOCK_SIZE": engine_arg(),
    "SWAP_SPACE": gone("vLLM has no CPU swap space; remove it (`KV_OFFLOADING_SIZE` offloads KV cache to CPU)"),
    "ENFORCE_EAGER": same(),
    "MAX_SEQ_LEN_TO_CAPTURE": gone("set `MAX_CUDAGRAPH_CAPTURE_SIZE`", {"MAX_CUDAGRAPH_CAPTURE_SIZE": "512"}),
    "MAX_CONTEXT_LEN_TO_CAPTURE": gone("set `MAX_CUDAGRAPH_CAPTURE_SIZE`", {"MAX_CUDAGRAPH_CAPTURE_SIZE": "512"}),
    "DISABLE_CUSTOM_ALL_REDUCE": engine_arg(),
    "NUM_GPU_BLOCKS_OVERRIDE": engine_arg(),
    "ROPE_SCALING": gone(
        "set `HF_OVERRIDES` to JSON, e.g. '{\"rope_scaling\": {...}}'", {"HF_OVERRIDES": '{"rope_theta": 1000000}'}
    ),
    "ROPE_THETA": gone("set `HF_OVERRIDES='{\"rope_theta\": ...}'`", {"HF_OVERRIDES": '{"rope_theta": 1000000}'}),
    "VLLM_USE_DEEP_GEMM": Migration("vllm", "reaches vLLM unchanged (vLLM reads it itself)"),
    "ATTENTION_BACKEND": engine_arg(),
    "VLLM_ATTENTION_BACKEND": gone("set `ATTENTION_BACKEND`", {"ATTENTION_BACKEND": "FLASH_ATTN"}),
    # --- scheduling ------------------------------------------------------------------------------------
    "MAX_NUM_SEQS": engine_arg(),
    "MAX_NUM_BATCHED_TOKENS": engine_arg(),
    "ENABLE_PREFIX_CACHING": engine_arg(),
    "ENABLE_CHUNKED_PREFILL": engine_arg(),
    "DISABLE_SLIDING_WINDOW": engine_arg(),
    "ASYNC_SCHEDULING": engine_arg(),
    "STREAM_INTERVAL": engine_arg(),
    "SEED": engine_arg(),
    "MAX_LOGPROBS": engine_arg(),
    "NUM_LOOKAHEAD_SLOTS": gone("remove it (speculative decoding sizes it from `SPECULATIVE_CONFIG`)"),
    "NUM_SCHEDULER_STEPS": gone("remove it (vLLM's V1 engine schedules every step; `ASYNC_SCHEDULING` overlaps them)"),
    "TOKENIZER_POOL_SIZE": gone("remove it (vLLM tokenizes in its own processes)"),
    "TOKENIZER_POOL_TYPE": gone("remove it (vLLM tokenizes in its own processes)"),
    "TOKENIZER_POOL_EXTRA_CONFIG": gone("remove it (vLLM tokenizes in its own processes)"),
    "PREEMPTION_MODE": gone("remove it (vLLM's V1 engine always recomputes preempted requests)"),
    "PREEMPTION_CHECK_PERIOD": gone("remove it (vLLM's V1 engine always recomputes preempted requests)"),
    "PREEMPTION_CPU_CAPACITY": gone("remove it (vLLM's V1 engine always recomputes preempted requests)"),
    "GUIDED_DECODING_BACKEND": gone(
        "set `STRUCTURED_OUTPUTS_CONFIG='{\"backend\": \"...\"}'`", {"STRUCTURED_OUTPUTS_CONFIG": '{"backend": "xgrammar"}'}
    ),
    # --- LoRA ------------------------------------------------------------------------------------------
    "ENABLE_LORA": engine_arg(),
    "MAX_LORAS": engine_arg(),
    "MAX_LORA_RANK": engine_arg(),
    "MAX_CPU_LORAS": engine_arg(),
    "LORA_DTYPE": engine_arg(),
    "FULLY_SHARDED_LORAS": engine_arg(),
    "LORA_EXTRA_VOCAB_SIZE": gone("remove it (adapters no longer add vocabulary)"),
    "LONG_LORA_SCALING_FACTORS": gone("remove it (long-context LoRA was removed from vLLM)"),
    "LORA_MODULES": same("the `LORA_MODULES` setting (same JSON list of {name, path, base_model_name})"),
    # --- speculative decoding --------------------------------------------------------------------------
    "SPECULATIVE_CONFIG": engine_arg("the same vLLM engine argument (JSON), checked by vLLM's parser"),
    "SPECULATIVE_METHOD": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "SPECULATIVE_MODEL": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "NUM_SPECULATIVE_TOKENS": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "SPECULATIVE_DRAFT_TENSOR_PARALLEL_SIZE": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "SPECULATIVE_MAX_MODEL_LEN": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "SPECULATIVE_DISABLE_BY_BATCH_SIZE": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "NGRAM_PROMPT_LOOKUP_MAX": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    "NGRAM_PROMPT_LOOKUP_MIN": refused(_SPECULATIVE, _SPECULATIVE_INSTEAD),
    # --- streaming and serving -------------------------------------------------------------------------
    "DEFAULT_BATCH_SIZE": refused(_STREAM_BATCHING, _STREAM_INSTEAD),
    "DEFAULT_MIN_BATCH_SIZE": refused(_STREAM_BATCHING, _STREAM_INSTEAD),
    "DEFAULT_BATCH_SIZE_GROWTH_FACTOR": refused(_STREAM_BATCHING, _STREAM_INSTEAD),
    # The names its code read (its docs say DEFAULT_...).
    "MIN_BATCH_SIZE": refused(_STREAM_BATCHING, _STREAM_INSTEAD),
    "BATCH_SIZE_GROWTH_FACTOR": refused(_STREAM_BATCHING, _STREAM_INSTEAD),
    "MAX_CONCURRENCY": same("the same setting (default 64 here, 30 there)"),
    "REQUEST_TIMEOUT": alias("JOB_TIMEOUT_S", "seconds"),
    "VLLM_STARTUP_TIMEOUT": refused(
        "remove it: the engine starts in-process, and a failed start stops the worker at once",
    ),
    "DISABLE_LOG_STATS": engine_arg(),
    "ENABLE_LOG_REQUESTS": engine_arg("the same vLLM engine argument (off by default: prompts stay out of the logs)"),
    "DISABLE_LOG_REQUESTS": refused(
        "request logs are off by default here; remove it (`ENABLE_LOG_REQUESTS=true` turns them on)",
        {"ENABLE_LOG_REQUESTS": "false"},
        accepted=("true", "1"),
    ),
    "DISABLE_LOGGING_REQUEST": refused(
        "request logs are off by default here; remove it (`ENABLE_LOG_REQUESTS=true` turns them on)",
        {"ENABLE_LOG_REQUESTS": "false"},
        accepted=("true", "1"),
    ),
    "VLLM_EXTRA_ARGS": refused(
        "set each engine flag as its own env var (`--max-num-seqs 8` is `MAX_NUM_SEQS=8`) or in `ENGINE_ARGS`, "
        "and OpenAI server flags in `OPENAI_SERVER_ARGS`",
        {"MAX_NUM_SEQS": "8", "OPENAI_SERVER_ARGS": "--max-log-len 100"},
    ),
    "VLLM_CONFIG_FILE": refused(
        "set the engine options as env vars or `ENGINE_ARGS` (JSON), server options in `OPENAI_SERVER_ARGS`",
        {"ENGINE_ARGS": '{"max_num_seqs": 8}'},
    ),
    "VLLM_API_KEY": refused("remove it: RunPod authenticates callers with the endpoint's API key"),
    # --- OpenAI routes ---------------------------------------------------------------------------------
    "OPENAI_SERVED_MODEL_NAME_OVERRIDE": alias("SERVED_MODEL_NAME", "the model name the OpenAI routes answer to"),
    "RAW_OPENAI_OUTPUT": refused(
        "OpenAI streams are always vLLM's SSE text here (its default, `1`); remove it", accepted=("1", "true")
    ),
    "OPENAI_RESPONSE_ROLE": refused(
        "set `OPENAI_SERVER_ARGS=\"--response-role <role>\"`",
        {"OPENAI_SERVER_ARGS": "--response-role assistant"},
        accepted=("assistant",),
    ),
    "ENABLE_AUTO_TOOL_CHOICE": same(),
    "TOOL_CALL_PARSER": same(),
    "REASONING_PARSER": same(),
    "TRUST_REQUEST_CHAT_TEMPLATE": server_flag("--trust-request-chat-template"),
    "RETURN_TOKENS_AS_TOKEN_IDS": server_flag("--return-tokens-as-token-ids"),
    "EXCLUDE_TOOLS_WHEN_TOOL_CHOICE_NONE": server_flag("--exclude-tools-when-tool-choice-none"),
    "ENABLE_PROMPT_TOKENS_DETAILS": server_flag("--enable-prompt-tokens-details"),
    "ENABLE_FORCE_INCLUDE_USAGE": server_flag("--enable-force-include-usage"),
    "ENABLE_LOG_OUTPUTS": refused(
        "remove it: vLLM logs outputs only with its request log, which this worker keeps out of `vllm serve`'s "
        "options (`ENABLE_LOG_REQUESTS=true` logs requests)",
        accepted=("false", "0"),
    ),
    "LOG_ERROR_STACK": server_flag("--log-error-stack"),
    "MAX_LOG_LEN": refused(
        "set `OPENAI_SERVER_ARGS=\"--max-log-len <n>\"` (vLLM's OpenAI server option)",
        {"OPENAI_SERVER_ARGS": "--max-log-len 100"},
    ),
}


def apply_migration(environ: Mapping[str, str], settings: set[str]) -> dict[str, str]:
    """The official worker's names set in `environ`: refused ones raise one SettingsError listing each with
    what to set instead; aliases of settings come back as {setting field: value} (aliases of engine
    arguments are read by config/engine_env.py)."""
    problems, renamed = [], {}
    for name, entry in MIGRATION.items():
        value = environ.get(name, "")
        if not value:  # RunPod sends a blank field as "": unset
            continue
        if entry.kind == "refused" and value.strip().lower() not in entry.accepted:
            problems.append(f"{name}: not read by this worker; {entry.becomes}")
        elif entry.kind == "alias":
            if environ.get(entry.target or ""):
                problems.append(f"{name} and {entry.target} both set it: keep {entry.target}")
            elif entry.target in settings:
                renamed[entry.target.lower()] = value
    if problems:
        raise config_error(*problems)
    return renamed


def engine_arg_aliases(environ: Mapping[str, str], settings: set[str]) -> dict[str, str]:
    """{engine argument env var: value} for the official worker's aliases of engine arguments (the
    aliases whose target is none of `settings`, the env var names WorkerSettings reads)."""
    return {
        entry.target: environ[name]
        for name, entry in MIGRATION.items()
        if entry.kind == "alias" and entry.target and environ.get(name) and entry.target not in settings
    }

