"""Images in requests: vLLM's media fetching made to obey the worker's URL policy.

vLLM's chat parsing (OpenAI routes, and native jobs with image parts) loads every media URL through a
MediaConnector chosen by VLLM_MEDIA_CONNECTOR. `install_media_policy` registers PolicyMediaConnector (start-up
selects it), so vLLM's own fetching goes through worker/media/url_policy.py: one policy for both APIs. Native jobs
fetch their image parts first (worker/jobs/content_parts.py, so an error names the part) and hand vLLM
data: URLs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from config.settings import WorkerSettings
from worker.media.url_policy import (
    FetchPolicy,
    MediaFetchError,
    check_image,
    describe_url,
    fetch_bytes,
)
from worker.vllm_api import MEDIA_CONNECTOR_REGISTRY, ImageMediaIO, MediaConnector

CONNECTOR_NAME = "runpod-worker-url-policy"
_policy: FetchPolicy | None = None


def install_media_policy(settings: WorkerSettings) -> FetchPolicy:
    """Register our policy's media connector with vLLM (before the engine and its chat parsing start); vLLM uses
    it once VLLM_MEDIA_CONNECTOR names it (worker/startup/prepare.py sets it)."""
    global _policy
    _policy = FetchPolicy.from_settings(settings)
    MEDIA_CONNECTOR_REGISTRY.register(CONNECTOR_NAME)(PolicyMediaConnector)
    return _policy


def media_policy() -> FetchPolicy:
    if _policy is None:
        raise RuntimeError("install_media_policy(settings) was not called")
    return _policy


class PolicyMediaConnector(MediaConnector):
    """vLLM's MediaConnector with every http(s) and data: URL fetched and checked by the worker's policy.
    file: URLs stay vLLM's (refused unless the operator set --allowed-local-media-path in OPENAI_SERVER_ARGS)."""

    def _fetch(self, url: str, media_io: Any) -> bytes:
        try:
            data, content_type = fetch_bytes(url, media_policy())
            if isinstance(media_io, ImageMediaIO):
                check_image(data, media_policy(), content_type)
        except MediaFetchError as error:
            raise ValueError(f"media URL {describe_url(url)}: {error}") from None
        return data

    def _is_fetched(self, url: str) -> bool:
        scheme = url.partition(":")[0].lower()
        return scheme in ("http", "https", "data") or not (scheme == "file" and self.allowed_local_media_path)

    def load_from_url(self, url: str, media_io: Any, *, fetch_timeout: int | None = None) -> Any:
        if not self._is_fetched(url):
            return super().load_from_url(url, media_io, fetch_timeout=fetch_timeout)
        return media_io.load_bytes(self._fetch(url, media_io))

    async def load_from_url_async(self, url: str, media_io: Any, *, fetch_timeout: int | None = None) -> Any:
        if not self._is_fetched(url):
            return await super().load_from_url_async(url, media_io, fetch_timeout=fetch_timeout)
        data = await asyncio.to_thread(self._fetch, url, media_io)
        return await asyncio.to_thread(media_io.load_bytes, data)


