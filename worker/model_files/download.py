"""Model files: where vLLM loads MODEL_NAME from, downloading it first when needed.

`ensure_model(settings)` returns a local folder, in this order:
  1. MODEL_NAME is a local folder (it must hold config.json): used as is.
  2. The image has the model baked in (`python -m worker.model_files.download --bake` at build time wrote
     BAKED_MODEL_DIR/manifest.json for this MODEL_NAME and revision): that copy, no network.
  3. Otherwise huggingface_hub's snapshot_download into the cache: MODEL_CACHE_DIR if set, else
     /runpod-volume/huggingface-cache/hub when a network volume is mounted (workers share it), else
     the Hugging Face default (container disk). HF_HUB_OFFLINE=1 means the cache only.
Hub failures (gated, missing, bad revision, bad token, offline and not cached) become one
ModelDownloadError that names the model and what to do; the token never appears in it.

    python -m worker.model_files.download           # fetch MODEL_NAME into the cache, print the folder
    python -m worker.model_files.download --bake    # image build: fetch into BAKED_MODEL_DIR (token from a secret file)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from config.errors import SettingsError
from config.settings import WorkerSettings, load_settings
from worker.model_files.hub import describe_hub_error, looks_local, redact

log = logging.getLogger(__name__)

# Where RunPod mounts an endpoint's network volume (NETWORK_VOLUME_PATH overrides it): network_volume_root.
VOLUME_ROOT = Path("/runpod-volume")
# The same layout RunPod's cached models use, so a model cached by the platform is found too.
VOLUME_CACHE_SUBDIR = Path("huggingface-cache/hub")
# Written at image build time by `--bake`: hub/ (a Hugging Face cache) and manifest.json.
BAKED_MODEL_DIR = Path("/opt/worker/baked-model")
TOKEN_SECRET_FILE = Path("/run/secrets/hf_token")
PROGRESS_LOG_INTERVAL_S = 30.0
# vLLM's weight formats in the order its loader tries them (default_loader.py: *.safetensors, *.bin, then the
# *.pt fallback); it loads only the first one present, so the others are not downloaded.
WEIGHT_FORMATS = ("*.safetensors", "*.bin", "*.pt")
# Never loaded by vLLM: Meta's original/ checkpoint (vLLM's own LoadConfig.ignore_patterns skips it; it doubles
# a Llama download), *.pth, and other frameworks' weights.
NEVER_LOADED = ("original/*", "*.pth", "*.h5", "*.msgpack", "*.ot", "*.tflite", "onnx/*")


class ModelDownloadError(RuntimeError):
    """The model could not be found or fetched; the message says which model and what to do."""


def ensure_model(
    settings: WorkerSettings,
    *,
    baked_dir: Path | None = None,
    volume_root: Path | None = None,
) -> str:
    """The local folder vLLM should load for settings.model_name (downloading it if needed)."""
    baked_dir = BAKED_MODEL_DIR if baked_dir is None else baked_dir
    name = settings.model_name
    if looks_local(name):
        _check_model_folder(name)
        log.info("model %s: local folder", name)
        return name
    revision = settings.model_revision or None
    token = settings.hub_token
    baked = find_baked_model(name, revision, baked_dir)
    if baked is not None:
        log.info("model %s: using the copy baked into the image at %s", name, baked)
        return baked
    return download_model(name, revision=revision, token=token, cache_dir=model_cache_dir(settings, volume_root))


def find_local_model(
    settings: WorkerSettings,
    *,
    baked_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> str | None:
    """Where ensure_model would find the model without the network (local folder, baked copy, cache), else None.

    A local MODEL_NAME is returned unchecked: reading config.json from it reports what is wrong.
    cache_dir: the model_cache_dir the caller already chose (default: choose it here).
    """
    name = settings.model_name
    if looks_local(name):
        return name
    revision = settings.model_revision or None
    baked = find_baked_model(name, revision, BAKED_MODEL_DIR if baked_dir is None else baked_dir)
    if baked is not None:
        return baked
    return find_cached_model(name, revision, model_cache_dir(settings) if cache_dir is None else cache_dir)


def find_cached_model(name: str, revision: str | None, cache_dir: Path) -> str | None:
    """The complete cached snapshot of name/revision in cache_dir, else None; no network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=True,
            ignore_patterns=cached_ignore_patterns(name, revision, cache_dir),
        )
    except (LocalEntryNotFoundError, ValueError):  # not cached, incomplete, or not a repo id
        return None


def network_volume_root(settings: WorkerSettings) -> Path:
    """Where the network volume is mounted, if there is one: the model cache and the compile cache both use it."""
    return Path(settings.network_volume_path) if settings.network_volume_path else VOLUME_ROOT


def model_cache_dir(settings: WorkerSettings, volume_root: Path | None = None) -> Path:
    """Where hub models are cached: MODEL_CACHE_DIR, else the network volume, else the HF default."""
    from huggingface_hub import constants

    volume_root = network_volume_root(settings) if volume_root is None else volume_root

    if settings.model_cache_dir:
        path = Path(settings.model_cache_dir).expanduser()
        _make_writable_dir(path, f"MODEL_CACHE_DIR={settings.model_cache_dir}")
        return path
    if volume_root.is_dir():
        path = volume_root / VOLUME_CACHE_SUBDIR
        try:
            _make_writable_dir(path, str(path))
            return path
        except ModelDownloadError as error:
            # e.g. a non-root image on a root-owned volume: still start, from the container disk.
            log.warning("%s; caching the model on the container disk instead", error)
    return Path(constants.HF_HUB_CACHE)


def find_baked_model(name: str, revision: str | None, baked_dir: Path = BAKED_MODEL_DIR) -> str | None:
    """The baked snapshot folder when the image was built with this model (and revision), else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        manifest = json.loads((baked_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("model_name") != name:
        log.info("model %s: the image has %s baked in, not this model", name, manifest.get("model_name"))
        return None
    if revision is not None and revision not in (manifest.get("revision"), manifest.get("commit")):
        log.info("model %s: the baked copy is revision %s, not %s", name, manifest.get("revision"), revision)
        return None
    try:
        commit = manifest["commit"]
        return snapshot_download(
            name,
            revision=commit,
            cache_dir=baked_dir / "hub",
            local_files_only=True,
            # The bake downloaded with this filter: without it the cached listing reports the skipped files missing.
            ignore_patterns=cached_ignore_patterns(name, commit, baked_dir / "hub"),
        )
    except (LocalEntryNotFoundError, KeyError) as error:
        log.warning("model %s: the baked copy in %s is unusable (%s)", name, baked_dir, type(error).__name__)
        return None


def download_model(name: str, *, revision: str | None, token: str | None, cache_dir: Path) -> str:
    """snapshot_download with progress in the logs and hub errors turned into ModelDownloadError."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    offline = constants.is_offline_mode()
    what = f"{name} (revision {revision or 'main'})"
    log.info(
        "model %s: %s %s",
        what,
        "looking up the cache (HF_HUB_OFFLINE is set) in" if offline else "downloading (or checking the cache) into",
        cache_dir,
    )
    ignore = repo_ignore_patterns(name, revision=revision, token=token, cache_dir=cache_dir, offline=offline)
    started = time.monotonic()
    try:
        with _ProgressLog(what, cache_dir / _repo_folder(repo_folder_name, name)):
            path = snapshot_download(
                name,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=offline,
                ignore_patterns=ignore,
            )
    except Exception as error:  # every hub, network and disk failure ends here
        raise ModelDownloadError(
            redact(describe_hub_error(error, name, revision, cache_dir, has_token=bool(token)), token)
        ) from None
    log.info("model %s: ready at %s (%.1f s)", what, path, time.monotonic() - started)
    return path


def weight_ignore_patterns(repo_files: list[str]) -> list[str]:
    """snapshot_download ignore_patterns that keep one weight format (the one vLLM would load) and skip what
    vLLM never loads; configs, tokenizers, chat templates and remote code are kept."""
    # vLLM loads weights from the repo's top level only: choose there, and filter nothing if none is there.
    loadable = [path for path in repo_files if "/" not in path]
    chosen = next((fmt for fmt in WEIGHT_FORMATS if fnmatch.filter(loadable, fmt)), None)
    others = [fmt for fmt in WEIGHT_FORMATS if chosen is not None and fmt != chosen]
    return [*NEVER_LOADED, *others]


def repo_ignore_patterns(
    name: str, *, revision: str | None, token: str | None, cache_dir: Path, offline: bool
) -> list[str] | None:
    """weight_ignore_patterns for the repo: from the hub's file list, else the cached one; None if neither."""
    if not offline:
        try:
            from huggingface_hub import HfApi

            return weight_ignore_patterns(HfApi().list_repo_files(name, revision=revision, token=token))
        except Exception as error:  # snapshot_download meets the same problem and reports it properly
            log.info("model %s: cannot list its files (%s); using the cached list if any", name, type(error).__name__)
    return cached_ignore_patterns(name, revision, cache_dir)


def cached_ignore_patterns(name: str, revision: str | None, cache_dir: Path) -> list[str] | None:
    """weight_ignore_patterns from the file list an earlier download cached (huggingface_hub >= 2.4), else None.

    The offline look-up must use the download's patterns: it checks the snapshot against the cached list.
    """
    try:
        from huggingface_hub import get_cached_repo_tree
    except ImportError:  # older huggingface_hub: no cached list, and no completeness check either
        return None
    try:
        files = get_cached_repo_tree(name, revision=revision, cache_dir=cache_dir)
    except Exception:  # nothing cached for this revision, or not a repo id
        return None
    return weight_ignore_patterns([entry.path for entry in files])


def _check_model_folder(name: str) -> None:
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelDownloadError(
            f"MODEL_NAME={name!r} looks like a local path but there is no such folder: give an existing model "
            "folder (with config.json and the weights) or a Hugging Face repo id (org/name)."
        )
    # params.json: vLLM's Mistral-format checkpoints carry it instead of config.json.
    if not (path / "config.json").is_file() and not (path / "params.json").is_file():
        raise ModelDownloadError(
            f"MODEL_NAME={name!r} is a folder without config.json, so it is not a Hugging Face model folder: "
            "point it at the folder that holds config.json, the tokenizer files and the weights."
        )


def _make_writable_dir(path: Path, label: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelDownloadError(f"cannot create the model cache folder {label}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ModelDownloadError(f"the model cache folder {label} is not writable by this user (uid {os.getuid()})")


def _repo_folder(repo_folder_name, name: str) -> str:
    try:
        return repo_folder_name(repo_id=name, repo_type="model")
    except Exception:  # an invalid id: snapshot_download reports it properly
        return "invalid-repo-id"


class _ProgressLog:
    """Logs the bytes on disk for the model every PROGRESS_LOG_INTERVAL_S (tqdm bars are unreadable in log viewers)."""

    def __init__(self, what: str, folder: Path, interval_s: float = PROGRESS_LOG_INTERVAL_S) -> None:
        self.what, self.folder, self.interval_s = what, folder, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-download-progress", daemon=True)

    def __enter__(self) -> "_ProgressLog":
        self._start_bytes = _folder_bytes(self.folder)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            size = _folder_bytes(self.folder)
            elapsed = time.monotonic() - self._started
            rate = (size - self._start_bytes) / elapsed / 2**20 if elapsed else 0.0
            log.info("model %s: %.2f GiB on disk, %.0f MiB/s, %.0f s so far", self.what, size / 2**30, rate, elapsed)


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for file in files:
            try:
                stat = os.lstat(os.path.join(root, file))
            except OSError:
                continue  # renamed from .incomplete meanwhile
            if not os.path.islink(os.path.join(root, file)):
                total += stat.st_size
    return total


# --- command line ---------------------------------------------------------------------------------


def bake(settings: WorkerSettings, baked_dir: Path = BAKED_MODEL_DIR) -> str:
    """Image build: download settings.model_name into baked_dir/hub and record it in manifest.json."""
    if looks_local(settings.model_name):
        raise ModelDownloadError(
            f"MODEL_NAME={settings.model_name!r} is a local path; --bake takes a Hugging Face repo id "
            "(COPY a local model into the image yourself and set MODEL_NAME to its folder)."
        )
    revision = settings.model_revision or None
    path = download_model(
        settings.model_name, revision=revision, token=settings.hub_token, cache_dir=baked_dir / "hub"
    )
    manifest = {"model_name": settings.model_name, "revision": revision, "commit": Path(path).name}
    (baked_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("baked %s into %s", manifest, baked_dir)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.model_files.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bake", action="store_true", help=f"download into {BAKED_MODEL_DIR} (image build)")
    parser.add_argument("--baked-dir", type=Path, default=BAKED_MODEL_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--token-file", type=Path, default=TOKEN_SECRET_FILE, help="HF token file (a BuildKit secret)"
    )
    args = parser.parse_args(argv)

    from worker.logs import configure_logging

    configure_logging()
    overrides: dict[str, object] = {}
    if args.token_file.is_file():
        overrides["hf_token"] = args.token_file.read_text().strip() or None
    try:
        settings = load_settings(**overrides)
        path = bake(settings, args.baked_dir) if args.bake else ensure_model(settings)
    except (SettingsError, ModelDownloadError) as error:
        log.error("%s", error)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
