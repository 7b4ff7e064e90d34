"""The HTTP app of a load-balancing worker: every route of the one route table (worker/routes/table.py) at the
path `vllm serve` answers it, plus the routes of an HTTP server the queue mode has no use for: GET /ping (RunPod's
health check, worker/transports/load_balancer/lifecycle.py), GET /health (vLLM's: 200 while the engine serves)
and GET /metrics (vLLM's Prometheus metrics)."""

from __future__ import annotations

import contextlib
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from worker.routes.errors import dialect_of
from worker.routes.table import ROUTES, Route
from worker.transports.load_balancer.admission import Admission
from worker.transports.load_balancer.lifecycle import Lifecycle
from worker.transports.load_balancer.responses import answer_request, error_response
from worker.vllm_api import create_error_response, get_prometheus_registry


def build_app(lifecycle: Lifecycle) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        lifecycle.begin_start()  # the engine starts with the server; /ping answers 204 meanwhile
        yield

    async def ping(_request: Request) -> Response:
        return Response(status_code=lifecycle.ping_status())

    async def health(_request: Request) -> Response:
        return Response(status_code=HTTPStatus.OK if lifecycle.serving else HTTPStatus.SERVICE_UNAVAILABLE)

    registry = get_prometheus_registry()

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        HttpRoute("/ping", ping, methods=["GET"]),
        HttpRoute("/health", health, methods=["GET"]),
        HttpRoute("/metrics", metrics, methods=["GET"]),
        *(HttpRoute(route.path, _endpoint(lifecycle, route), methods=_methods(route)) for route in ROUTES),
    ]
    no_such_route = _no_such_route(lifecycle)
    return Starlette(
        routes=routes,
        middleware=[Middleware(Admission, lifecycle=lifecycle)],
        exception_handlers={HTTPStatus.NOT_FOUND: no_such_route, HTTPStatus.METHOD_NOT_ALLOWED: no_such_route},
        lifespan=lifespan,
    )


def _methods(route: Route) -> list[str]:
    # As `vllm serve`: a route with a request body takes POST; the others are read with GET (and the
    # Responses API's /cancel, which has none, is a POST).
    return ["POST"] if route.request is not None or route.path.endswith("/cancel") else ["GET"]


def _endpoint(lifecycle: Lifecycle, route: Route):
    async def endpoint(request: Request) -> Response:
        return await answer_request(lifecycle, route, request)

    endpoint.__name__ = route.serving
    return endpoint


def _no_such_route(lifecycle: Lifecycle):
    async def no_such_route(request: Request, error: HTTPException) -> Response:
        # In the API's error shape (the clients parse it), naming what is served, as the queue mode's 404 does.
        served = ", ".join(lifecycle.routes.served) if lifecycle.routes else "the routes of vLLM's OpenAI server"
        problem = "no such route" if error.status_code == HTTPStatus.NOT_FOUND else f"{request.method} is not allowed"
        answer = create_error_response(f"{request.url.path}: {problem}; for this model the worker serves {served}",
                                       err_type=HTTPStatus(error.status_code).phrase,
                                       status_code=HTTPStatus(error.status_code))
        return error_response(answer, dialect_of(request.url.path))

    return no_such_route
