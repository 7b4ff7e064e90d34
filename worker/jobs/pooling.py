"""Native pooling jobs: embeddings, classification and scores on a pooling model (embedder, classifier,
cross-encoder).

    {"input": {"embed": "text" | ["text", ...]}}
    {"input": {"classify": "text" | ["text", ...]}}
    {"input": {"score": {"query": "text", "documents": "text" | ["text", ...]}}}

Validated like native generation jobs (strict types, unknown fields refused, every error names its
field). Like native generation jobs, embed and classify go straight to the engine (AsyncLLM.encode, one
request per text, the model's own pooler and activation), faster than a detour through vLLM's HTTP-shaped
serving classes (docs/performance.md, `bench --load embed`); the numbers equal the /v1/embeddings and
/classify routes' (tests/jobs/test_pooling.py). A score job pairs texts the way a
cross-encoder reads them, so vLLM's ServingScores (the /score route) answers it. Output, data in input order:

    {"embeddings": [[float, ...], ...]} | {"classifications": [{"label", "probs"}, ...]} | {"scores": [float, ...]}
    + "usage": {"prompt_tokens", "total_tokens"} and "metrics": {"total_ms", ...}
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.jobs.output import JobClock, engine_load_metrics
from worker.requests.errors import JobError, from_validation_error, invalid_input
from worker.vllm_api import PoolingParams

# Each text is one engine request: a bound on what one job may queue.
MAX_POOLING_INPUTS = 2048
POOLING_KEYS = ("embed", "classify", "score")


class ScoreInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    query: str = Field(min_length=1)
    documents: str | list[str] = Field(min_length=1)


class PoolingJobInput(BaseModel):
    """What a native pooling job's `input` may hold: exactly one of embed, classify, score."""

    model_config = ConfigDict(strict=True, extra="forbid")

    embed: str | list[str] | None = Field(default=None, min_length=1)
    classify: str | list[str] | None = Field(default=None, min_length=1)
    score: ScoreInput | None = None

    @model_validator(mode="after")
    def _exactly_one_task(self) -> "PoolingJobInput":
        given = [key for key in POOLING_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'embed', 'classify' or 'score'")
        return self

    @cached_property  # read several times per job, on the event loop
    def task(self) -> str:
        return next(key for key in POOLING_KEYS if getattr(self, key) is not None)

    @cached_property
    def texts(self) -> list[str]:
        value = self.score.documents if self.score is not None else getattr(self, self.task)
        return [value] if isinstance(value, str) else list(value)


def is_pooling_job(raw: Any) -> bool:
    return isinstance(raw, dict) and any(key in raw for key in POOLING_KEYS)


def parse_pooling_job(raw: dict[str, Any]) -> PoolingJobInput:
    try:
        job = PoolingJobInput.model_validate(raw)
    except ValidationError as error:
        raise from_validation_error(error) from None
    texts = job.texts
    field = f"input.{job.task}" + (".documents" if job.task == "score" else "")
    if len(texts) > MAX_POOLING_INPUTS:
        raise invalid_input(field, f"{len(texts)} texts are above the limit of {MAX_POOLING_INPUTS}", "Split them over several jobs.")
    empty = next((i for i, text in enumerate(texts) if not text), None)
    if empty is not None:
        raise invalid_input(f"{field}[{empty}]" if len(texts) > 1 or job.task == "score" else field, "is empty", "Send non-empty text.")
    return job


@dataclass(frozen=True)
class RouteCall:
    """The vLLM route that answers a pooling job, with the request body it gets."""

    route: str
    body: dict[str, Any]
    field: str  # the job field an error of this route is about


def route_call(job: PoolingJobInput, model: str) -> RouteCall:
    if job.task == "embed":
        return RouteCall("/v1/embeddings", {"model": model, "input": job.embed, "encoding_format": "float"}, "input.embed")
    if job.task == "classify":
        return RouteCall("/classify", {"model": model, "input": job.classify}, "input.classify")
    assert job.score is not None
    body = {"model": model, "queries": job.score.query, "documents": job.score.documents}
    return RouteCall("/score", body, "input.score")


async def encode_on_engine(engine: Any, job: PoolingJobInput, request_id: str) -> dict[str, Any]:
    """An embed or classify job straight on the engine: {"data": [...], "usage": ...} as the routes give it."""
    from worker.jobs.request import engine_prompt

    texts = job.texts
    field = f"input.{job.task}"
    tokenizer = engine.get_tokenizer()
    limit = engine.model_config.max_model_len
    prompts = []
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if len(ids) > limit:
            where = f"{field}[{i}]" if isinstance(getattr(job, job.task), list) else field
            raise invalid_input(where, f"is {len(ids)} tokens; this model's context is {limit} tokens", "Shorten the text.")
        prompts.append(engine_prompt(engine, ids))
    params = PoolingParams(task=job.task)
    params.verify(engine.model_config)

    async def one(i: int, prompt: Any) -> Any:
        last = None
        async for output in engine.encode(prompt, params, request_id=f"{request_id}-{i}"):
            last = output
        return last

    # One text (the common job) needs no task of its own.
    outputs = [await one(0, prompts[0])] if len(prompts) == 1 else await asyncio.gather(*map(one, range(len(prompts)), prompts))
    labels = (getattr(engine.model_config.hf_config, "id2label", None) or {}) if job.task == "classify" else {}
    data = []
    for index, output in enumerate(outputs):
        values = output.outputs.data.tolist()
        if job.task == "embed":
            data.append({"index": index, "embedding": values})
        else:
            best = max(range(len(values)), key=values.__getitem__)
            data.append({"index": index, "probs": values, "label": labels.get(best, str(best))})
    return {"data": data, "usage": {"prompt_tokens": sum(len(o.prompt_token_ids) for o in outputs)}}


def pooling_result(job: PoolingJobInput, response: dict[str, Any], clock: JobClock) -> dict[str, Any]:
    """vLLM's response for the route -> the native output (data in input order, usage, metrics)."""
    data = sorted(response["data"], key=lambda item: item["index"])
    if job.task == "embed":
        result: dict[str, Any] = {"embeddings": [item["embedding"] for item in data]}
    elif job.task == "classify":
        result = {"classifications": [{"label": item["label"], "probs": item["probs"]} for item in data]}
    else:
        result = {"scores": [item["score"] for item in data]}
    prompt_tokens = response.get("usage", {}).get("prompt_tokens", 0)
    result["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    metrics: dict[str, Any] = {}
    if clock.engine_wait_s > 0.001:
        metrics["engine_start_wait_ms"] = round(clock.engine_wait_s * 1000, 2)
    metrics.update(engine_load_metrics(clock))
    metrics["total_ms"] = round((time.perf_counter() - clock.received) * 1000, 2)
    result["metrics"] = metrics
    return result


def pooling_error(call: RouteCall, code: int, message: str, served: tuple[str, ...]) -> JobError:
    """vLLM's error for the route, as a native job error naming the job's field."""
    if code == 404 and call.route not in served:  # the model has no such task
        return invalid_input(
            call.field,
            f"this model cannot answer it (for this model vLLM serves {', '.join(served)})",
            "Send the job shape of this model's task: embed for an embedding model, classify for a classifier, "
            "score for a cross-encoder or embedding model; prompt/messages for a generative model.",
        )
    if code >= 500:
        return JobError("internal_error", message, "Retry; if it repeats, report it with the worker log.")
    return invalid_input(call.field, message, "See the README's pooling job section for what each field takes.")


def generation_on_pooling_model(model_name: str) -> JobError:
    return invalid_input(
        "input",
        f"{model_name} is a pooling model (embeddings, classification or scores); it does not generate text",
        'Send {"embed": ...}, {"classify": ...} or {"score": {"query": ..., "documents": [...]}} '
        "(see the README's pooling jobs), or deploy a generative model.",
    )
