"""The job handler the runpod SDK calls: route a job, run it on the shared engine, yield its output.

Native jobs yield stream chunks (stream: true) or one whole result; `openai_route` jobs go to
vLLM's own OpenAI serving layer (worker/routes/serving.py). Every failure a caller can cause or see ends as
one structured error chunk ({"error": "<JSON>"}); the worker keeps serving the next job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from config.settings import WorkerSettings
from worker.engine.handle import EngineHandle, EngineStartError
from worker.jobs.native import native_job_chunks
from worker.jobs.openai_route import route_failure_output, route_job_chunks
from worker.jobs.output import JobClock
from worker.jobs.pooling import (
    encode_on_engine,
    is_pooling_job,
    parse_pooling_job,
    pooling_error,
    pooling_result,
    route_call,
)
from worker.jobs.request import (
    sampling_error,
    sampling_params_model,
)
from worker.requests.deadline import Deadline
from worker.requests.errors import JobError
from worker.requests.limits import InputLimits
from worker.routes.serving import OpenAIRoutes
from worker.vllm_api import EngineDeadError, VLLMValidationError

log = logging.getLogger(__name__)

class JobHandler:
    """`handle(job)` is the SDK's handler: an async generator of job output chunks."""

    def __init__(self, settings: WorkerSettings, engine: EngineHandle) -> None:
        self.settings = settings
        self.engine = engine
        self._openai = None  # built on the first openai_route job
        self._openai_lock = asyncio.Lock()  # concurrent first openai jobs build it once
        self._limits: InputLimits | None = None  # known once the engine is up
        sampling_params_model()  # build the schema now, not on the first job

    def concurrency(self, current: int) -> int:
        """runpod concurrency_modifier: this many jobs share the engine at once (continuous batching).

        Kept after a fatal engine failure too: at 0 the SDK would leave jobs it already queued unstarted
        and unreported; failing them with the reason during the exit grace is the clearer end."""
        return self.settings.max_concurrency

    async def handle(self, job: dict[str, Any]) -> AsyncIterator[Any]:
        # A bound async-generator method, so the SDK (inspect.isasyncgenfunction) streams its chunks.
        job_id = str(job.get("id") or uuid.uuid4())
        clock = JobClock()
        job_input = job.get("input")
        openai_job = isinstance(job_input, dict) and "openai_route" in job_input
        try:
            if openai_job:
                async for chunk in self._run_openai(job_input, job_id):
                    yield chunk
            elif is_pooling_job(job_input):
                yield await self._run_pooling(job_input, job_id, clock)
            else:
                async for chunk in self._run_native(job_input, job_id, clock):
                    yield chunk
        except Exception as error:
            failure = self._failure(job_id, error)
            if openai_job:  # a route's clients get the route's error body, whatever failed
                yield route_failure_output(failure, job_input.get("openai_route"))
            else:
                yield failure.as_job_output()

    def _failure(self, job_id: str, error: Exception) -> JobError:
        if isinstance(error, JobError):
            log.info("job %s failed: %s", job_id, error.type)
            return error
        if isinstance(error, VLLMValidationError):  # vLLM refused the request's parameters on admission
            log.info("job %s failed: vLLM refused %s", job_id, error.parameter or "the request")
            return sampling_error(error)
        if isinstance(error, EngineStartError):
            return JobError("engine_start_failed", str(error), "Fix the configuration named above; the worker restarts.")
        return self._unexpected(job_id, error)  # engine death and anything unforeseen: fail this job, log why

    def _input_limits(self, engine: Any) -> InputLimits:
        if self._limits is None:  # sized from the model's context and tokenizer, once
            self._limits = InputLimits.of(
                engine.get_tokenizer(), engine.model_config.max_model_len, self.settings.max_input_chars
            )
        return self._limits

    async def _run_native(self, job_input: Any, job_id: str, clock: JobClock) -> AsyncIterator[Any]:
        wait_started = time.perf_counter()
        engine = await self.engine.get()
        clock.engine_ready(time.perf_counter() - wait_started, self.engine.load.latest)
        limits = self._input_limits(engine)
        async for chunk in native_job_chunks(engine, self.engine.adapters, self.settings, limits, job_input, job_id, clock):
            yield chunk

    async def _routes(self) -> Any:
        """vLLM's serving layer on the engine (worker/routes/serving.py), built on first use."""
        engine = await self.engine.get()
        if self._openai is None:
            async with self._openai_lock:
                if self._openai is None:
                    self._openai = await OpenAIRoutes.create(
                        engine, self.settings, self._input_limits(engine), self.engine.adapters
                    )
        return self._openai

    async def _run_openai(self, job_input: dict[str, Any], job_id: str) -> AsyncIterator[Any]:
        routes = await self._routes()
        async for chunk in route_job_chunks(routes, job_input, job_id, self.settings):
            yield chunk

    async def _run_pooling(self, job_input: dict[str, Any], job_id: str, clock: JobClock) -> dict[str, Any]:
        """A native embed/classify/score job, answered by vLLM's serving class for its route."""
        job = parse_pooling_job(job_input)
        wait_started = time.perf_counter()
        routes = self._openai or await self._routes()  # built once; pooling jobs are short, each µs shows
        clock.engine_ready(time.perf_counter() - wait_started, self.engine.load.latest)
        call = route_call(job, self.settings.served_name)
        engine = routes.engine
        deadline = Deadline(self.settings.job_timeout_s)
        if job.task == "score" or call.route not in routes.served:  # vLLM's own answer (or its 404)
            answer = await deadline.wait(routes.json_answer(call.route, call.body))
        else:
            answer = await deadline.wait(encode_on_engine(engine, job, f"{job_id}-{uuid.uuid4().hex[:8]}"))
        if isinstance(answer, dict):
            return pooling_result(job, answer, clock)
        log.info("pooling job %s failed: %s %s", job_id, answer.error.code, answer.error.type)
        raise pooling_error(call, answer.error.code, answer.error.message, routes.served)

    def _unexpected(self, job_id: str, error: Exception) -> JobError:
        if isinstance(error, EngineDeadError) or (self.engine.engine is not None and self.engine.engine.errored):
            self.engine.report_dead()
            return JobError(
                "engine_dead",
                "the vLLM engine process died while this job ran; the worker is restarting",
                "Retry the job; it will run on a fresh worker.",
            )
        log.exception("job %s failed unexpectedly", job_id)
        return JobError("internal_error", f"{type(error).__name__}: {error}", "Retry; if it repeats, report it with the worker log.")
