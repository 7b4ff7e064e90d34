"""The one fetch policy for media a request names by URL (images in chat messages), on both APIs.

- Only http(s) and data: URLs. file: and every other scheme are refused.
- The host is resolved and EVERY address it resolves to must be public (not private, loopback, link-local,
  shared, reserved, multicast or unspecified), unless the host is in MEDIA_ALLOWED_HOSTS. The connection
  then goes to the checked address (the name is not resolved twice, so DNS rebinding cannot swap it), with the
  original Host header and TLS server name, so certificates are still verified against the host name.
- Redirects are followed by hand, at most MAX_REDIRECTS, each hop checked like the first URL.
- One deadline (MEDIA_FETCH_TIMEOUT_S) covers DNS, connect, redirects and the body; the body is read up to
  MAX_IMAGE_BYTES and refused past it (Content-Length is checked first).
- An image is checked without decoding it: PIL reads its header; more than MAX_IMAGE_PIXELS is refused.
Every failure is a MediaFetchError whose message says why, for the caller to see.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from dataclasses import dataclass

import httpx

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024


class MediaFetchError(ValueError):
    """A media URL was refused or could not be fetched; the message is the reason, for the caller."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    max_pixels: int
    timeout_s: float
    max_images: int
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings) -> FetchPolicy:
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            timeout_s=settings.media_fetch_timeout_s,
            max_images=settings.max_images_per_prompt,
            allowed_hosts=frozenset(host.lower() for host in settings.media_allowed_hosts),
        )


def describe_url(url: str) -> str:
    """The URL as an error message shows it: data: URLs by their header only, long ones cut."""
    if url[:5].lower() == "data:":
        return url.partition(",")[0] + ",..."
    return url if len(url) <= 120 else url[:117] + "..."


def fetch_bytes(url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    """The body and content type at `url` (http, https or data:), within the policy; MediaFetchError if not."""
    if url[:5].lower() == "data:":
        return decode_data_url(url, policy)
    deadline = time.monotonic() + policy.timeout_s
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = _checked_url(url)
            address = _public_address(target, policy, deadline)
            try:
                result = _get(client, target, address, policy, deadline)
            except httpx.TimeoutException:
                raise MediaFetchError(f"the server did not answer within MEDIA_FETCH_TIMEOUT_S={policy.timeout_s:g} s") from None
            except httpx.HTTPError as error:
                raise MediaFetchError(f"could not fetch it ({type(error).__name__}: {error})") from None
            if isinstance(result, str):  # a redirect: check the next hop like the first
                url = result
                continue
            return result
    raise MediaFetchError(f"more than {MAX_REDIRECTS} redirects")


def decode_data_url(url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    """The bytes of a base64 data: URL, refused before decoding when they would exceed MAX_IMAGE_BYTES."""
    header, sep, payload = url[5:].partition(",")
    media_type, _, encoding = header.rpartition(";")
    if not sep or encoding.lower() != "base64":
        raise MediaFetchError("a data: URL must be base64: data:image/png;base64,<data>")
    if len(payload) * 3 // 4 > policy.max_bytes:
        raise MediaFetchError(f"the data is about {len(payload) * 3 // 4:,} bytes, over MAX_IMAGE_BYTES={policy.max_bytes:,}")
    try:
        return base64.b64decode(payload, validate=True), media_type.partition(";")[0]
    except (binascii.Error, ValueError):
        raise MediaFetchError("the data: URL is not valid base64") from None


def check_image(data: bytes, policy: FetchPolicy, content_type: str = "") -> None:
    """Refuse bytes that are not an image, or an image of more than MAX_IMAGE_PIXELS (header only, no decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise MediaFetchError(f"the image has more than MAX_IMAGE_PIXELS={policy.max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        shown = f" ({content_type})" if content_type else ""
        raise MediaFetchError(f"the content{shown} is not an image PIL can read (PNG, JPEG, WebP, GIF, ...)") from None
    if width * height > policy.max_pixels:
        raise MediaFetchError(
            f"the image is {width}x{height} = {width * height:,} pixels, over MAX_IMAGE_PIXELS={policy.max_pixels:,}"
        )


def fetch_image(url: str, policy: FetchPolicy) -> bytes:
    """fetch_bytes, then check_image."""
    data, content_type = fetch_bytes(url, policy)
    check_image(data, policy, content_type)
    return data


def _checked_url(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise MediaFetchError(f"not a valid URL ({error})") from None
    if target.scheme not in ("http", "https"):
        raise MediaFetchError(
            f"{target.scheme or 'scheme-less'} URLs are not fetched: use an https:// URL or a base64 data: URL"
        )
    if not target.host:
        raise MediaFetchError("the URL has no host")
    return target


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_global and not ip.is_multicast


def _public_address(target: httpx.URL, policy: FetchPolicy, deadline: float) -> str:
    """An address of the URL's host to connect to; every address it resolves to must be public unless allowed."""
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise MediaFetchError(f"the host {host} cannot be resolved ({error})") from None
    if time.monotonic() > deadline:
        raise MediaFetchError(f"resolving {host} took longer than MEDIA_FETCH_TIMEOUT_S={policy.timeout_s:g} s")
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if host.lower() not in policy.allowed_hosts:
        for address in addresses:
            if not is_public_address(address):
                raise MediaFetchError(
                    f"the host {host} resolves to {address}, a private, loopback, link-local or reserved address; "
                    "such URLs are refused (an endpoint owner may allow a host with MEDIA_ALLOWED_HOSTS)"
                )
    return addresses[0]


def _get(
    client: httpx.Client, target: httpx.URL, address: str, policy: FetchPolicy, deadline: float
) -> tuple[bytes, str] | str:
    """GET `target` from `address`: the body and content type, or the next URL of a redirect."""
    pinned = target.copy_with(host=address)
    headers = {"Host": target.netloc.decode("ascii"), "Accept": "image/*,*/*;q=0.5"}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    remaining = max(0.001, deadline - time.monotonic())
    request = client.build_request("GET", pinned, headers=headers, extensions=extensions, timeout=remaining)
    response = client.send(request, stream=True)
    try:
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                raise MediaFetchError(f"the server answered {response.status_code} without a Location")
            return str(target.join(location))
        if response.status_code != 200:
            raise MediaFetchError(f"the server answered HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise MediaFetchError(f"the body is {int(declared):,} bytes, over MAX_IMAGE_BYTES={policy.max_bytes:,}")
        body = bytearray()
        for chunk in response.iter_bytes(_CHUNK):
            body += chunk
            if len(body) > policy.max_bytes:
                raise MediaFetchError(f"the body is over MAX_IMAGE_BYTES={policy.max_bytes:,} bytes")
            if time.monotonic() > deadline:
                raise MediaFetchError(f"the download took longer than MEDIA_FETCH_TIMEOUT_S={policy.timeout_s:g} s")
        return bytes(body), response.headers.get("content-type", "").partition(";")[0].strip()
    finally:
        response.close()
