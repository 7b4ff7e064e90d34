"""One engine across the nodes of a cluster (RunPod Instant Clusters) on vLLM's multiprocessing multi-node executor.

Planning (TP inside a node x PP across nodes) and the cluster settings are checked as functions. The cluster itself
runs as two `python handler.py` processes on 127.0.0.1 with different NODE_RANK, TP 1 x PP 2 on the tiny model
(2 layers: one per node) in compiled mode, on vLLM's CPU backend: node 0's greedy output equals one process's,
and the three failures (a follower dies mid-job, node 0 dies, a follower never arrives) end within their bounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from config.errors import SettingsError
from config.settings import WorkerSettings, load_settings
from devtools.tiny_model import TINY_LLAMA_CONFIG
from tests.helpers import MODEL_CONFIGS, ROOT, reference_config
from tests.helpers.cluster import (
    cluster_env,
    start_api_node0,
    start_node,
    wait_for_api,
    wait_for_exit,
    wait_for_log,
)
from tests.helpers.fake_runpod import free_port
from worker.parallel.gpus import GpuInventory
from worker.parallel.layout import (
    ParallelismError,
    choose_parallelism,
    plan_parallelism,
)
from worker.parallel.memory import GB, resolve_precision
from worker.startup.cluster import cluster_interface

GREEDY_JOB = {"prompt": "The capital of France is", "sampling_params": {"temperature": 0, "max_tokens": 32}}
# Bounds the failure tests give the worker (its settings) and what they allow on top for a loaded 2-core machine.
STEP_TIMEOUT_S = 20
JOIN_TIMEOUT_S = 10
RUNPOD_CLUSTER_VARS = ("NUM_NODES", "NODE_RANK", "PRIMARY_ADDR", "PRIMARY_PORT", "NODE_ADDR", "NUM_TRAINERS")


def node(count: int, memory_gb: float) -> GpuInventory:
    return GpuInventory(count, (int(memory_gb * GB),) * count, ("NVIDIA H100",) * count, None, "cli")


def cluster_plan(model: str, nodes: int, gpus: GpuInventory, tp: int | str = "auto", pp: int = 1):
    config = reference_config(model)
    return choose_parallelism(
        model_name=model, model_config=config, requested_tp=tp, pipeline_parallel_size=pp, gpus=gpus,
        precision=resolve_precision(config), gpu_memory_utilization=0.90, max_model_len=None, nodes=nodes,
    )


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in RUNPOD_CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in WorkerSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


# --- planning ------------------------------------------------------------------------------------------------


def test_405b_bf16_runs_on_two_nodes_of_8x80gb_as_tp8_x_pp2():
    plan = cluster_plan("meta-llama--Llama-3.1-405B", 2, node(8, 80))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (8, 2)
    # 812 GB of bf16 weights over 16 GPUs: each holds an eighth of half the layers.
    assert 49 * GB < plan.memory.weight_bytes_per_gpu < 52 * GB
    assert plan.memory.fits and plan.memory.kv_tokens > 131_072
    assert "cluster of 2 nodes x 8 x NVIDIA H100 (80.0 GB)" in plan.summary


def test_405b_bf16_does_not_fit_one_node():
    with pytest.raises(ParallelismError, match="PIPELINE_PARALLEL_SIZE=2 = 16 GPUs on 2 nodes"):
        cluster_plan("meta-llama--Llama-3.1-405B", 1, node(8, 80))


def test_70b_on_two_nodes_of_4x40gb_is_tp4_x_pp2():
    plan = cluster_plan("meta-llama--Meta-Llama-3-70B", 2, node(4, 40))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (4, 2)
    assert 17 * GB < plan.memory.weight_bytes_per_gpu < 18.5 * GB


def test_a_set_tp_takes_the_pipeline_stages_that_fill_the_cluster():
    plan = cluster_plan("meta-llama--Meta-Llama-3-70B", 2, node(4, 40), tp=2)
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (2, 4)


@pytest.mark.parametrize(
    "model, gpus, tp, pp, problem",
    [
        ("meta-llama--Meta-Llama-3-70B", node(4, 40), 8, 1, "TP 8 does not divide the 4 GPUs of a node"),
        ("meta-llama--Meta-Llama-3-70B", node(4, 40), 4, 4, "TP 4 x PP 4 = 16 GPUs"),
        ("meta-llama--Llama-3.1-405B", node(8, 40), "auto", 1, "weights need 50.7 GB per GPU, 34.0 GB usable"),
    ],
)
def test_an_impossible_layout_names_the_valid_ones(model, gpus, tp, pp, problem):
    with pytest.raises(ParallelismError) as raised:
        cluster_plan(model, 2, gpus, tp=tp, pp=pp)
    message = str(raised.value)
    assert problem in message
    assert "TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE must equal the cluster's" in message
    assert "Valid layouts that fit:" in message and "all valid layouts: TENSOR_PARALLEL_SIZE=" in message


def test_cpu_cluster_runs_one_pipeline_stage_per_node_and_refuses_eager_mode():
    config = TINY_LLAMA_CONFIG
    settings = load_settings(model_name="org/tiny", cluster_num_nodes=2, cluster_node_rank=0,
                             cluster_master_addr="127.0.0.1")
    plan = plan_parallelism(settings, config, GpuInventory(0))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (1, 2)
    eager = load_settings(model_name="org/tiny", cluster_num_nodes=2, cluster_node_rank=0,
                          cluster_master_addr="127.0.0.1", enforce_eager=True)
    with pytest.raises(ParallelismError, match="ENFORCE_EAGER=true does not work with PIPELINE_PARALLEL_SIZE=2"):
        plan_parallelism(eager, config, GpuInventory(0))


def test_fitness_check_without_config_counts_one_nodes_share_of_the_gpus():
    from worker.startup.fitness import check_gpu_count

    settings = load_settings(model_name="org/model", tensor_parallel_size=8, pipeline_parallel_size=2,
                             cluster_num_nodes=2, cluster_node_rank=0, cluster_master_addr="10.0.0.1")
    check_gpu_count(settings, node(8, 80))  # 16 GPUs over 2 nodes: 8 each
    with pytest.raises(ParallelismError, match="needs 8 GPUs, but this pod has 4"):
        check_gpu_count(settings, node(4, 80))


def test_plan_cli_shows_per_gpu_figures_for_the_cluster():
    done = subprocess.run(
        [sys.executable, "-m", "worker.plan", str(MODEL_CONFIGS / "meta-llama--Llama-3.1-405B.json"),
         "--nodes", "2", "--gpus", "8", "--gpu-memory", "80"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Cluster    2 nodes x 8 GPUs (80.0 GB)" in done.stdout
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()[:1].isdigit()}
    assert rows["8"].split()[:3] == ["8", "2", "16"] and "<- recommended" in rows["8"]
    assert "Recommended: TENSOR_PARALLEL_SIZE=8 x PIPELINE_PARALLEL_SIZE=2" in done.stdout


# --- settings and network --------------------------------------------------------------------------------------


def test_runpod_cluster_vars_are_read_and_the_workers_own_settings_win(no_cluster_env):
    no_cluster_env.setenv("NUM_NODES", "2")
    no_cluster_env.setenv("NODE_RANK", "1")
    no_cluster_env.setenv("PRIMARY_ADDR", "10.65.0.2")
    no_cluster_env.setenv("PRIMARY_PORT", "29400")
    no_cluster_env.setenv("NODE_ADDR", "10.65.0.3")
    no_cluster_env.setenv("NUM_TRAINERS", "8")
    settings = load_settings(model_name="org/model")
    assert (settings.cluster_nodes, settings.cluster_node_rank, settings.is_follower) == (2, 1, True)
    assert (settings.cluster_master_addr, settings.cluster_master_port) == ("10.65.0.2", 29400)
    assert (settings.cluster_node_addr, settings.cluster_gpus_per_node) == ("10.65.0.3", 8)
    no_cluster_env.setenv("CLUSTER_MASTER_PORT", "29555")
    no_cluster_env.setenv("CLUSTER_NODE_RANK", "0")
    settings = load_settings(model_name="org/model")
    assert (settings.cluster_master_port, settings.is_follower) == (29555, False)


def test_single_pod_is_not_a_cluster(no_cluster_env):
    no_cluster_env.setenv("NUM_NODES", "1")
    settings = load_settings(model_name="org/model")
    assert not settings.in_cluster and not settings.is_follower


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NUM_NODES": "2", "PRIMARY_ADDR": "10.0.0.1"}, "CLUSTER_NODE_RANK (or NODE_RANK) from 0 to 1; it is None"),
        ({"NUM_NODES": "2", "NODE_RANK": "2", "PRIMARY_ADDR": "10.0.0.1"}, "from 0 to 1; it is 2"),
        ({"NUM_NODES": "2", "NODE_RANK": "0"}, "needs CLUSTER_MASTER_ADDR (or PRIMARY_ADDR)"),
    ],
)
def test_an_incomplete_cluster_is_a_settings_error(no_cluster_env, env, message):
    for name, value in env.items():
        no_cluster_env.setenv(name, value)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(model_name="org/model")


def test_cluster_interface_is_the_one_holding_the_node_address():
    assert cluster_interface("127.0.0.1") == ("lo", "the interface holding CLUSTER_NODE_ADDR 127.0.0.1")
    name, why = cluster_interface("192.0.2.1")  # TEST-NET: on no interface here, and there is no ens1
    assert name is None and "no interface holds CLUSTER_NODE_ADDR=192.0.2.1" in why


def node_log_after_start(tiny_model, node_rank: int, **env: str) -> tuple[int, str]:
    """Run one node until it stops at start; its exit code and output."""
    done = subprocess.run([sys.executable, "handler.py"], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env=cluster_env(tiny_model, free_port(), node_rank, **env))
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("node_rank", [0, 1])
def test_an_impossible_layout_stops_every_node_at_start(tiny_model, node_rank):
    code, output = node_log_after_start(tiny_model, node_rank, TENSOR_PARALLEL_SIZE="3", GLOO_SOCKET_IFNAME="lo")
    assert code == 2, output[-3000:]
    assert "TENSOR_PARALLEL_SIZE=3 x PIPELINE_PARALLEL_SIZE=1 does not work" in output
    assert "Valid layouts: TENSOR_PARALLEL_SIZE=<one of 1, 2, 4> x PIPELINE_PARALLEL_SIZE=2" in output
    assert "EngineCore" not in output and "headless" not in output  # stopped before vLLM started anything
    # The network: a given interface is kept, the other follows this node's address; the log says which.
    assert "GLOO_SOCKET_IFNAME=lo (given, kept as is)" in output
    assert "NCCL_SOCKET_IFNAME=lo (the interface holding CLUSTER_NODE_ADDR 127.0.0.1)" in output
    assert "VLLM_HOST_IP=127.0.0.1 (this node's CLUSTER_NODE_ADDR)" in output


def test_eager_mode_with_pipeline_stages_on_cpu_stops_the_node_at_start(tiny_model):
    code, output = node_log_after_start(tiny_model, 0, ENFORCE_EAGER="true")
    assert code == 2, output[-3000:]
    assert "ENFORCE_EAGER=true does not work with PIPELINE_PARALLEL_SIZE=2 on vLLM's CPU backend" in output


# --- the cluster: two handler.py processes on 127.0.0.1 -----------------------------------------------------------


def runsync(base: str, job_input: dict) -> dict:
    """A job's result over the SDK's HTTP API (its /runsync returns a generator handler's output as a list)."""
    import httpx

    output = httpx.post(f"{base}/runsync", json={"input": job_input}, timeout=300).json()["output"]
    assert isinstance(output, list) and len(output) == 1, output
    return output[0]


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    """Node 0 (the SDK's HTTP API, as users reach it on a cluster) and node 1 (vLLM's headless workers)."""
    log_dir = tmp_path_factory.mktemp("cluster")
    master_port = free_port()
    follower = start_node(tiny_model, log_dir, master_port, 1, CLUSTER_STEP_TIMEOUT_S=str(STEP_TIMEOUT_S))
    node0, base = start_api_node0(tiny_model, log_dir, master_port, CLUSTER_STEP_TIMEOUT_S=str(STEP_TIMEOUT_S))
    try:
        wait_for_api(node0, base, timeout=900)
        yield node0, follower, base
    finally:
        node0.stop()
        follower.stop()


@pytest.mark.slow
def test_node0_serves_the_same_greedy_tokens_as_one_process(cluster, run_job, tiny_model):
    node0, follower, base = cluster
    single = run_job(GREEDY_JOB)[0]
    output = runsync(base, GREEDY_JOB)
    assert output["choices"][0]["text"] == single["choices"][0]["text"]
    assert output["usage"] == single["usage"]
    chat = runsync(base, {
        "openai_route": "/v1/chat/completions",
        "openai_input": {"model": str(tiny_model), "max_tokens": 8, "temperature": 0,
                         "messages": [{"role": "user", "content": "Hi"}]}})
    assert chat["usage"]["completion_tokens"] == 8, chat
    # The cross-node group: two ranks, one per node, joined over TCP (gloo), not one node's shared memory.
    log0 = node0.log()
    assert "world_size=2, local_world_size=1" in log0
    assert "world_size=2 rank=0 local_rank=0 distributed_init_method=tcp://127.0.0.1:" in log0
    assert "backend=gloo" in log0
    assert "node 1 of 2 joined node 0 at 127.0.0.1:" in follower.log()


@pytest.mark.slow
def test_a_follower_dying_mid_job_fails_the_job_and_stops_node0(cluster):
    import httpx

    node0, follower, base = cluster
    long_job = {"prompt": "Count:", "sampling_params": {"temperature": 0, "max_tokens": 1900, "ignore_eos": True}}
    result: dict = {}
    request = threading.Thread(target=lambda: result.update(
        httpx.post(f"{base}/runsync", json={"input": long_job}, timeout=300).json()))
    request.start()
    time.sleep(3)  # the job is generating
    os.killpg(follower.proc.pid, signal.SIGKILL)  # the whole node: its handler and its vLLM worker
    killed_at = time.monotonic()
    request.join(timeout=STEP_TIMEOUT_S + 60)
    assert "engine_dead" in json.dumps(result), (result, node0.log()[-4000:])
    code = node0.proc.wait(timeout=STEP_TIMEOUT_S + 60)
    exited_s = time.monotonic() - killed_at
    assert code != 0
    assert exited_s < STEP_TIMEOUT_S + 30, f"node 0 exited {exited_s:.0f} s after the follower died"
    print(f"\nfollower killed mid-job: node 0 failed the job and exited (code {code}) after {exited_s:.1f} s")


@pytest.mark.slow
def test_node0_dying_stops_the_follower_within_seconds(tiny_model, tmp_path):
    master_port = free_port()
    follower = start_node(tiny_model, tmp_path, master_port, 1)
    node0 = start_node(tiny_model, tmp_path, master_port, 0, args=["--rp_serve_api", "--rp_api_port",
                                                                        str(free_port())])
    try:
        wait_for_log(follower, "node 1 of 2 joined node 0", timeout=900)
        os.killpg(node0.proc.pid, signal.SIGKILL)
        code, exited_s = wait_for_exit(follower, timeout=60)
        assert code != 0
        assert exited_s < 15, f"the follower exited {exited_s:.1f} s after node 0 died"
        assert "node 0 at 127.0.0.1:" in follower.log() and "is gone" in follower.log()
        print(f"\nnode 0 killed: the follower exited (code {code}) after {exited_s:.1f} s")
    finally:
        node0.stop()
        follower.stop()


@pytest.mark.slow
def test_node0_alone_stops_naming_the_node_it_waited_for(tiny_model, tmp_path):
    master_port = free_port()
    started = time.monotonic()
    node0 = start_node(tiny_model, tmp_path, master_port, 0, CLUSTER_JOIN_TIMEOUT_S=str(JOIN_TIMEOUT_S))
    try:
        code, _ = wait_for_exit(node0, timeout=600)
        took_s = time.monotonic() - started
        assert code != 0
        log0 = node0.log()
        assert "node 0 waited" in log0 and f"(CLUSTER_JOIN_TIMEOUT_S={JOIN_TIMEOUT_S}) for node rank(s) 1 of 2 " \
            f"to join at 127.0.0.1:{master_port}" in log0, log0[-4000:]
        print(f"\nnode 0 alone: stopped (code {code}) {took_s:.0f} s after start")
    finally:
        node0.stop()

