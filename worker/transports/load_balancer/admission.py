"""What lets a request in, before any route sees it (pure ASGI, so a stream's disconnect still reaches it):

- API_KEY, when set: `Authorization: Bearer <key>` (the openai client) or `x-api-key: <key>` (the anthropic
  client); every path but /ping and /health (RunPod's health check carries no key). 401 otherwise.
- SIGTERM: new requests get 503 (with Retry-After) while the ones in flight finish.
- MAX_CONCURRENCY requests in flight, streams until their last event: past it, 429 with Retry-After at once.
  RunPod's load balancer keeps no queue, and an unbounded one here would hold every waiting body in memory.
"""

from __future__ import annotations

import hashlib
import secrets
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.routes.errors import dialect_of
from worker.transports.load_balancer.lifecycle import Lifecycle
from worker.transports.load_balancer.responses import RETRY_AFTER_S, error_response
from worker.vllm_api import create_error_response

OPEN_PATHS = frozenset({"/ping", "/health"})
# Answered without an engine request: not counted against MAX_CONCURRENCY.
UNCOUNTED_PATHS = OPEN_PATHS | {"/metrics"}


class Admission:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.max_in_flight = lifecycle.settings.max_concurrency
        key = lifecycle.settings.api_key
        # Compared as digests, in constant time (as vLLM's own API-key middleware does).
        self._key_digest = hashlib.sha256(key.get_secret_value().encode()).digest() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        refusal = self._refusal(path, Headers(scope=scope))
        if refusal is not None:
            return await refusal(scope, receive, send)
        if path in UNCOUNTED_PATHS:
            return await self.app(scope, receive, send)
        self.lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.in_flight -= 1

    def _refusal(self, path: str, headers: Headers):
        dialect = dialect_of(path)
        if self._key_digest is not None and not self._authorized(headers):
            error = create_error_response(
                "missing or wrong API key: send API_KEY as `Authorization: Bearer <key>` (or `x-api-key: <key>`)",
                err_type="AuthenticationError", status_code=HTTPStatus.UNAUTHORIZED,
            )
            return error_response(error, dialect)
        if path in UNCOUNTED_PATHS:
            return None
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.lifecycle.draining:
            error = create_error_response(
                "this worker is shutting down (SIGTERM) and takes no new requests; retry: RunPod sends it to another",
                err_type="ServiceUnavailableError", status_code=HTTPStatus.SERVICE_UNAVAILABLE,
            )
            return error_response(error, dialect, {**retry, "Connection": "close"})
        if self.lifecycle.in_flight >= self.max_in_flight:
            error = create_error_response(
                f"this worker is answering MAX_CONCURRENCY={self.max_in_flight} requests already; retry after "
                f"{RETRY_AFTER_S} s, or raise MAX_CONCURRENCY or the endpoint's max workers",
                err_type="RateLimitError", status_code=HTTPStatus.TOO_MANY_REQUESTS,
            )
            return error_response(error, dialect, retry)
        return None

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
        return bool(given) and secrets.compare_digest(hashlib.sha256(given.encode()).digest(), self._key_digest)
