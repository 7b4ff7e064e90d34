"""The runpod fitness check: a pod that cannot run the parallel plan is refused before it takes a job."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import _http as http_utils
from runpod.serverless.modules import rp_fitness

from config.settings import load_settings
from tests.helpers import MODEL_CONFIGS, ROOT
from tests.helpers.fake_hub import COMMIT, FakeHub, fake_cache
from tests.helpers.fake_nvml import FakeNvml, install
from worker.model_files import download
from worker.parallel import gpus
from worker.startup import fitness
from worker.startup.fitness import (
    PodUnfitError,
    check_parallel_plan,
    gpu_build_installed,
)
from worker.transports.queue.fitness import register_fitness_checks

LLAMA_8B = MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json"
GATED = "acme/tiny-model"  # the repo tests.test_download's FakeHub serves


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """No token, no baked model, no volume; the hub at a closed port (any call to it fails)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(download, "VOLUME_ROOT", tmp_path / "no-volume")
    monkeypatch.setattr(download, "BAKED_MODEL_DIR", tmp_path / "no-baked-model")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    install(monkeypatch, FakeNvml(count=4, memory_gb=80))
    # huggingface_hub retries a failing hub for ~25 s (1+2+4+8+8 s); the tests need the outcome, not the wait.
    monkeypatch.setattr(http_utils, "time", SimpleNamespace(sleep=lambda seconds: None))


def cache_llama(cache_dir: Path) -> None:
    snapshot = fake_cache(cache_dir, repo=GATED)
    shutil.copy(LLAMA_8B, snapshot / "config.json")


@pytest.fixture
def model_dir(tmp_path) -> Path:
    shutil.copy(MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json", tmp_path / "config.json")
    return tmp_path


@pytest.fixture
def sdk_registry():
    """The SDK's real registry, emptied for the test and restored after."""
    saved = list(rp_fitness._fitness_checks)
    rp_fitness.clear_fitness_checks()
    yield rp_fitness._fitness_checks
    rp_fitness.clear_fitness_checks()
    rp_fitness._fitness_checks.extend(saved)


def run_sdk_checks() -> None:
    asyncio.run(rp_fitness.run_fitness_checks())


def test_registers_with_the_sdk(sdk_registry, model_dir):
    check = register_fitness_checks(load_settings(model_name=str(model_dir)))
    assert sdk_registry == [check] and check.__name__ == "parallel_plan_fits_pod"


def test_cpu_machine_passes(sdk_registry, model_dir, capsys):
    # This machine: no GPUs and vLLM's CPU build, so the plan is the CPU backend's and the pod is fit.
    assert not gpu_build_installed()
    register_fitness_checks(load_settings(model_name=str(model_dir), tensor_parallel_size=2))
    run_sdk_checks()
    assert "All fitness checks passed" in capsys.readouterr().out


def test_fewer_gpus_than_the_plan_is_refused(sdk_registry, model_dir, monkeypatch, capsys):
    install(monkeypatch, FakeNvml(count=2, memory_gb=80))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    register_fitness_checks(load_settings(model_name=str(model_dir), tensor_parallel_size=4))
    with pytest.raises(SystemExit) as exited:
        run_sdk_checks()
    assert exited.value.code == 1
    log = capsys.readouterr().out
    assert "Fitness check failed: parallel_plan_fits_pod | ParallelismError: TENSOR_PARALLEL_SIZE=4" in log
    assert "needs 4 GPUs" in log and "2 visible GPU(s)" in log


def test_cuda_visible_devices_hiding_gpus_is_refused(model_dir, monkeypatch):
    install(monkeypatch, FakeNvml(count=8, memory_gb=80))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ValueError, match="needs 8 GPUs"):
        check_parallel_plan(load_settings(model_name=str(model_dir), tensor_parallel_size=8))


def test_auto_plan_on_gpus_passes(model_dir, monkeypatch):
    install(monkeypatch, FakeNvml(count=4, memory_gb=80))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = check_parallel_plan(load_settings(model_name=str(model_dir)))
    assert plan.tensor_parallel_size == 4


def test_unreadable_gpus_are_refused(model_dir, monkeypatch):
    import pynvml

    install(monkeypatch, FakeNvml(init_error=pynvml.NVML_ERROR_UNKNOWN))
    monkeypatch.setattr(gpus, "_nvidia_device_files", lambda: ["/dev/nvidia0", "/dev/nvidia1"])
    with pytest.raises(PodUnfitError, match="GPUs unreadable: NVML could not start"):
        check_parallel_plan(load_settings(model_name=str(model_dir)))


def test_cuda_build_without_gpus_is_refused(model_dir, monkeypatch):
    # The GPU image installs the `vllm` wheel; with no GPUs visible it cannot start.
    monkeypatch.setattr(fitness, "gpu_build_installed", lambda: True)
    with pytest.raises(PodUnfitError, match="no GPUs visible, but this image runs vLLM's CUDA build"):
        check_parallel_plan(load_settings(model_name=str(model_dir)))


def test_check_is_cheap(model_dir):
    # No engine, no torch, no vLLM: only config.json and NVML.
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from config.settings import load_settings\n"
        "from worker.startup.fitness import check_parallel_plan\n"
        f"check_parallel_plan(load_settings(model_name={str(model_dir)!r}))\n"
        "print(round(time.perf_counter() - t, 2), [m for m in ('torch', 'vllm') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    seconds, imported = result.stdout.split(" ", 1)
    assert imported.strip() == "[]"
    assert float(seconds) < 5


# --- where config.json comes from ---------------------------------------------------------------------


def test_baked_gated_model_without_token_gets_a_full_plan(hub_env, tmp_path, monkeypatch):
    baked = tmp_path / "baked"
    cache_llama(baked / "hub")
    (baked / "manifest.json").write_text(json.dumps({"model_name": GATED, "revision": None, "commit": COMMIT}))
    monkeypatch.setattr(download, "BAKED_MODEL_DIR", baked)
    plan = check_parallel_plan(load_settings(model_name=GATED))
    assert plan is not None and plan.tensor_parallel_size == 4  # planned from the baked config.json


def test_model_in_the_workers_cache_gets_a_full_plan_offline(hub_env, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache_llama(tmp_path / "cache")
    plan = check_parallel_plan(load_settings(model_name=GATED, model_cache_dir=str(tmp_path / "cache")))
    assert plan is not None and plan.tensor_parallel_size == 4


def test_network_volume_cache_is_read(hub_env, tmp_path, monkeypatch):
    (tmp_path / "volume").mkdir()
    monkeypatch.setattr(download, "VOLUME_ROOT", tmp_path / "volume")
    cache_llama(tmp_path / "volume" / "huggingface-cache" / "hub")
    assert check_parallel_plan(load_settings(model_name=GATED)) is not None


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "hub-unreachable"])
def test_config_out_of_reach_passes_with_a_warning(hub_env, sdk_registry, monkeypatch, caplog, capsys, offline):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    register_fitness_checks(load_settings(model_name=GATED))
    run_sdk_checks()
    assert "All fitness checks passed" in capsys.readouterr().out
    warning = next(r for r in caplog.records if r.levelname == "WARNING" and r.name == "worker.startup.fitness")
    assert GATED in warning.getMessage() and "GPU count only" in warning.getMessage()


def test_config_out_of_reach_still_checks_the_gpu_count(hub_env, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    install(monkeypatch, FakeNvml(count=2, memory_gb=80))
    with pytest.raises(ValueError, match="needs 4 GPUs, but this pod has 2"):
        check_parallel_plan(load_settings(model_name=GATED, tensor_parallel_size=4))
    with pytest.raises(ValueError, match="needs 4 GPUs"):
        check_parallel_plan(load_settings(model_name=GATED, tensor_parallel_size=2, pipeline_parallel_size=2))
    assert check_parallel_plan(load_settings(model_name=GATED, tensor_parallel_size=2)) is None


@pytest.fixture
def fake_hub(hub_env, monkeypatch):
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    yield server
    server.shutdown()
    server.server_close()


def test_gated_model_without_token_is_still_refused(fake_hub):
    # Not the hub's fault: the engine start would fail the same way.
    fake_hub.mode = "gated"
    with pytest.raises(ValueError, match="is gated"):
        check_parallel_plan(load_settings(model_name=GATED))


def test_hub_down_passes_with_a_warning(fake_hub, caplog):
    fake_hub.mode = "down"
    assert check_parallel_plan(load_settings(model_name=GATED)) is None
    assert "GPU count only" in caplog.text
