"""Where an HTTP worker stands, as RunPod's load balancer reads it from GET /ping: 204 while the engine starts,
200 once it serves, 503 once it failed to start, died or drains after SIGTERM (RunPod then sends it nothing).

The engine starts with the process (there is no first job to start it), in a thread (EngineHandle.get), while
the server already answers /ping; the route layer is built on it as soon as it is up.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

from config.settings import WorkerSettings
from worker.engine.handle import EngineHandle, EngineStartError, exit_process
from worker.requests.errors import JobError
from worker.requests.limits import InputLimits
from worker.routes.serving import OpenAIRoutes

log = logging.getLogger(__name__)

ENGINE_DEAD = JobError(
    "engine_dead",
    "the vLLM engine process died while this request ran; the worker is restarting",
    "Retry the request; RunPod sends it to a healthy worker.",
)


class Lifecycle:
    """The engine, the route layer once built, and the requests in flight (worker/transports/load_balancer/admission.py
    counts them; SIGTERM waits for them)."""

    def __init__(self, settings: WorkerSettings, engine: EngineHandle) -> None:
        self.settings = settings
        self.engine = engine
        self.routes: OpenAIRoutes | None = None
        self.start_error: JobError | None = None
        self.draining = False
        self.in_flight = 0
        self._start: asyncio.Task | None = None

    def begin_start(self) -> None:
        """Start the engine build now, on the running loop (the build itself runs in a thread)."""
        self._start = asyncio.get_running_loop().create_task(self._build())

    async def _build(self) -> None:
        try:
            engine = await self.engine.get()
            limits = InputLimits.of(engine.get_tokenizer(), engine.model_config.max_model_len,
                                    self.settings.max_input_chars)
            self.routes = await OpenAIRoutes.create(engine, self.settings, limits, self.engine.adapters)
        except EngineStartError as error:  # logged; EngineHandle exits the worker after its grace
            self.start_error = JobError("engine_start_failed", str(error), "Fix the configuration named above; "
                                        "the worker restarts.")
        except Exception as error:  # the route layer could not be built on a running engine
            log.exception("the OpenAI routes could not be built")
            self.start_error = JobError("engine_start_failed", f"{type(error).__name__}: {error}",
                                        "Report it with the worker log; the worker restarts.")
            exit_process(f"the OpenAI routes could not be built: {error}")
        else:
            log.info("serving HTTP: %s", ", ".join(self.routes.served))

    @property
    def engine_dead(self) -> bool:
        engine = self.engine.engine
        return engine is not None and engine.errored

    @property
    def serving(self) -> bool:
        """The routes answer: the engine is up and alive, and SIGTERM has not come."""
        return self.routes is not None and not self.engine_dead and not self.draining

    def ping_status(self) -> int:
        """RunPod's /ping contract: 200 healthy, 204 initializing, anything else unhealthy."""
        if self.serving:
            return HTTPStatus.OK
        if self.routes is None and self.start_error is None and not self.draining:
            return HTTPStatus.NO_CONTENT
        return HTTPStatus.SERVICE_UNAVAILABLE

    def report_engine_dead(self) -> None:
        """A request met the dead engine before the watchdog did: exit now (EngineHandle logs it once)."""
        self.engine.report_dead()
