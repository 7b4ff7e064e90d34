"""Native chat jobs with content parts (text and images): image URLs fetched under the worker's URL policy and
inlined, then the messages rendered by vLLM's own chat parsing, template and multimodal processor."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from worker.jobs.request import chat_template_kwargs
from worker.media.connector import media_policy
from worker.media.url_policy import (
    MediaFetchError,
    check_image,
    describe_url,
    fetch_bytes,
)
from worker.requests.errors import invalid_input
from worker.vllm_api import ChatParams


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
