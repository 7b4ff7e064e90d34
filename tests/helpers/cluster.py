"""Two "nodes" of a cluster as two `python handler.py` processes on 127.0.0.1 (tests/startup/test_cluster.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import ROOT, worker_env
from tests.helpers.fake_runpod import WorkerProcess, free_port


def cluster_env(tiny_model: Path, master_port: int, node_rank: int, **extra: str) -> dict[str, str]:
    """One node's environment: RunPod's own cluster variables, loopback as the cluster network, compiled mode
    (vLLM's CPU backend needs it for pipeline stages), and each node's OpenMP threads on its own core."""
    env = worker_env(
        tiny_model,
        **{
            "ENFORCE_EAGER": "false",
            "NUM_NODES": "2",
            "NODE_RANK": str(node_rank),
            "PRIMARY_ADDR": "127.0.0.1",
            "PRIMARY_PORT": str(master_port),
            "NODE_ADDR": "127.0.0.1",
            "VLLM_CPU_OMP_THREADS_BIND": str(node_rank),
            **extra,
        },
    )
    env.pop("TORCHDYNAMO_DISABLE", None)  # compiled mode needs torch.compile (tests/conftest.py disables it)
    return env


def start_node(tiny_model: Path, log_dir: Path, master_port: int, node_rank: int, args: list[str] | None = None,
               **extra: str) -> WorkerProcess:
    return WorkerProcess(ROOT, cluster_env(tiny_model, master_port, node_rank, **extra),
                         log_dir / f"node{node_rank}.log", args=args)


def start_api_node0(tiny_model: Path, log_dir: Path, master_port: int, **extra: str) -> tuple[WorkerProcess, str]:
    """Node 0 as a user reaches it on a cluster: the runpod SDK's HTTP API (`--rp_serve_api`)."""
    api_port = free_port()
    node0 = start_node(tiny_model, log_dir, master_port, 0,
                       args=["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(api_port)], **extra)
    return node0, f"http://127.0.0.1:{api_port}"


def wait_for_log(process: WorkerProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log():
        code = process.proc.poll()
        assert code is None, f"exited ({code}) before {text!r}:\n{process.log()[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{process.log()[-4000:]}"
        time.sleep(0.5)


def wait_for_api(process: WorkerProcess, base: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{base}/docs", timeout=2)
            return
        except httpx.TransportError:
            assert process.proc.poll() is None, f"node 0 exited ({process.proc.returncode}):\n{process.log()[-4000:]}"
            assert time.monotonic() < deadline, f"node 0's API not up within {timeout} s:\n{process.log()[-4000:]}"
            time.sleep(1)


def wait_for_exit(process: WorkerProcess, timeout: float) -> tuple[int, float]:
    """The exit code and how long it took."""
    started = time.monotonic()
    code = process.proc.wait(timeout=timeout)
    return code, time.monotonic() - started
