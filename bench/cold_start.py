"""`python -m bench cold-start`: how much a network volume's compile cache shortens a cold start.

Each start is a fresh "container": a new process with its own empty HOME, XDG_CACHE_HOME and TMPDIR, in
compiled mode (ENFORCE_EAGER and TORCHDYNAMO_DISABLE removed). Only the volume folder is shared between
starts. The first start fills the volume's compile cache; the next ones find it. A last start with
COMPILE_CACHE_ON_VOLUME=false shows a cold start without it. Each start builds the engine through the
worker's own path (EngineHandle) and reports its phases; the table compares each build with the first.

    MODEL_NAME=.models/tiny-llama VLLM_CPU_KVCACHE_SPACE=1 python -m bench cold-start
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT_PREFIX = "COLD_START_RESULT "
# The engine build's phases (worker/startup/start_phases.py), as the table shows them.
PHASES = ("download", "plan", "weight load", "compile", "graph capture", "engine init")


def child_main() -> None:
    """One start, inside the fresh container: build the engine, print its phases, stop."""
    from config.settings import load_settings
    from worker.engine.handle import EngineHandle
    from worker.logs import configure_logging

    configure_logging()
    handle = EngineHandle(load_settings())
    handle.start_now()
    try:
        print(RESULT_PREFIX + json.dumps({"engine_build_s": handle.load_seconds, **handle.start_phases}), flush=True)
    finally:
        handle.shutdown()


def one_start(volume: Path, label: str, *, cache_on: bool, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="cold-start-container-") as container:
        env = {k: v for k, v in os.environ.items() if k not in ("ENFORCE_EAGER", "TORCHDYNAMO_DISABLE")}
        for name, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "home/.cache"), ("TMPDIR", "tmp")):
            (Path(container) / sub).mkdir(parents=True, exist_ok=True)
            env[name] = str(Path(container) / sub)
        for cache_var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            env.pop(cache_var, None)  # where the container's defaults would be, unless the worker moves them
        env.update(NETWORK_VOLUME_PATH=str(volume), COMPILE_CACHE_ON_VOLUME="true" if cache_on else "false")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench", "cold-start-child"],
            env=env, capture_output=True, text=True, timeout=timeout_s,
        )
        wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"start {label!r} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return {"start": label, "volume_cache": cache_on, "process_s": wall, **json.loads(lines[-1][len(RESULT_PREFIX):])}


def run_cold_start_bench(starts: int, timeout_s: float = 900) -> tuple[str, list[dict]]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cold-start-volume-") as volume:
        rows = [one_start(Path(volume), "first (empty volume)", cache_on=True, timeout_s=timeout_s)]
        for n in range(2, starts + 1):
            rows.append(one_start(Path(volume), f"start {n} (volume cache filled)", cache_on=True, timeout_s=timeout_s))
        rows.append(one_start(Path(volume), "cache off (COMPILE_CACHE_ON_VOLUME=false)", cache_on=False, timeout_s=timeout_s))
        cache_mb = sum(f.stat().st_size for f in Path(volume).rglob("*") if f.is_file()) / 1e6
    load_after = os.getloadavg()
    first = rows[0]["engine_build_s"]
    lines = [
        f"compiled mode, each start a fresh container (own HOME, XDG_CACHE_HOME, TMPDIR), one shared volume "
        f"({cache_mb:.0f} MB of compile cache after the runs); load average before {load_before[0]:.2f} / after {load_after[0]:.2f}",
        "",
        "| start | engine build s | vs first | " + " | ".join(f"{phase} s" for phase in PHASES) + " | process s |",
        "|:--|--:|--:|" + "--:|" * len(PHASES) + "--:|",
    ]
    for row in rows:
        phases = " | ".join(f"{row[phase]:.1f}" if phase in row else "-" for phase in PHASES)
        lines.append(
            f"| {row['start']} | {row['engine_build_s']:.1f} | {row['engine_build_s'] / first:.2f}x | {phases} | {row['process_s']:.1f} |"
        )
    return "\n".join(lines), rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--starts", type=int, default=2, help="compiled cold starts sharing the volume, then one with the cache off")


def run(args: argparse.Namespace) -> dict:
    table, rows = run_cold_start_bench(args.starts)
    print(table)
    return {"cold_starts": rows}
