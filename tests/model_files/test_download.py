"""worker/model_files/download.py on huggingface_hub's real functions: local folders, hand-made offline caches,
and a small local stand-in for the Hub's HTTP API (gated, missing, bad revision, bad token, a real
download). The Hugging Face Hub itself is never contacted.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects

from config.settings import load_settings
from tests.helpers.fake_hub import (
    COMMIT,
    FILES,
    LLAMA_FILES,
    REPO,
    TOKEN,
    FakeHub,
    fake_cache,
)
from worker.model_files import download
from worker.model_files.download import (
    ModelDownloadError,
    ensure_model,
    weight_ignore_patterns,
)


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path, monkeypatch):
    """Offline, with an empty default cache and no network volume, unless a test says otherwise."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(download, "VOLUME_ROOT", tmp_path / "no-volume")
    monkeypatch.setattr(download, "BAKED_MODEL_DIR", tmp_path / "no-baked-model")
    monkeypatch.delenv("HF_TOKEN", raising=False)


def settings(**overrides):
    return load_settings(**overrides)


def call(setting_overrides: dict, **kwargs) -> str:
    return ensure_model(settings(**setting_overrides), **kwargs)


# --- local folders -----------------------------------------------------------------------------


def test_local_folder_is_returned_as_is(tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert call({"model_name": str(model)}) == str(model)


def test_local_folder_without_config_json_is_refused(tmp_path):
    model = tmp_path / "weights-only"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelDownloadError, match="without config.json") as raised:
        call({"model_name": str(model)})
    assert str(model) in str(raised.value)


def test_missing_local_path_is_refused_without_going_to_the_hub(tmp_path):
    with pytest.raises(ModelDownloadError, match="no such folder"):
        call({"model_name": str(tmp_path / "not-there")})


# --- the cache, offline ------------------------------------------------------------------------


def test_offline_cache_hit_in_model_cache_dir(tmp_path):
    snapshot = fake_cache(tmp_path / "cache")
    path = call({"model_name": REPO, "model_cache_dir": str(tmp_path / "cache")})
    assert Path(path) == snapshot
    assert (Path(path) / "config.json").is_file()


def test_offline_cache_hit_by_commit_revision(tmp_path):
    snapshot = fake_cache(tmp_path / "cache", ref=None)
    path = call({"model_name": REPO, "model_revision": COMMIT, "model_cache_dir": str(tmp_path / "cache")})
    assert Path(path) == snapshot


def test_network_volume_is_the_default_cache(tmp_path, monkeypatch):
    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    monkeypatch.setattr(download, "VOLUME_ROOT", volume)
    snapshot = fake_cache(volume / "huggingface-cache" / "hub")
    assert download.model_cache_dir(settings(model_name=REPO), volume) == volume / "huggingface-cache" / "hub"
    assert Path(call({"model_name": REPO}, volume_root=volume)) == snapshot


def test_without_volume_or_setting_the_hf_default_cache_is_used(tmp_path):
    snapshot = fake_cache(tmp_path / "default-cache")
    assert download.model_cache_dir(settings(model_name=REPO), tmp_path / "no-volume") == tmp_path / "default-cache"
    assert Path(call({"model_name": REPO}, volume_root=tmp_path / "no-volume")) == snapshot


def test_model_cache_dir_wins_over_the_volume(tmp_path):
    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    chosen = download.model_cache_dir(settings(model_name=REPO, model_cache_dir=str(tmp_path / "mine")), volume)
    assert chosen == tmp_path / "mine" and chosen.is_dir()


def test_offline_and_not_cached_names_the_model_and_the_way_out(tmp_path):
    with pytest.raises(ModelDownloadError) as raised:
        call({"model_name": REPO, "model_cache_dir": str(tmp_path / "empty"), "hf_token": TOKEN})
    message = str(raised.value)
    assert REPO in message and "HF_HUB_OFFLINE" in message and str(tmp_path / "empty") in message
    assert TOKEN not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_offline_other_revision_is_not_cached(tmp_path):
    fake_cache(tmp_path / "cache")
    with pytest.raises(ModelDownloadError, match="revision v2"):
        call({"model_name": REPO, "model_revision": "v2", "model_cache_dir": str(tmp_path / "cache")})


def test_invalid_repo_id(tmp_path):
    with pytest.raises(ModelDownloadError, match="valid Hugging Face repo id"):
        call({"model_name": "not a/valid--id!", "model_cache_dir": str(tmp_path / "cache")})


# --- baked into the image ------------------------------------------------------------------------


def bake_offline(baked: Path, revision: str | None = None) -> Path:
    snapshot = fake_cache(baked / "hub")
    manifest = {"model_name": REPO, "revision": revision, "commit": COMMIT}
    (baked / "manifest.json").write_text(json.dumps(manifest))
    return snapshot


def test_baked_copy_is_used_without_network(tmp_path):
    snapshot = bake_offline(tmp_path / "baked")
    assert Path(call({"model_name": REPO}, baked_dir=tmp_path / "baked")) == snapshot
    assert Path(call({"model_name": REPO, "model_revision": COMMIT}, baked_dir=tmp_path / "baked")) == snapshot


def test_baked_copy_of_another_model_or_revision_is_ignored(tmp_path):
    bake_offline(tmp_path / "baked", revision="v1")
    fake_cache(tmp_path / "cache", repo="other/model")
    other = call({"model_name": "other/model", "model_cache_dir": str(tmp_path / "cache")}, baked_dir=tmp_path / "baked")
    assert "models--other--model" in other
    with pytest.raises(ModelDownloadError, match="HF_HUB_OFFLINE"):
        call({"model_name": REPO, "model_revision": "v2", "model_cache_dir": str(tmp_path / "c")}, baked_dir=tmp_path / "baked")


# --- a local stand-in for the Hub's HTTP API ------------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    yield server
    server.shutdown()
    server.server_close()


def test_download_into_the_cache_for_real(hub, tmp_path):
    path = Path(call({"model_name": REPO, "model_cache_dir": str(tmp_path / "cache"), "hf_token": TOKEN}))
    assert path == tmp_path / "cache" / "models--acme--tiny-model" / "snapshots" / COMMIT
    assert (path / "config.json").read_bytes() == FILES["config.json"]
    assert f"Bearer {TOKEN}" in hub.authorizations


@pytest.mark.parametrize(
    ("mode", "token", "expected"),
    [
        ("gated", None, "is gated: accept its license"),
        ("gated", TOKEN, "HF_TOKEN given has no access"),
        ("missing", None, "HF_TOKEN is not set"),
        ("missing", TOKEN, "Check MODEL_NAME"),
        ("revision", TOKEN, "has no revision 'v9'"),
        ("bad-token", TOKEN, "rejected HF_TOKEN"),
        ("forbidden", TOKEN, "403 Forbidden"),
        ("down", TOKEN, "retry"),
    ],
)
def test_hub_errors_become_clear_messages(hub, tmp_path, mode, token, expected):
    hub.mode = mode
    overrides = {"model_name": REPO, "model_cache_dir": str(tmp_path / "cache"), "hf_token": token}
    if mode == "revision":
        overrides["model_revision"] = "v9"
    with pytest.raises(ModelDownloadError) as raised:
        call(overrides)
    message = str(raised.value)
    assert expected in message and REPO in message
    assert TOKEN not in message and "Traceback" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_token_never_reaches_the_logs(hub, tmp_path, caplog):
    hub.mode = "gated"
    caplog.set_level("DEBUG")
    with pytest.raises(ModelDownloadError):
        call({"model_name": REPO, "model_cache_dir": str(tmp_path / "cache"), "hf_token": TOKEN})
    assert TOKEN not in caplog.text


# --- one weight format, as vLLM loads ----------------------------------------------------------


def kept(files: list[str]) -> set[str]:
    """The files snapshot_download fetches with our patterns (huggingface_hub's own filter)."""
    return set(filter_repo_objects(files, ignore_patterns=weight_ignore_patterns(files)))


def test_llama_3_70b_skips_the_original_checkpoint():
    shards = [f"model-{i:05d}-of-00030.safetensors" for i in range(1, 31)]
    original = [f"original/consolidated.{i:02d}.pth" for i in range(8)] + ["original/params.json",
                                                                          "original/tokenizer.model"]
    others = ["config.json", "generation_config.json", "model.safetensors.index.json", "special_tokens_map.json",
              "tokenizer.json", "tokenizer_config.json", "LICENSE", "README.md", "USE_POLICY.md", ".gitattributes"]
    assert kept(shards + original + others) == set(shards + others)


def test_bin_only_repo_keeps_its_bin_weights():
    files = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
             "pytorch_model.bin.index.json", "tokenizer.model", "tokenizer_config.json", "modeling_custom.py"]
    assert kept(files) == set(files)


def test_safetensors_win_over_bin_and_other_frameworks():
    weights = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    keep = weights + ["config.json", "model.safetensors.index.json", "tokenizer.tiktoken", "chat_template.jinja",
                      "configuration_custom.py", "spiece.model"]
    dropped = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
               "training_args.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot", "onnx/model.onnx",
               "consolidated.00.pth"]
    assert kept(keep + dropped) == set(keep) | {"pytorch_model.bin.index.json"}


def test_pt_only_repo_keeps_its_pt_weights():
    files = ["config.json", "model.pt"]
    assert kept(files) == set(files)


def test_download_fetches_one_weight_format_then_finds_it_offline(hub, tmp_path, monkeypatch):
    hub.files = LLAMA_FILES
    cache = tmp_path / "cache"
    path = Path(call({"model_name": REPO, "model_cache_dir": str(cache), "hf_token": TOKEN}))
    on_disk = {str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()}
    assert on_disk == {name for name in LLAMA_FILES if not name.startswith("original/")}

    # Offline, huggingface_hub checks the snapshot against the cached file list: the same filter must apply.
    hub.mode = "down"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert Path(call({"model_name": REPO, "model_cache_dir": str(cache)})) == path
    assert download.find_local_model(settings(model_name=REPO, model_cache_dir=str(cache))) == str(path)


def test_bake_fetches_one_weight_format_and_the_worker_uses_it(hub, tmp_path, monkeypatch):
    hub.files = LLAMA_FILES
    monkeypatch.setenv("MODEL_NAME", REPO)
    assert download.main(["--bake", "--baked-dir", str(tmp_path / "baked"), "--token-file", str(tmp_path / "none")]) == 0
    snapshot = tmp_path / "baked" / "hub" / "models--acme--tiny-model" / "snapshots" / COMMIT
    assert not (snapshot / "original").exists() and (snapshot / "model-00001-of-00002.safetensors").is_file()

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert Path(call({"model_name": REPO}, baked_dir=tmp_path / "baked")) == snapshot


def test_find_local_model_without_network(tmp_path):
    assert download.find_local_model(settings(model_name=str(tmp_path))) == str(tmp_path)
    snapshot = bake_offline(tmp_path / "baked")
    assert Path(download.find_local_model(settings(model_name=REPO), baked_dir=tmp_path / "baked")) == snapshot
    assert download.find_local_model(settings(model_name=REPO, model_cache_dir=str(tmp_path / "empty"))) is None


# --- the build-time entry point ------------------------------------------------------------------


def test_bake_then_the_worker_uses_the_baked_copy_offline(hub, tmp_path, monkeypatch, capsys):
    secret = tmp_path / "hf_token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("MODEL_NAME", REPO)
    rc = download.main(["--bake", "--baked-dir", str(tmp_path / "baked"), "--token-file", str(secret)])
    assert rc == 0
    assert f"Bearer {TOKEN}" in hub.authorizations
    manifest = json.loads((tmp_path / "baked" / "manifest.json").read_text())
    assert manifest == {"model_name": REPO, "revision": None, "commit": COMMIT}
    assert TOKEN not in json.dumps(manifest) + capsys.readouterr().out

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.mode = "down"
    path = call({"model_name": REPO}, baked_dir=tmp_path / "baked")
    assert Path(path) == tmp_path / "baked" / "hub" / "models--acme--tiny-model" / "snapshots" / COMMIT


def test_bake_failure_exits_1_with_the_message(hub, tmp_path, monkeypatch, caplog):
    hub.mode = "gated"
    monkeypatch.setenv("MODEL_NAME", REPO)
    rc = download.main(["--bake", "--baked-dir", str(tmp_path / "baked"), "--token-file", str(tmp_path / "none")])
    assert rc == 1
    assert "is gated" in caplog.text


def test_download_progress_is_logged(tmp_path, caplog):
    folder = tmp_path / "models--acme--tiny-model" / "blobs"
    folder.mkdir(parents=True)
    (folder / "abc.incomplete").write_bytes(b"\x00" * 2048)
    caplog.set_level("INFO", logger="worker.model_files.download")
    with download._ProgressLog("acme/tiny-model", folder.parent, interval_s=0.01):
        (folder / "def.incomplete").write_bytes(b"\x00" * 2048)
        deadline = time.monotonic() + 5
        while "on disk" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "model acme/tiny-model: 0.00 GiB on disk" in caplog.text


def test_weights_only_in_a_subfolder_are_not_filtered_away():
    # vLLM loads the top level only; a repo whose top level has no weights keeps every format.
    files = ["config.json", "tokenizer.json", "fp16/model.safetensors", "legacy/pytorch_model.bin"]
    assert kept(files) == set(files)
