"""The compile caches go to the network volume under a key of vLLM version, model, parallel sizes and GPU
type, follow the same volume path as the model cache, and stay in the container when turned off or when
there is no volume. (The cold-start figures come from `python -m bench cold-start`.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import vllm

from config.settings import load_settings
from worker.model_files.download import model_cache_dir
from worker.startup.compile_cache import CACHE_ENV_VARS, use_volume_compile_cache

H100 = ("NVIDIA H100 80GB HBM3",) * 4


@pytest.fixture(autouse=True)
def container_defaults(monkeypatch):
    """Each test starts with the caches where vLLM and torch put them by default; monkeypatch restores them."""
    for env_var in CACHE_ENV_VARS:
        monkeypatch.delenv(env_var, raising=False)


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "volume"
    path.mkdir()
    return path


def settings(volume, **overrides):
    return load_settings(model_name="acme/model", network_volume_path=str(volume), **overrides)


def test_caches_land_on_the_volume_under_the_key_and_the_model_cache_shares_the_volume(volume):
    folder = use_volume_compile_cache(settings(volume), 4, 1, H100)
    assert folder is not None and folder.parent == volume / "compile-cache"
    for env_var, subdir in CACHE_ENV_VARS.items():
        assert os.environ[env_var] == str(folder / subdir) and (folder / subdir).is_dir()
    key = json.loads((folder / "key.json").read_text())
    assert key["vllm"].startswith(vllm.__version__) and key["torch"] == torch.__version__
    assert key["model"] == "acme/model" and key["tensor_parallel_size"] == 4 and key["device"] == ["NVIDIA H100 80GB HBM3"]
    assert model_cache_dir(settings(volume)) == volume / "huggingface-cache" / "hub"


@pytest.mark.parametrize(
    "change",
    [
        {"tensor_parallel_size": 2},
        {"pipeline_parallel_size": 2},
        {"gpu_names": ("NVIDIA A100-SXM4-80GB",) * 4},
        {"model_name": "acme/other-model"},
        {"model_revision": "v2"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_different_model_layout_or_gpu_never_shares_a_folder(volume, change):
    base = {"tensor_parallel_size": 4, "pipeline_parallel_size": 1, "gpu_names": H100}
    first = use_volume_compile_cache(settings(volume), *base.values())
    setting_changes = {k: v for k, v in change.items() if k in ("model_name", "model_revision")}
    call = {**base, **{k: v for k, v in change.items() if k in base}}
    second = use_volume_compile_cache(
        load_settings(**{"model_name": "acme/model", "network_volume_path": str(volume), **setting_changes}), *call.values()
    )
    assert first != second and first.parent == second.parent


def test_the_same_layout_finds_the_same_folder(volume):
    assert use_volume_compile_cache(settings(volume), 1, 1, ()) == use_volume_compile_cache(settings(volume), 1, 1, ())


def test_turned_off_the_caches_stay_in_the_container(volume):
    assert use_volume_compile_cache(settings(volume, compile_cache_on_volume=False), 4, 1, H100) is None
    assert not any(env_var in os.environ for env_var in CACHE_ENV_VARS)
    assert not (volume / "compile-cache").exists()


def test_without_a_volume_the_caches_stay_in_the_container(tmp_path):
    assert use_volume_compile_cache(settings(tmp_path / "no-volume"), 4, 1, H100) is None
    assert not any(env_var in os.environ for env_var in CACHE_ENV_VARS)


def test_inductor_precompiled_headers_are_linked_to_the_volume(volume, tmp_path, monkeypatch):
    """CPU backend: inductor's precompiled headers (~150 MB) sit at a fixed path under the temp folder, which
    no variable moves; the worker links that path into the key's folder, the same path torch computes."""
    import tempfile

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    container_tmp = tmp_path / "container-tmp"
    container_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(container_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    folder = use_volume_compile_cache(settings(volume), 1, 1, ())
    headers = Path(default_cache_dir()) / "precompiled_headers"  # torch's own rule (codecache._HEADER_DIR)
    assert headers.is_symlink() and headers.resolve() == (folder / "precompiled_headers").resolve()
    (headers / "written-by-inductor.h").write_text("// compiled once\n")
    assert (folder / "precompiled_headers" / "written-by-inductor.h").is_file()


def test_a_headers_folder_the_container_already_has_is_kept(volume, tmp_path, monkeypatch):
    import tempfile

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    own = Path(default_cache_dir()) / "precompiled_headers"
    own.mkdir(parents=True)
    (own / "header.h").write_text("//\n")
    use_volume_compile_cache(settings(volume), 1, 1, ())
    assert not own.is_symlink() and (own / "header.h").is_file()
