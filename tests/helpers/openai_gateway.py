"""RunPod's OpenAI relay in miniature, so tests can point the official openai (or anthropic) client at
the worker.

What RunPod does for https://api.runpod.ai/v2/<endpoint_id>/openai/v1/<route>, and this does on
http://127.0.0.1:<free port>/<path> (base_url ends in /v1 for the openai client; root_url is the
anthropic client's base, which adds /v1/messages itself):
- the HTTP request becomes a job {"openai_route": "/<path>", "openai_input": <JSON body>}
  (a body that is not JSON is passed on as its text: the worker answers it with a 400);
- the job runs through the handler the runpod SDK calls (JobHandler);
- stream: true -> every chunk the job yields is written to the client as it comes (they are SSE text);
  otherwise the job's one output is the response body;
- a failed job (a chunk {"error": "<JSON>"}) -> the error body it carries, with its HTTP status: an
  OpenAI body's `code`, or the status an Anthropic body's error type stands for (500 when the error
  is neither). Once a stream has started only an SSE error event can say so.

It serves on the event loop that owns the engine (the test session's loop): the worker's asyncio
objects belong to that loop, so the server runs as tasks there and clients call it from threads
while the loop runs.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from worker.routes.errors import ANTHROPIC_ERROR_TYPES

ANTHROPIC_STATUS = {error_type: status for status, error_type in ANTHROPIC_ERROR_TYPES.items()}

Handler = Callable[[dict[str, Any]], AsyncIterator[Any]]


class OpenAIGateway:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.jobs: list[dict[str, Any]] = []  # every job input sent, for tests to inspect
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.root_url = ""

    async def start(self) -> str:
        """Serve on 127.0.0.1 at a free port; returns the OpenAI base URL (…/v1)."""
        app = web.Application()
        app.router.add_route("*", "/{route:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.root_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.base_url = f"{self.root_url}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.method == "POST":
            raw = await request.text()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        job_input = {"openai_route": request.path, "openai_input": body}
        self.jobs.append(job_input)
        chunks = self.handler({"id": f"gw-{uuid.uuid4().hex[:12]}", "input": job_input})
        try:
            first = await anext(chunks, None)
            if first is None:
                return _error(500, "the job finished without output")
            if _failed(first):
                return _job_error(first["error"])
            if not (isinstance(body, dict) and body.get("stream")):
                return web.json_response(first)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await response.prepare(request)
            chunk = first
            while chunk is not None:
                if _failed(chunk):
                    error_body = _error_body(chunk["error"])[1]
                    event_line = "event: error\n" if error_body.get("type") == "error" else ""  # Anthropic's SSE error
                    await response.write(f"{event_line}data: {json.dumps(error_body)}\n\n".encode())
                    break
                event = chunk if isinstance(chunk, str) else f"data: {json.dumps(chunk)}\n\n"
                await response.write(event.encode())
                chunk = await anext(chunks, None)
            await response.write_eof()
            return response
        finally:
            await chunks.aclose()


def _failed(chunk: Any) -> bool:
    # The runpod SDK's rule (rp_job.handle_job): a dict chunk with a truthy "error" fails the job.
    return isinstance(chunk, dict) and bool(chunk.get("error"))


def _error_body(error: Any) -> tuple[int, dict[str, Any]]:
    """A failed job's error -> (HTTP status, the route's error body)."""
    try:
        parsed = json.loads(error) if isinstance(error, str) else error
    except ValueError:
        parsed = None
    inner = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("code"), int):
        return inner["code"], parsed
    if isinstance(inner, dict) and parsed.get("type") == "error" and inner.get("type") in ANTHROPIC_STATUS:
        return ANTHROPIC_STATUS[inner["type"]], parsed
    message = parsed.get("message", error) if isinstance(parsed, dict) else str(error)
    return 500, {"error": {"message": str(message), "type": "InternalServerError", "param": None, "code": 500}}


def _job_error(error: Any) -> web.Response:
    status, body = _error_body(error)
    return web.json_response(body, status=status)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "InternalServerError", "param": None, "code": status}}, status=status
    )
