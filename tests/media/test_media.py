"""Image URLs: the fetch policy against a real local HTTP server (private addresses, schemes, redirects, size,
pixels, time), the image settings, and native content parts on the session's text-only engine."""

from __future__ import annotations

import time

import pytest

from config.errors import SettingsError
from config.settings import load_settings
from tests.helpers import job_error
from tests.helpers.media_server import MediaServer, data_url, png_bytes
from worker.media.url_policy import (
    FetchPolicy,
    MediaFetchError,
    fetch_image,
    is_public_address,
)

DEFAULT = FetchPolicy.from_settings(load_settings(model_name="org/m"))


def allowing(*hosts: str, **changes) -> FetchPolicy:
    settings = load_settings(model_name="org/m", media_allowed_hosts=",".join(hosts), **changes)
    return FetchPolicy.from_settings(settings)


@pytest.fixture(scope="module")
def server():
    with MediaServer() as running:
        yield running


# --- addresses and schemes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_only_public_addresses_are_public(address, public):
    assert is_public_address(address) is public


def test_loopback_is_refused_by_default_and_fetched_when_allowed(server):
    with pytest.raises(MediaFetchError, match="resolves to 127.0.0.1, a private, loopback"):
        fetch_image(server.url("/image.png"), DEFAULT)
    assert fetch_image(server.url("/image.png"), allowing("127.0.0.1")) == server.small


def test_localhost_by_name_is_refused_too(server):
    with pytest.raises(MediaFetchError, match="localhost resolves to"):
        fetch_image(server.url("/image.png", host="localhost"), DEFAULT)


@pytest.mark.parametrize(
    "url, says",
    [
        ("file:///etc/passwd", "file URLs are not fetched"),
        ("ftp://example.com/a.png", "ftp URLs are not fetched"),
        ("gopher://127.0.0.1:70/", "gopher URLs are not fetched"),
        ("//no-scheme/a.png", "scheme-less URLs"),
        ("http:///a.png", "no host"),
        ("data:image/png,abc", "must be base64"),
        ("data:image/png;base64,@@@", "not valid base64"),
    ],
)
def test_other_schemes_and_malformed_urls_are_refused(url, says):
    with pytest.raises(MediaFetchError, match=says):
        fetch_image(url, DEFAULT)


def test_a_redirect_to_a_private_address_is_refused_at_that_hop(server):
    # localhost is allowed, 127.0.0.1 is not: the first hop passes, the redirect's target does not.
    policy = allowing("localhost")
    start = server.url("/redirect?to=" + server.url("/image.png"), host="localhost")
    with pytest.raises(MediaFetchError, match="127.0.0.1 resolves to 127.0.0.1"):
        fetch_image(start, policy)
    assert fetch_image(server.url("/redirect?to=/image.png"), allowing("127.0.0.1")) == server.small


def test_redirects_are_bounded(server):
    with pytest.raises(MediaFetchError, match="more than 5 redirects"):
        fetch_image(server.url("/redirect-loop"), allowing("127.0.0.1"))


def test_a_redirect_to_a_file_url_is_refused(server):
    with pytest.raises(MediaFetchError, match="file URLs are not fetched"):
        fetch_image(server.url("/redirect?to=file:///etc/passwd"), allowing("127.0.0.1"))


# --- limits -------------------------------------------------------------------------------------------


def test_data_url_is_decoded_and_checked():
    assert fetch_image(data_url(png_bytes()), DEFAULT) == png_bytes()
    with pytest.raises(MediaFetchError, match="over MAX_IMAGE_BYTES=100"):
        fetch_image(data_url(png_bytes()), allowing(max_image_bytes=100))
    with pytest.raises(MediaFetchError, match="not an image"):
        fetch_image(data_url(b"plain text", "text/plain"), DEFAULT)


def test_too_many_pixels_is_refused_without_decoding(server):
    with pytest.raises(MediaFetchError, match="6000x6000 = 36,000,000 pixels, over MAX_IMAGE_PIXELS=16,777,216"):
        fetch_image(server.url("/huge-pixels.png"), allowing("127.0.0.1"))


def test_a_body_over_the_byte_limit_is_refused(server):
    with pytest.raises(MediaFetchError, match="200,000 bytes, over MAX_IMAGE_BYTES=100,000"):
        fetch_image(server.url("/big-body"), allowing("127.0.0.1", max_image_bytes=100_000))


def test_a_non_image_body_is_refused(server):
    with pytest.raises(MediaFetchError, match=r"\(text/html\) is not an image"):
        fetch_image(server.url("/not-an-image"), allowing("127.0.0.1"))


def test_a_slow_server_times_out_within_the_limit(server):
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match="within MEDIA_FETCH_TIMEOUT_S=1 s"):
        fetch_image(server.url("/slow"), allowing("127.0.0.1", media_fetch_timeout_s=1))
    assert time.monotonic() - started < MediaServer.SLOW_S


def test_http_errors_are_reported(server):
    with pytest.raises(MediaFetchError, match="answered HTTP 404"):
        fetch_image(server.url("/missing"), allowing("127.0.0.1"))


@pytest.mark.parametrize("setting", ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MEDIA_FETCH_TIMEOUT_S"])
def test_bad_limits_are_settings_errors(setting):
    with pytest.raises(SettingsError, match=setting):
        load_settings(model_name="org/m", **{setting.lower(): 0})


# --- native content parts (session engine: the tiny text-only model) ----------------------------------------


def test_text_parts_render_like_a_string(run_job):
    greedy = {"temperature": 0, "max_tokens": 8}
    as_string = run_job({"messages": [{"role": "user", "content": "Hello there"}], "sampling_params": greedy})
    as_parts = run_job({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
        "sampling_params": greedy,
    })
    assert "error" not in as_parts[-1], as_parts
    assert as_parts[-1]["usage"]["prompt_tokens"] == as_string[-1]["usage"]["prompt_tokens"]
    assert as_parts[-1]["choices"][0]["text"] == as_string[-1]["choices"][0]["text"]


def test_a_text_only_model_refuses_image_parts_naming_the_part(run_job):
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}]
    error = job_error(run_job({"messages": [{"role": "user", "content": parts}]}))
    assert error["type"] == "invalid_input"
    assert error["fields"][0]["field"] == "input.messages[0].content[1].image_url"
    assert "text-only" in error["message"]
    ok = run_job({"prompt": "next", "sampling_params": {"max_tokens": 2}})
    assert "error" not in ok[-1]


@pytest.mark.parametrize(
    "part, field",
    [
        ({"type": "video", "url": "x"}, "input.messages[0].content[0]"),
        ({"type": "image_url", "image_url": {"url": ""}}, "input.messages[0].content[0].image_url.url"),
        ({"type": "image_url", "image_url": "https://x/a.png"}, "input.messages[0].content[0].image_url"),
        ({"type": "text"}, "input.messages[0].content[0].text"),
    ],
)
def test_malformed_parts_name_the_field(run_job, part, field):
    error = job_error(run_job({"messages": [{"role": "user", "content": [part]}]}))
    assert error["type"] == "invalid_input"
    assert field in [f["field"] for f in error["fields"]], error
