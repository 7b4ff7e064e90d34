"""Environment variables of other programs that the worker reads (RunPod's, CUDA's, vLLM's): the one place
outside config/settings.py that reads the environment. What the worker writes for vLLM is in
worker/startup/environment.py."""

from __future__ import annotations

import os


def runpod_job_api_url() -> str:
    """Set by RunPod on a deployed worker: its job-take URL. Unset in local test mode."""
    return os.environ.get("RUNPOD_WEBHOOK_GET_JOB", "")


def runpod_realtime_port() -> str:
    """Set by RunPod for its realtime (HTTP) mode: the SDK serves its local API then, not the job loop."""
    return os.environ.get("RUNPOD_REALTIME_PORT", "")


def cuda_visible_devices() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def user_configures_vllm_logging() -> bool:
    """Whether the user gave vLLM a logging config of their own or turned its logging set-up off."""
    return bool(os.environ.get("VLLM_LOGGING_CONFIG_PATH")) or os.environ.get("VLLM_CONFIGURE_LOGGING", "1") == "0"
