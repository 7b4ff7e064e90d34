"""Native job input: the schema, and how a validated job becomes a vLLM request.

    {"input": {"prompt": "..." | "messages": [{"role": ..., "content": ...}],
               "sampling_params": {<vLLM SamplingParams fields>}, "stream": false}}

The sampling-parameter schema is derived from vLLM's own SamplingParams annotations (no types
written by hand); vLLM's SamplingParams then checks ranges (temperature >= 0, top_p in (0, 1], ...).

Jobs written for RunPod's official vLLM worker run here too: its extra fields are honoured or refused with
what this worker does instead (worker/jobs/official_fields.py; the README's migration table shows it).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)

from worker.jobs.official_fields import apply_official_fields
from worker.requests.errors import JobError, from_validation_error, invalid_input
from worker.requests.limits import (
    INVALID_TEXT,
    InputLimits,
    field_path,
    first_invalid_text,
)
from worker.vllm_api import RequestOutputKind, SamplingParams, VLLMValidationError

# SamplingParams fields a job may set; the rest are vLLM internals.
USER_SAMPLING_FIELDS = (
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "bad_words",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
    "logprobs",
    "prompt_logprobs",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "logit_bias",
    "allowed_token_ids",
    "structured_outputs",
)

# Bounds vLLM leaves open but a shared worker must not: each costs memory or per-token work.
MAX_N = 16
MAX_STOP_STRINGS = 64
MAX_LOGPROBS = 20
# torch seeds its generators with a signed 64-bit integer (vLLM's OpenAI server has the same bound).
SEED_RANGE = (-(2**63), 2**63 - 1)


@cache
def sampling_params_model() -> type[BaseModel]:
    """A strict pydantic model of the user-settable SamplingParams fields, typed from vLLM's hints."""
    hints = typing.get_type_hints(SamplingParams)
    fields = {name: (hints[name] | None, None) for name in USER_SAMPLING_FIELDS}
    return create_model(
        "SamplingParamsInput",
        # JSON from Python clients may carry NaN/Infinity; no sampling field means anything by them.
        __config__=ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False),
        **fields,
    )


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["image_url"]
    image_url: ImageURL


def _part_tag(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
    # Tags with a '-' are left out of error paths (errors.py): the path reads content[1].image_url.url.
    return {"text": "text-part", "image_url": "image-part"}.get(kind)


ContentPart = Annotated[
    Annotated[TextPart, Tag("text-part")] | Annotated[ImagePart, Tag("image-part")],
    Discriminator(_part_tag, custom_error_type="invalid_part", custom_error_message="each part's type must be 'text' or 'image_url'"),
]


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    # A string, or OpenAI-style parts: {"type": "text", "text"} and {"type": "image_url", "image_url": {"url"}}.
    content: str | list[ContentPart]
    name: str | None = None

    def text_chars(self) -> int:
        if isinstance(self.content, str):
            return len(self.content)
        return sum(len(part.text) for part in self.content if isinstance(part, TextPart))


class NativeJobInput(BaseModel):
    """What a native job's `input` may hold."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    sampling_params: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    lora: str | None = None  # a LORA_MODULES adapter name; None: the base model

    def prompt_chars(self) -> int:
        if self.prompt is not None:
            return len(self.prompt)
        return sum(message.text_chars() for message in self.messages or [])

    def has_content_parts(self) -> bool:
        """Whether a message's content is a list of parts: rendered by vLLM's chat parsing (images and all)."""
        return any(isinstance(message.content, list) for message in self.messages or [])

    @model_validator(mode="after")
    def _exactly_one_prompt(self) -> "NativeJobInput":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' (a string) or 'messages' (a chat list)")
        return self


@dataclass
class EngineRequest:
    """A job turned into what AsyncLLM.generate takes, plus what the output needs."""

    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    stream: bool
    engine_prompt: Any = None  # already rendered by vLLM (content parts, images); else made from the token ids


def check_job_input(raw: Any, limits: InputLimits) -> None:
    """Refuse, before any parsing or tokenizing, an input over MAX_INPUT_CHARS or text that is not Unicode."""
    size = limits.input_too_large(raw)
    if size is not None:
        raise invalid_input("input", *limits.describe_input_limit(size))
    loc = first_invalid_text(raw)
    if loc is not None:
        raise invalid_input(field_path("input", loc), *INVALID_TEXT)


def parse_job_input(raw: Any) -> NativeJobInput:
    if not isinstance(raw, dict):
        raise invalid_input("input", f"must be a JSON object, got {type(raw).__name__}")
    template_prompt = raw.get("apply_chat_template") is True and isinstance(raw.get("prompt"), str)
    raw = apply_official_fields(raw)
    if template_prompt:  # as the official worker: the prompt becomes one user message
        raw["messages"] = [{"role": "user", "content": raw.pop("prompt")}]
    try:
        job = NativeJobInput.model_validate(raw)
        sampling = sampling_params_model().model_validate(_token_id_keys(job.sampling_params))
    except ValidationError as error:
        # Errors raised inside sampling_params' own model carry paths relative to it.
        prefix = "input" if _is_top_level(error) else "input.sampling_params"
        raise from_validation_error(error, prefix=prefix) from None
    except VLLMValidationError as error:
        # Raised through pydantic by a vLLM class checking itself as it is built (not a ValueError, so unwrapped).
        fields = _self_checking_fields()
        raise sampling_error(error, parameter=fields[0] if len(fields) == 1 else None) from None
    # Keep the validated values (e.g. structured_outputs as vLLM's dataclass), only those the job set.
    job.sampling_params = {name: getattr(sampling, name) for name in sampling.model_fields_set}
    return job


@cache
def _self_checking_fields() -> tuple[str, ...]:
    """The user fields typed as a vLLM dataclass, which checks its own values when built
    (structured_outputs: StructuredOutputsParams)."""
    hints = typing.get_type_hints(SamplingParams)
    return tuple(
        name for name in USER_SAMPLING_FIELDS
        if any(dataclasses.is_dataclass(arg) for arg in (typing.get_args(hints[name]) or (hints[name],)))
    )


def _token_id_keys(sampling_params: dict[str, Any]) -> dict[str, Any]:
    """logit_bias maps token ids to biases, and JSON object keys are strings: "42" means token 42."""
    bias = sampling_params.get("logit_bias")
    if not isinstance(bias, dict):
        return sampling_params
    as_ids = {int(key) if isinstance(key, str) and key.lstrip("-").isdigit() else key: value for key, value in bias.items()}
    return {**sampling_params, "logit_bias": as_ids}


def _is_top_level(error: ValidationError) -> bool:
    return error.title == NativeJobInput.__name__


def build_engine_request(
    job: NativeJobInput,
    tokenizer: Any,
    *,
    max_model_len: int,
    default_max_tokens: int,
    limits: InputLimits | None = None,
    rendered: Any = None,
) -> EngineRequest:
    """Tokenize the prompt (rendering chat messages with the model's template) and make SamplingParams.

    With `limits`, a prompt too long in characters to fit the context is refused before it is tokenized.
    rendered: the engine prompt vLLM's renderer already made of content parts (worker/media/connector.py)."""
    prompt_field = "input.messages" if job.messages is not None else "input.prompt"
    prompt_token_ids = (
        list(rendered["prompt_token_ids"]) if rendered is not None else _tokenize(job, tokenizer, limits, prompt_field)
    )
    room = max_model_len - len(prompt_token_ids)
    if room <= 0:
        raise invalid_input(
            prompt_field,
            f"the prompt is {len(prompt_token_ids)} tokens; this model's context is {max_model_len} tokens",
            "Shorten the prompt (or raise MAX_MODEL_LEN if the model supports a longer context).",
        )

    params = dict(job.sampling_params)
    _check_bounds(params)
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        # Useful by default: the rest of the context, capped by DEFAULT_MAX_TOKENS.
        params["max_tokens"] = min(room, default_max_tokens)
    elif max_tokens > room:
        raise invalid_input(
            "input.sampling_params.max_tokens",
            f"{max_tokens} tokens do not fit: the prompt uses {len(prompt_token_ids)} of {max_model_len} tokens",
            f"Set max_tokens to at most {room}, or leave it out to use the rest of the context.",
        )
    params["output_kind"] = RequestOutputKind.DELTA if job.stream else RequestOutputKind.FINAL_ONLY
    try:
        sampling_params = SamplingParams(**params)
    except (VLLMValidationError, ValueError, TypeError) as error:
        raise sampling_error(error) from None
    return EngineRequest(prompt_token_ids, sampling_params, job.stream, rendered)


def engine_prompt(engine: Any, prompt_token_ids: list[int]) -> Any:
    """A token prompt as vLLM's renderer hands it to the engine (passing raw prompts is deprecated)."""
    (prompt,) = engine.renderer.render_cmpl([{"prompt_token_ids": prompt_token_ids}])
    return prompt


def _tokenize(job: NativeJobInput, tokenizer: Any, limits: InputLimits | None, prompt_field: str) -> list[int]:
    text = _prompt_text(job, tokenizer)
    if limits is not None and limits.prompt_too_long(len(text)):
        raise invalid_input(prompt_field, *limits.describe_prompt_limit(len(text)))
    # The template already placed the special tokens in a chat.
    return tokenizer.encode(text, add_special_tokens=job.messages is None)


def _prompt_text(job: NativeJobInput, tokenizer: Any) -> str:
    """The text to tokenize: the prompt, or the chat rendered with the model's template."""
    if job.prompt is not None:
        if not job.prompt:
            raise invalid_input("input.prompt", "is empty", "Send the text to complete.")
        return job.prompt
    messages = [message.model_dump(exclude_none=True) for message in job.messages or []]
    template_kwargs = chat_template_kwargs(job, tokenizer) if job.chat_template_kwargs else {}
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_kwargs)
    except Exception as error:  # a template raises whatever its author chose
        raise invalid_input(
            "input.messages",
            f"the model's chat template rejected them: {error}",
            "Check the roles and their order for this model (some templates need user/assistant turns to alternate).",
        ) from None


def chat_template_kwargs(job: NativeJobInput, tokenizer: Any) -> dict[str, Any]:
    """The kwargs the model's template reads, as vLLM's server keeps them: a job may not swap the template
    (`chat_template`) or the rendering (`tokenize`), and variables the template never reads are dropped."""
    from worker.vllm_api import resolve_chat_template_kwargs

    kwargs = dict(job.chat_template_kwargs)
    kwargs.pop("add_generation_prompt", None)  # the worker always asks for the assistant's turn
    # The template's own variables are read from its text: a tokenizer may keep several templates by name
    # (a dict) or none at all (Mistral's); then only the standard kwargs pass.
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default", "")
    try:
        return resolve_chat_template_kwargs(tokenizer, template if isinstance(template, str) else "", kwargs)
    except ValueError as error:
        raise invalid_input(
            "input.chat_template_kwargs",
            str(error),
            "Leave out chat_template and tokenize: jobs are rendered with the model's own chat template.",
        ) from None


def _check_bounds(params: dict[str, Any]) -> None:
    n = params.get("n")
    if n is not None and n > MAX_N:
        raise invalid_input("input.sampling_params.n", f"{n} is above the limit of {MAX_N}", f"Use n <= {MAX_N}.")
    stop = params.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP_STRINGS:
        raise invalid_input(
            "input.sampling_params.stop",
            f"{len(stop)} stop strings are above the limit of {MAX_STOP_STRINGS}",
            f"Send at most {MAX_STOP_STRINGS}.",
        )
    seed = params.get("seed")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise invalid_input("input.sampling_params.seed", f"{seed} is outside the 64-bit integer range", "Use a seed between -2**63 and 2**63-1.")
    for name in ("logprobs", "prompt_logprobs"):
        value = params.get(name)
        if value is not None and value > MAX_LOGPROBS:
            raise invalid_input(
                f"input.sampling_params.{name}", f"{value} is above the limit of {MAX_LOGPROBS}", f"Use at most {MAX_LOGPROBS}."
            )


# Whole field names only ("n" is not the n of "stop cannot contain..."); the alternation tries longer names
# first, and the first name in the message wins: vLLM names the field a check is about before any value it echoes.
_FIELD_NAME = re.compile(r"(?<!\w)(" + "|".join(sorted(USER_SAMPLING_FIELDS, key=len, reverse=True)) + r")(?!\w)")


def sampling_error(error: Exception, parameter: str | None = None) -> JobError:
    """vLLM's refusal of a sampling parameter, naming the field: `parameter` when the caller knows it, else
    vLLM's own when it gives one, else the field the message names, else just input.sampling_params."""
    parameter = parameter or getattr(error, "parameter", None)
    # VLLMValidationError's str() appends "(parameter=..., value=...)": the message is its first argument.
    message = str(error.args[0]) if isinstance(error, VLLMValidationError) and error.args else str(error)
    if parameter not in USER_SAMPLING_FIELDS:  # none given, or one a job cannot set (not under sampling_params)
        named = _FIELD_NAME.search(message)
        parameter = named.group(1) if named else None
    return invalid_input(
        f"input.sampling_params.{parameter}" if parameter else "input.sampling_params",
        message,
        "See vLLM's SamplingParams documentation for the allowed range.",
    )
