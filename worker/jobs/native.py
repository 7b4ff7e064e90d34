"""Native generation jobs on the engine: a job's input checked, parsed and built into a vLLM request (worker/jobs/request.py),
generated under the job's deadline, and its output as stream chunks or one result (worker/jobs/output.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from typing import Any

from config.settings import WorkerSettings
from worker.jobs.content_parts import render_content_parts
from worker.jobs.output import JobClock, final_result, stream_chunks
from worker.jobs.pooling import generation_on_pooling_model
from worker.jobs.request import build_engine_request, check_job_input, engine_prompt, parse_job_input
from worker.model_files.adapters import Adapter
from worker.requests.deadline import Deadline
from worker.requests.limits import InputLimits
from worker.requests.lora import lora_request
from worker.vllm_api import AsyncLLM

# Tokenizing a prompt this long takes milliseconds: it is done off the event loop, where other jobs stream.
LONG_PROMPT_CHARS = 16_384


async def native_job_chunks(
    engine: AsyncLLM,
    adapters: list[Adapter],
    settings: WorkerSettings,
    limits: InputLimits,
    job_input: Any,
    job_id: str,
    clock: JobClock,
) -> AsyncIterator[Any]:
    """One native generation job -> its stream chunks (stream: true) or its one result."""
    if engine.model_config.runner_type == "pooling":
        raise generation_on_pooling_model(settings.served_name)
    check_job_input(job_input, limits)  # before parsing: a huge input costs no more than its size check
    job = parse_job_input(job_input)
    adapter = lora_request(adapters, job.lora)
    rendered = await render_content_parts(job, engine) if job.has_content_parts() else None
    build = functools.partial(
        build_engine_request,
        job,
        engine.get_tokenizer(),
        max_model_len=engine.model_config.max_model_len,
        default_max_tokens=settings.default_max_tokens,
        limits=limits,
        rendered=rendered,
    )
    request = await asyncio.to_thread(build) if job.prompt_chars() > LONG_PROMPT_CHARS else build()
    # Unique per attempt: a retried job keeps its id, and vLLM rejects duplicate live request ids.
    request_id = f"{job_id}-{uuid.uuid4().hex[:8]}"
    outputs = engine.generate(
        request.engine_prompt or engine_prompt(engine, request.prompt_token_ids),
        request.sampling_params,
        request_id=request_id,
        lora_request=adapter,
    )
    # aclosing: a job cancelled or abandoned mid-stream closes vLLM's generator, which aborts the request;
    # so does the deadline, cancelling the wait for the next output.
    deadline = Deadline(settings.job_timeout_s)
    async with contextlib.aclosing(outputs), contextlib.aclosing(deadline.each(outputs)) as bounded:
        if request.stream:
            async for chunk in stream_chunks(
                bounded,
                clock,
                flush_interval_s=settings.stream_flush_interval_ms / 1000,
                max_chunk_chars=settings.stream_max_chunk_chars,
                top_logprobs=request.sampling_params.logprobs,
                top_prompt_logprobs=request.sampling_params.prompt_logprobs,
            ):
                yield chunk
        else:
            async for output in bounded:
                if output.finished:
                    yield final_result(
                        output, clock, request.sampling_params.logprobs, request.sampling_params.prompt_logprobs
                    )
