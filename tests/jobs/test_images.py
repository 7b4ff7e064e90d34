"""Images on a real vision-language model (devtools/tiny_vlm.py: a tiny random Idefics3, made locally): data: and
http images reach the model through both APIs, and every refused or failed fetch is a clean error after which the
next job runs. This module starts its own engine."""

from __future__ import annotations

import asyncio
import json

import pytest

from config.settings import load_settings
from devtools.tiny_vlm import PROMPT_TOKENS_PER_IMAGE, make_tiny_vlm
from tests.helpers import ROOT, FatalRecorder, job_error
from tests.helpers.media_server import MediaServer, data_url, png_bytes

GREEDY = {"temperature": 0, "max_tokens": 6}


@pytest.fixture(scope="module")
def server():
    with MediaServer() as running:
        yield running


@pytest.fixture(scope="module")
def vlm(loop):
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    model = make_tiny_vlm(ROOT / ".models" / "tiny-idefics3")
    settings = load_settings(
        model_name=str(model), enforce_eager=True, max_images_per_prompt=2, media_fetch_timeout_s=1
    )
    handle = EngineHandle(settings, on_fatal=FatalRecorder())
    loop.run_until_complete(handle.get())
    yield settings, JobHandler(settings, handle).handle
    handle.shutdown()
    loop.run_until_complete(asyncio.sleep(0))


@pytest.fixture()
def allow_loopback(vlm):
    """MEDIA_ALLOWED_HOSTS=127.0.0.1 for one test (the policy is the process's, as on a worker)."""
    from worker.media.connector import install_media_policy

    settings = vlm[0]
    install_media_policy(settings.model_copy(update={"media_allowed_hosts": ["127.0.0.1"]}))
    yield
    install_media_policy(settings)


@pytest.fixture()
def run(loop, vlm):
    def run_job(job_input):
        async def collect():
            return [chunk async for chunk in vlm[1]({"id": "image-job", "input": job_input})]

        return loop.run_until_complete(collect())

    return run_job


def ask(*images: str, text: str = "What is in the picture?") -> list[dict]:
    parts = [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": url}} for url in images)]
    return [{"role": "user", "content": parts}]


def native(run, *images: str) -> dict:
    chunks = run({"messages": ask(*images), "sampling_params": GREEDY})
    assert "error" not in chunks[-1], chunks
    return chunks[-1]


def openai_chat(run, settings, *images: str) -> dict:
    body = {"model": settings.served_name, "messages": ask(*images), **GREEDY}
    (result,) = run({"openai_route": "/v1/chat/completions", "openai_input": body})
    return json.loads(result["error"])["error"] if "error" in result else result


def test_a_data_image_reaches_the_model_through_both_apis(run, vlm):
    text_only = native(run)["usage"]["prompt_tokens"]
    with_image = native(run, data_url(png_bytes()))
    assert with_image["usage"]["prompt_tokens"] == text_only + PROMPT_TOKENS_PER_IMAGE
    response = openai_chat(run, vlm[0], data_url(png_bytes()))
    assert response["usage"]["prompt_tokens"] == with_image["usage"]["prompt_tokens"]
    assert response["choices"][0]["message"]["content"] == with_image["choices"][0]["text"]
    two = native(run, data_url(png_bytes()), data_url(png_bytes(30, 30)))
    assert two["usage"]["prompt_tokens"] == text_only + 2 * PROMPT_TOKENS_PER_IMAGE


def test_a_loopback_url_is_refused_by_default_on_both_apis(run, vlm, server):
    error = job_error(run({"messages": ask(server.url("/image.png"))}))
    assert error["type"] == "invalid_input"
    assert error["fields"][0]["field"] == "input.messages[0].content[1].image_url.url"
    assert "resolves to 127.0.0.1" in error["message"]
    openai_error = openai_chat(run, vlm[0], server.url("/image.png"))
    assert openai_error["code"] == 400 and "resolves to 127.0.0.1" in openai_error["message"]
    assert native(run, data_url(png_bytes()))  # the next job runs


def test_a_served_image_reaches_the_model_when_its_host_is_allowed(run, vlm, server, allow_loopback):
    from_data = native(run, data_url(server.small))
    from_url = native(run, server.url("/image.png"))
    assert from_url["usage"]["prompt_tokens"] == from_data["usage"]["prompt_tokens"]
    assert from_url["choices"][0]["text"] == from_data["choices"][0]["text"]
    response = openai_chat(run, vlm[0], server.url("/redirect?to=/image.png"))
    assert response["choices"][0]["message"]["content"] == from_data["choices"][0]["text"]


@pytest.mark.parametrize(
    "path, says",
    [
        ("/huge-pixels.png", "over MAX_IMAGE_PIXELS"),
        ("/not-an-image", "is not an image"),
        ("/slow", "within MEDIA_FETCH_TIMEOUT_S=1 s"),
        ("/missing", "HTTP 404"),
    ],
)
def test_failed_fetches_are_clean_errors_and_the_next_job_runs(run, vlm, server, allow_loopback, path, says):
    error = job_error(run({"messages": ask(server.url(path))}))
    assert error["type"] == "invalid_input" and says in error["message"], error
    assert error["fields"][0]["field"] == "input.messages[0].content[1].image_url.url"
    openai_error = openai_chat(run, vlm[0], server.url(path))
    assert openai_error["code"] == 400 and says in openai_error["message"], openai_error
    assert native(run, data_url(png_bytes()))


def test_more_images_than_allowed_is_refused(run, vlm):
    error = job_error(run({"messages": ask(*[data_url(png_bytes())] * 3)}))
    assert error["fields"][0]["field"] == "input.messages[0].content[3].image_url"
    assert "over MAX_IMAGES_PER_PROMPT=2" in error["message"]
    openai_error = openai_chat(run, vlm[0], *[data_url(png_bytes())] * 3)
    assert openai_error["code"] == 400
