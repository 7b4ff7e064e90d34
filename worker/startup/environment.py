"""The one writer of the process environment: every variable the worker sets, and why. vLLM's engine and
worker processes inherit the environment, and several of vLLM's and torch's options exist only as env vars,
so these are set before the engine starts; what the worker reads is in config/."""

from __future__ import annotations

import os

# Each variable the worker may write: why.
WRITTEN = {
    "RUNPOD_LOG_LEVEL": "the runpod SDK's DEBUG lines print every job's input and output: INFO unless the user sets it",
    "GLOO_SOCKET_IFNAME": "multi-node: gloo on the cluster network (RunPod's ens1), unless the user set it",
    "NCCL_SOCKET_IFNAME": "multi-node: NCCL on the cluster network (RunPod's ens1), unless the user set it",
    "VLLM_HOST_IP": "multi-node: the address this node advertises to the others (CLUSTER_NODE_ADDR)",
    "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "multi-node: a model step across nodes fails instead of hanging when a "
    "node dies (CLUSTER_STEP_TIMEOUT_S)",
    "VLLM_CACHE_ROOT": "vLLM's compile cache on the network volume, shared by the endpoint's workers",
    "TORCHINDUCTOR_CACHE_DIR": "torch inductor's compile cache on the network volume",
    "TRITON_CACHE_DIR": "Triton's kernel cache on the network volume",
    "VLLM_MEDIA_CONNECTOR": "vLLM's chat parser fetches image URLs through the worker's URL policy",
    "VLLM_LOGGING_CONFIG_PATH": "for one engine build: vLLM's processes report their start-up phases to the worker",
}


def set_variable(name: str, value: str) -> None:
    if name not in WRITTEN:
        raise KeyError(f"{name} is not in worker/startup/environment.py WRITTEN: add it there, with why")
    os.environ[name] = value


def set_default(name: str, value: str) -> None:
    """`name` = `value` unless the user set it."""
    if name not in os.environ:
        set_variable(name, value)


def unset_variable(name: str) -> None:
    if name not in WRITTEN:
        raise KeyError(f"{name} is not in worker/startup/environment.py WRITTEN: add it there, with why")
    os.environ.pop(name, None)
