"""The Hugging Face Hub as the worker sees it: whether a name is a local path, and one description of every
hub failure (gated, missing, bad revision, bad token, offline, down, disk full) used by the download, the
config.json read and the fitness check alike, so the same problem always reads the same way.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from config.secrets import MASK


def describe_hub_error(
    error: BaseException, name: str, revision: str | None, cache_dir: Path, *, has_token: bool
) -> str:
    """A message for the user: which model, what went wrong, what to do. Built from our own words only."""
    causes = _causes(error)
    http = next((e for e in causes if isinstance(e, _hub_errors()["HfHubHTTPError"])), None)
    status = getattr(getattr(http, "response", None), "status_code", None)
    fields = {"name": name, "url": f"https://huggingface.co/{name}", "revision": revision, "cache_dir": cache_dir,
              "status": status or "an error", "main": revision or "main"}
    for case in _HUB_CASES:
        if case.matches(causes, status):
            message = case.with_token if has_token and case.with_token else case.message
            return message.format(**fields)
    return f"Downloading model {name} into {cache_dir} failed: {type(error).__name__}: {error}"


@dataclass(frozen=True)
class _HubCase:
    matches: Callable[[list[BaseException], int | None], bool]  # (the error's causes, the HTTP status)
    message: str  # str.format fields: name, url, revision, cache_dir, status, main (the revision or "main")
    with_token: str = ""  # the message when HF_TOKEN is set, where it differs


@cache
def _hub_errors() -> dict[str, type]:
    # huggingface_hub only when a hub error is described: the plan CLI and the bake layer import this module.
    from huggingface_hub import errors

    return {name: getattr(errors, name) for name in (
        "DisabledRepoError", "GatedRepoError", "HfHubHTTPError", "HFValidationError", "IncompleteSnapshotError",
        "LocalEntryNotFoundError", "OfflineModeIsEnabled", "RepositoryNotFoundError", "RevisionNotFoundError",
    )}


def _cause(kind: str) -> Callable[[list[BaseException], int | None], bool]:
    return lambda causes, _status: any(isinstance(e, _hub_errors()[kind]) for e in causes)


def _status(code: int) -> Callable[[list[BaseException], int | None], bool]:
    return lambda _causes, status: status == code


def _offline_miss(causes: list[BaseException], status: int | None) -> bool:
    return _cause("OfflineModeIsEnabled")(causes, status) or (_cause("LocalEntryNotFoundError")(causes, status) and _offline())


def _disk_full(causes: list[BaseException], _status: int | None) -> bool:
    return any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in causes)


# In order: the first case that matches describes the error.
_HUB_CASES = (
    _HubCase(
        _cause("GatedRepoError"),
        "Model {name} is gated: accept its license at {url}, then set HF_TOKEN to a token of that account "
        "(https://huggingface.co/settings/tokens, read access).",
        with_token="Model {name} is gated and the HF_TOKEN given has no access to it: accept its license at "
        "{url} while logged in as the token's owner (approval can take a while), or use a token of an account "
        "that has access.",
    ),
    _HubCase(
        _cause("RevisionNotFoundError"),
        "Model {name} has no revision {revision!r}: set MODEL_REVISION to an existing branch, tag or commit "
        "(see {url}/tree/main), or leave it unset for the main branch.",
    ),
    _HubCase(_cause("DisabledRepoError"), "Model {name} has been disabled on the Hugging Face Hub: choose another MODEL_NAME."),
    _HubCase(
        _cause("RepositoryNotFoundError"),
        "Model {name} was not found on the Hugging Face Hub, or it is private or gated and HF_TOKEN is not set. "
        "Check MODEL_NAME (org/name, as in {url}); for a private or gated model set HF_TOKEN to a token with "
        "read access.",
        with_token="Model {name} was not found on the Hugging Face Hub, or the HF_TOKEN given has no access to "
        "it. Check MODEL_NAME (org/name, as in {url}); for a private or gated model set HF_TOKEN to a token "
        "with read access.",
    ),
    _HubCase(
        _status(401),
        "The Hugging Face Hub rejected HF_TOKEN while fetching model {name} (invalid or expired): create a "
        "new token at https://huggingface.co/settings/tokens and set HF_TOKEN to it.",
    ),
    _HubCase(
        _status(403),
        "HF_TOKEN may not read model {name} (403 Forbidden): use a token with read access; a fine-grained "
        "token needs 'Read access to contents of all public gated repos you can access' or this repo.",
    ),
    _HubCase(
        _cause("IncompleteSnapshotError"),
        "The cached copy of model {name} in {cache_dir} is incomplete and the Hugging Face Hub cannot be "
        "reached to finish it: unset HF_HUB_OFFLINE or restore network access, or delete that copy.",
    ),
    _HubCase(
        _offline_miss,
        "Model {name} (revision {main}) is not in the cache at {cache_dir}, and HF_HUB_OFFLINE=1 "
        "forbids downloading it: unset HF_HUB_OFFLINE, bake the model into the image (build arg MODEL_NAME), "
        "or point MODEL_CACHE_DIR at a cache that holds it.",
    ),
    _HubCase(
        _cause("LocalEntryNotFoundError"),
        "Could not reach the Hugging Face Hub to download model {name}, and it is not in the cache at "
        "{cache_dir}: check the worker's network access (and HF_ENDPOINT, if set), then retry.",
    ),
    _HubCase(
        _cause("HfHubHTTPError"),
        "The Hugging Face Hub answered {status} while downloading model {name}: "
        "it may be down or rate-limiting; retry later.",
    ),
    _HubCase(
        _cause("HFValidationError"),
        "MODEL_NAME={name!r} is neither a local folder nor a valid Hugging Face repo id: use org/name as in "
        "https://huggingface.co/org/name, or the path of a folder that holds config.json.",
    ),
    _HubCase(
        _disk_full,
        "Out of disk space while downloading model {name} into {cache_dir}: give the endpoint a larger "
        "container disk or network volume, or choose a smaller model.",
    ),
)


def looks_local(name: str) -> bool:
    """A path on this machine (it exists, or is written as one), not a hub repo id."""
    path = Path(name).expanduser()
    return path.exists() or name.startswith(("/", "./", "../", "~", "."))


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def redact(message: str, token: str | None) -> str:
    return message.replace(token, MASK) if token else message
