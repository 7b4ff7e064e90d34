"""Job fields of RunPod's official vLLM worker: those that work the same here, and the extra ones this worker
honours or refuses with what it does instead (the migration docs table is generated from these)."""

from __future__ import annotations

import json
from typing import Any

from worker.requests.errors import invalid_input

# Job fields that work as in the official worker: {field: note}.
SAME_JOB_FIELDS = {
    "prompt": "works: text to complete",
    "messages": "works: a chat, rendered with the model's chat template",
    "sampling_params": "works: vLLM's SamplingParams fields; `max_tokens` defaults to the rest of the context "
    "capped at `DEFAULT_MAX_TOKENS` (there: 100)",
    "stream": "works: chunks of `{\"text\": ...}` (see Output)",
    "openai_route": "works: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, answered by vLLM's server code",
    "openai_input": "works: the request body",
}


# The official worker's native job fields beyond prompt/messages/sampling_params/stream (which work as
# there): (values this worker honours, what it does). Another value fails the job with that text
# (worker/jobs/request.py).
_JOB_STREAM_BATCHING = (
    "Leave it out: stream chunks are batched by time here (STREAM_FLUSH_INTERVAL_MS on the endpoint), "
    "not by token count."
)


OFFICIAL_JOB_FIELDS: dict[str, tuple[tuple[Any, ...], str]] = {
    "apply_chat_template": (
        (True, False),
        "honoured: `messages` are always rendered with the model's chat template; with `prompt`, true sends "
        "the prompt as one user message through it",
    ),
    "use_openai_format": (
        (False,),
        'false is honoured; for OpenAI-shaped output send {"openai_route": "/v1/chat/completions", '
        '"openai_input": {...}} (or use the endpoint\'s /openai/v1 URL)',
    ),
    "max_batch_size": ((), _JOB_STREAM_BATCHING),
    "min_batch_size": ((), _JOB_STREAM_BATCHING),
    "batch_size_growth_factor": ((), _JOB_STREAM_BATCHING),
}


def apply_official_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with the official worker's extra fields applied or refused (see OFFICIAL_JOB_FIELDS)."""
    raw = dict(raw)
    for name, (honoured, instead) in OFFICIAL_JOB_FIELDS.items():
        if name not in raw:
            continue
        value = raw.pop(name)
        if not any(value is ok for ok in honoured):  # `is`: 1 is not True here
            allowed = " or ".join(json.dumps(ok) for ok in honoured)
            problem = f"{json.dumps(value)} is not taken by this worker" + (f" (only {allowed})" if allowed else "")
            raise invalid_input(f"input.{name}", problem, instead[0].upper() + instead[1:])
    return raw
