"""ENDPOINT_TYPE=load_balancer: uvicorn serving the app (worker/transports/load_balancer/app.py) on PORT and, when it
differs, PORT_HEALTH (one server, one app, both sockets), until SIGTERM.

SIGTERM drains: /ping answers 503 and new requests 503 at once, the requests and streams in flight run to their
end (each is bounded by JOB_TIMEOUT_S, the grace), then the server closes and the engine stops. The exit code
is 0; a dead engine or a failed start exit 1 from EngineHandle, as in queue mode.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from types import FrameType
from typing import NoReturn

import uvicorn

from config.errors import BAD_CONFIG_EXIT
from config.settings import WorkerSettings
from worker.engine.handle import EngineHandle
from worker.engine.shutdown import exit_now
from worker.transports.load_balancer.app import build_app
from worker.transports.load_balancer.lifecycle import Lifecycle
from worker.transports.queue.fitness import register_fitness_checks, run_fitness_checks_now

log = logging.getLogger(__name__)

# After the drain: how long uvicorn waits for connections that are still open (idle keep-alives close at once).
CLOSE_GRACE_S = 5.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM (or SIGINT) drains instead of closing at once; a second one closes."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self._drain_until = float("inf")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded for uvicorn to raise again once it is done: the worker exits 0 after a drain.
        if self.lifecycle.draining:
            self.should_exit = True
            return
        self.lifecycle.draining = True
        self._drain_until = time.monotonic() + self.lifecycle.settings.job_timeout_s
        log.info("%s: draining %d request(s) in flight, taking no new ones", signal.Signals(sig).name,
                 self.lifecycle.in_flight)

    async def on_tick(self, counter: int) -> bool:
        if self.lifecycle.draining and (self.lifecycle.in_flight == 0 or time.monotonic() > self._drain_until):
            self.should_exit = True
        return await super().on_tick(counter)


def listening_sockets(settings: WorkerSettings) -> list[socket.socket]:
    """Bound sockets for PORT and PORT_HEALTH (one when they are the same), on every interface."""
    sockets = []
    for port in dict.fromkeys((settings.port, settings.health_port)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sockets.append(sock)
    return sockets


def serve(settings: WorkerSettings, engine: EngineHandle) -> int:
    """Serve until SIGTERM and the drain; the exit code."""
    try:
        sockets = listening_sockets(settings)
    except OSError as error:
        log.error("PORT=%s / PORT_HEALTH=%s: cannot listen: %s. Set PORT (and PORT_HEALTH) to free ports this "
                  "container may bind, and expose them on the endpoint", settings.port, settings.health_port, error)
        return BAD_CONFIG_EXIT
    lifecycle = Lifecycle(settings, engine)
    config = uvicorn.Config(
        build_app(lifecycle),
        lifespan="on",
        log_config=None,  # the worker's logging, not uvicorn's dictConfig
        access_log=False,  # a line per request: RunPod's own request log has them
        timeout_graceful_shutdown=CLOSE_GRACE_S,
    )
    log.info("load_balancer: HTTP on port(s) %s, /ping on %s", ", ".join(str(s.getsockname()[1]) for s in sockets),
             settings.health_port)
    try:
        DrainingServer(config, lifecycle).run(sockets=sockets)
    finally:
        engine.shutdown()  # vLLM's processes stop with the worker
    return 0


def run_load_balancer(settings: WorkerSettings) -> NoReturn:
    """The worker of a load-balancing endpoint: the runpod SDK's fitness checks (its job loop, which would run
    them, does not run here), then the server until SIGTERM; exits with its code."""
    register_fitness_checks(settings)
    run_fitness_checks_now()
    exit_now(serve(settings, EngineHandle(settings)))
