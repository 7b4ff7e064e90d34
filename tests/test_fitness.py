"""The runpod fitness check: a pod that cannot run the parallel plan is refused before it takes a job."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runpod.serverless.modules import rp_fitness

from config.settings import load_settings
from tests.fake_nvml import FakeNvml, install
from worker import fitness, gpus
from worker.fitness import PodUnfitError, check_parallel_plan, gpu_build_installed, register_fitness_checks

ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "model-configs"


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
        "from worker.fitness import check_parallel_plan\n"
        f"check_parallel_plan(load_settings(model_name={str(model_dir)!r}))\n"
        "print(round(time.perf_counter() - t, 2), [m for m in ('torch', 'vllm') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    seconds, imported = result.stdout.split(" ", 1)
    assert imported.strip() == "[]"
    assert float(seconds) < 5
