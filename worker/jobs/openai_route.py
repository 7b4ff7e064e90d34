"""`openai_route` jobs: RunPod's OpenAI base URL (https://api.runpod.ai/v2/<endpoint_id>/openai/v1) turns each
request into a job {"openai_route": "/v1/chat/completions", "openai_input": <request body>}, answered by the
route layer (worker/routes/serving.py) and turned into job output chunks here.

Output, per job:
- stream: true  -> the SSE events vLLM writes ("data: {...}\n\n" ... "data: [DONE]\n\n"), joined into
  job chunks by the native streams' flush rule (the first token at once, then at most one chunk per
  STREAM_FLUSH_INTERVAL_MS, since each chunk is one POST to RunPod). RunPod relays them verbatim and
  joined events are still valid SSE. An error vLLM meets mid-stream is its own SSE error event
  ("data: {"error": ...}"), which the openai client raises; so is JOB_TIMEOUT_S running out.
- otherwise     -> one chunk: the response JSON (a dict).
- an error before any output (unknown model or route, malformed body, bad parameter, max_tokens past
  the context), streaming or not -> the job fails with one chunk {"error": "<JSON>"}, the JSON being
  OpenAI's error body {"error": {"message", "type", "param", "code"}} (code: the HTTP status), or on
  Anthropic's routes Anthropic's {"type": "error", "error": {"type", "message"}} (the type names the
  status). So the relay can answer with that status and body before any SSE, as `vllm serve` does.
  Why a JSON *string*: the runpod SDK fails a job on any chunk with a truthy "error" and keeps only
  `str(error)`; a dict would reach the relay as a Python repr no client parses. worker-vllm yields
  `ErrorResponse.model_dump()`, which went through as a normal output while vLLM's error body was flat
  and becomes such a repr now that it is nested under "error". The string also matches native jobs'
  errors ({"error": "<JSON>"}, worker/requests/errors.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from config.settings import WorkerSettings
from worker.jobs.output import coalesce_events
from worker.requests.deadline import Deadline
from worker.requests.errors import JobError
from worker.routes.errors import dialect_of, error_body, job_error_response
from worker.routes.serving import OpenAIRoutes


async def route_job_chunks(
    routes: OpenAIRoutes, job_input: dict[str, Any], job_id: str, settings: WorkerSettings
) -> AsyncIterator[Any]:
    """One openai_route job -> its output chunks (see the module docstring)."""
    deadline = Deadline(settings.job_timeout_s)
    answer = await routes.answer(job_input.get("openai_route"), job_input.get("openai_input"), deadline, job_id)
    if answer.events is None:
        yield _failed_job_output(answer.body) if answer.failed else answer.body
        return
    async for chunk in coalesce_events(
        answer.events,
        flush_interval_s=settings.stream_flush_interval_ms / 1000,
        max_chars=settings.stream_max_chunk_chars,
        immediate=answer.first_token_event,
    ):
        yield chunk


def route_failure_output(error: JobError, route: Any) -> dict[str, str]:
    """A worker failure (engine start-up failed or died, timeout, internal) as the route's error body that
    openai_route jobs fail with, like every other error on these routes."""
    dialect = dialect_of(route)
    return _failed_job_output(error_body(job_error_response(error), dialect))


def _failed_job_output(body: dict[str, Any] | None) -> dict[str, str]:
    # A JSON string, not a dict: the runpod SDK keeps only str(error) of a failed job's chunk.
    return {"error": json.dumps(body, ensure_ascii=False)}
