"""A local HTTP server for image-URL tests: a small image, a huge-pixel image, a non-image, a slow answer,
a body past the byte limit and redirects. Runs in a thread on 127.0.0.1 at a free port."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time


def png_bytes(width: int = 50, height: int = 40, mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


class MediaServer:
    SLOW_S = 5.0

    def __init__(self) -> None:
        self.small = png_bytes()
        self.huge_pixels = png_bytes(6000, 6000, mode="1")  # 36 megapixels in a few KB
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = self.path
                if path == "/image.png":
                    self._send(200, server.small, "image/png")
                elif path == "/huge-pixels.png":
                    self._send(200, server.huge_pixels, "image/png")
                elif path == "/not-an-image":
                    self._send(200, b"<html>hello</html>", "text/html")
                elif path == "/big-body":
                    self._send(200, b"\0" * 200_000, "image/png")
                elif path == "/slow":
                    time.sleep(server.SLOW_S)
                    self._send(200, server.small, "image/png")
                elif path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", path.partition("=")[2])
                    self.end_headers()
                elif path == "/redirect-loop":
                    self.send_response(302)
                    self.send_header("Location", "/redirect-loop")
                    self.end_headers()
                else:
                    self._send(404, b"no", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout, size limit): expected in these tests

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
