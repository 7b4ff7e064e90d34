"""A small local stand-in for the Hugging Face Hub's HTTP API, and hand-made hub caches: what
huggingface_hub's real functions read, without ever contacting the Hub."""

from __future__ import annotations

import hashlib
import http.server
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

TOKEN = "hf_SECRETtokenVALUE0123456789"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "acme/tiny-model"
FILES = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model.safetensors": b"\x00" * 4096}
# What meta-llama repos ship: HF safetensors shards plus Meta's original checkpoint (same weights again).
LLAMA_FILES = {
    **{name: b"{}" for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                "model.safetensors.index.json", "original/params.json")},
    "chat_template.jinja": b"{{ messages }}",
    "model-00001-of-00002.safetensors": b"\x01" * 2048,
    "model-00002-of-00002.safetensors": b"\x02" * 2048,
    "original/consolidated.00.pth": b"\x03" * 2048,
    "original/tokenizer.model": b"\x04" * 64,
}


def fake_cache(cache_dir: Path, repo: str = REPO, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """The layout snapshot_download leaves: models--org--name/{refs/<ref>, snapshots/<commit>/...}."""
    repo_dir = cache_dir / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in FILES.items():
        (snapshot / name).write_bytes(data)
    if ref:
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def write_hub_cache(cache: Path, repo: str, config_data: dict) -> None:
    """The layout huggingface_hub keeps for a downloaded file (refs/main -> snapshots/<commit>/config.json)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config_data))


class FakeHub(http.server.ThreadingHTTPServer):
    """Answers the few routes snapshot_download uses; `mode` picks the failure, if any."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.mode = "ok"
        self.files = FILES
        self.authorizations: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def do_GET(self, body: bool = True) -> None:
        self.server.authorizations.append(self.headers.get("authorization"))
        path = unquote(urlparse(self.path).path)
        mode = self.server.mode
        errors = {
            "gated": (403, "GatedRepo", "Access to model acme/tiny-model is restricted."),
            "missing": (401, "RepoNotFound", "Repository not found"),
            "revision": (404, "RevisionNotFound", "Invalid rev id: v9"),
            "bad-token": (401, None, "Invalid credentials in Authorization header"),
            "forbidden": (403, None, "Forbidden"),
            "down": (503, None, "Service unavailable"),
        }
        if mode in errors:
            status, code, message = errors[mode]
            headers = {"X-Error-Message": message} | ({"X-Error-Code": code} if code else {})
            return self._send(status, json.dumps({"error": message}).encode(), headers, body)
        if path.startswith(f"/api/models/{REPO}/revision/"):
            info = {"id": REPO, "sha": COMMIT, "siblings": [{"rfilename": name} for name in self.server.files]}
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if path.startswith(f"/api/models/{REPO}/tree/"):
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in self.server.files.items()
            ]
            return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
        prefix = f"/{REPO}/resolve/{COMMIT}/"
        if path.startswith(prefix) and path[len(prefix) :] in self.server.files:
            data = self.server.files[path[len(prefix) :]]
            etag = f'"{hashlib.sha1(data).hexdigest()}"'
            return self._send(200, data, {"ETag": etag, "X-Repo-Commit": COMMIT}, body)
        self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
