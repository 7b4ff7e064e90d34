"""A model's config.json, read from a local folder, a config.json path, or the hub (that file alone), so a
plan can be made before any weights are downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.model_files.hub import describe_hub_error


class ModelConfigError(ValueError):
    """The model's config.json cannot be read; the message says why and what to do."""


class ModelConfigUnavailable(ModelConfigError):
    """config.json is only on the hub and the hub cannot be reached now (offline, network, hub down): a passing
    condition, not a wrong model or token."""


def read_model_config(
    model: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """config.json of `model`: a local folder, a path to a config.json, or a Hugging Face hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _load_json(path / "config.json", model)
    if path.is_file():
        return _load_json(path, model)
    if model.startswith(("/", "./", "../", "~")) or model.endswith(".json"):
        raise ModelConfigError(f"MODEL_NAME={model!r}: no such folder or file on this machine.")
    return _load_json(Path(_download_config(model, revision, token, cache_dir)), model)


def _download_config(model: str, revision: str | None, token: str | None, cache_dir: str | None) -> str:
    # Imported here: huggingface_hub is only needed for hub ids, and the planner must import cheaply.
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(model, "config.json", revision=revision, token=token, cache_dir=cache_dir)
    except (EntryNotFoundError, HFValidationError, OSError) as error:  # OSError: network and HTTP errors
        if isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError):
            where = f"MODEL_NAME={model!r}" + (f" (MODEL_REVISION={revision!r})" if revision else "")
            raise ModelConfigError(f"{where} has no config.json: is it a transformers model repo?") from None
        # The same words as a failed download, so one problem reads the same everywhere.
        message = describe_hub_error(
            error, model, revision, Path(cache_dir or constants.HF_HUB_CACHE), has_token=bool(token)
        )
        wrong = isinstance(error, (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError))
        raise (ModelConfigError if wrong else ModelConfigUnavailable)(message) from None


def _load_json(path: Path, model: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelConfigError(
            f"MODEL_NAME={model!r}: {path} does not exist (a model folder needs config.json)."
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelConfigError(f"MODEL_NAME={model!r}: cannot read {path} ({error}).") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"MODEL_NAME={model!r}: {path} is not a JSON object.")
    return config


