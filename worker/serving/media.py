"""Images in requests: vLLM's media fetching made to obey the worker's URL policy, and native content parts.

vLLM's chat parsing (OpenAI routes, and native jobs with image parts) loads every media URL through a
MediaConnector chosen by VLLM_MEDIA_CONNECTOR. `install_media_policy` registers PolicyMediaConnector and selects
it, so vLLM's own fetching goes through worker/serving/url_policy.py: one policy for both APIs. Native jobs
fetch their image parts first (so an error names the part, e.g. input.messages[0].content[1]) and hand vLLM
data: URLs.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from config.settings import WorkerSettings
from worker.serving.errors import invalid_input
from worker.serving.url_policy import (
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
    """Make vLLM fetch media URLs through our policy (call before the engine and its chat parsing start)."""
    global _policy
    _policy = FetchPolicy.from_settings(settings)
    MEDIA_CONNECTOR_REGISTRY.register(CONNECTOR_NAME)(PolicyMediaConnector)
    os.environ["VLLM_MEDIA_CONNECTOR"] = CONNECTOR_NAME  # read by vLLM's chat parser for each request
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


def image_parts(messages: list[Any]) -> list[tuple[str, str]]:
    """(field path, URL) of every image part in native chat messages."""
    found = []
    for m, message in enumerate(messages):
        if isinstance(message.content, list):
            for p, part in enumerate(message.content):
                if part.type == "image_url":
                    found.append((f"input.messages[{m}].content[{p}].image_url", part.image_url.url))
    return found


async def inline_images(messages: list[dict[str, Any]], parts: list[tuple[str, str]], *, multimodal: bool) -> None:
    """Fetch each image part of a native job under the policy and put it back as a data: URL (in place);
    a failure is invalid_input naming the part."""
    policy = media_policy()
    if parts and not multimodal:
        raise invalid_input(parts[0][0], "this model is text-only and cannot take images", "Send text parts only, or deploy a vision-language model.")
    if len(parts) > policy.max_images:
        raise invalid_input(
            parts[policy.max_images][0],
            f"{len(parts)} images are over MAX_IMAGES_PER_PROMPT={policy.max_images}",
            "Send fewer images per request.",
        )

    async def one(field: str, url: str) -> str:
        try:
            data, content_type = await asyncio.to_thread(fetch_bytes, url, policy)
            await asyncio.to_thread(check_image, data, policy, content_type)
        except MediaFetchError as error:
            raise invalid_input(f"{field}.url", f"{describe_url(url)}: {error}", "Send an https:// image URL or a base64 data: URL within the limits in the README.") from None
        return f"data:{content_type or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"

    inlined = iter(await asyncio.gather(*(one(field, url) for field, url in parts)))
    for message in messages:
        if isinstance(message.get("content"), list):
            for part in message["content"]:
                if part.get("type") == "image_url":
                    part["image_url"]["url"] = next(inlined)


async def render_content_parts(job: Any, engine: Any) -> Any:
    """A native chat job whose messages hold content parts, rendered by vLLM's own chat parsing, template and
    multimodal processor (as its OpenAI chat route does): the engine prompt, images included."""
    from worker.serving.jobs import chat_template_kwargs
    from worker.vllm_api import ChatParams

    messages = [message.model_dump(exclude_none=True) for message in job.messages]
    await inline_images(messages, image_parts(job.messages), multimodal=engine.model_config.is_multimodal_model)
    kwargs = chat_template_kwargs(job, engine.get_tokenizer()) if job.chat_template_kwargs else {}
    kwargs["add_generation_prompt"] = True  # as the string path: the worker always asks for the assistant's turn
    try:
        _, (prompt,) = await engine.renderer.render_chat_async([messages], ChatParams(chat_template_kwargs=kwargs))
    except (ValueError, TypeError, KeyError) as error:  # vLLM's parsing, the template or the processor refused
        raise invalid_input(
            "input.messages",
            f"the model's chat template or processor rejected them: {error}",
            "Check the parts and the roles for this model (some templates need user/assistant turns to alternate).",
        ) from None
    return prompt
