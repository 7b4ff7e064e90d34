"""The Hugging Face Hub as the worker sees it: whether a name is a local path, and one description of every
hub failure (gated, missing, bad revision, bad token, offline, down, disk full) used by the download, the
config.json read and the fitness check alike, so the same problem always reads the same way.
"""

from __future__ import annotations

import errno
from pathlib import Path


def describe_hub_error(
    error: BaseException, name: str, revision: str | None, cache_dir: Path, *, has_token: bool
) -> str:
    """A message for the user: which model, what went wrong, what to do. Built from our own words only."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = f"https://huggingface.co/{name}"
    causes = _causes(error)

    def find(kind: type) -> BaseException | None:
        return next((e for e in causes if isinstance(e, kind)), None)

    if find(GatedRepoError):
        if has_token:
            return (
                f"Model {name} is gated and the HF_TOKEN given has no access to it: accept its license at {url} "
                "while logged in as the token's owner (approval can take a while), or use a token of an account "
                "that has access."
            )
        return (
            f"Model {name} is gated: accept its license at {url}, then set HF_TOKEN to a token of that account "
            "(https://huggingface.co/settings/tokens, read access)."
        )
    if find(RevisionNotFoundError):
        return (
            f"Model {name} has no revision {revision!r}: set MODEL_REVISION to an existing branch, tag or commit "
            f"(see {url}/tree/main), or leave it unset for the main branch."
        )
    if find(DisabledRepoError):
        return f"Model {name} has been disabled on the Hugging Face Hub: choose another MODEL_NAME."
    if find(RepositoryNotFoundError):
        access = (
            "the HF_TOKEN given has no access to it"
            if has_token
            else "it is private or gated and HF_TOKEN is not set"
        )
        return (
            f"Model {name} was not found on the Hugging Face Hub, or {access}. Check MODEL_NAME (org/name, as in "
            f"{url}); for a private or gated model set HF_TOKEN to a token with read access."
        )
    http = find(HfHubHTTPError)
    status = getattr(getattr(http, "response", None), "status_code", None)
    if status == 401:
        return (
            f"The Hugging Face Hub rejected HF_TOKEN while fetching model {name} (invalid or expired): create a "
            "new token at https://huggingface.co/settings/tokens and set HF_TOKEN to it."
        )
    if status == 403:
        return (
            f"HF_TOKEN may not read model {name} (403 Forbidden): use a token with read access; a fine-grained "
            "token needs 'Read access to contents of all public gated repos you can access' or this repo."
        )
    if find(IncompleteSnapshotError):
        return (
            f"The cached copy of model {name} in {cache_dir} is incomplete and the Hugging Face Hub cannot be "
            "reached to finish it: unset HF_HUB_OFFLINE or restore network access, or delete that copy."
        )
    if find(OfflineModeIsEnabled) or (find(LocalEntryNotFoundError) and _offline()):
        return (
            f"Model {name} (revision {revision or 'main'}) is not in the cache at {cache_dir}, and HF_HUB_OFFLINE=1 "
            "forbids downloading it: unset HF_HUB_OFFLINE, bake the model into the image (build arg MODEL_NAME), "
            "or point MODEL_CACHE_DIR at a cache that holds it."
        )
    if find(LocalEntryNotFoundError):
        return (
            f"Could not reach the Hugging Face Hub to download model {name}, and it is not in the cache at "
            f"{cache_dir}: check the worker's network access (and HF_ENDPOINT, if set), then retry."
        )
    if http is not None:
        return (
            f"The Hugging Face Hub answered {status or 'an error'} while downloading model {name}: "
            "it may be down or rate-limiting; retry later."
        )
    if find(HFValidationError):
        return (
            f"MODEL_NAME={name!r} is neither a local folder nor a valid Hugging Face repo id: use org/name as in "
            "https://huggingface.co/org/name, or the path of a folder that holds config.json."
        )
    disk = next((e for e in causes if isinstance(e, OSError) and e.errno == errno.ENOSPC), None)
    if disk is not None:
        return (
            f"Out of disk space while downloading model {name} into {cache_dir}: give the endpoint a larger "
            "container disk or network volume, or choose a smaller model."
        )
    return f"Downloading model {name} into {cache_dir} failed: {type(error).__name__}: {error}"


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
    return message.replace(token, "***") if token else message
