"""`python -m bench weights`: cold-start weight-load time by storage and loader, and pre-sharded TP 2.

Each row is one engine start through the worker's own path (EngineHandle) in a fresh process, its weights
read from local disk or from the emulated network volume (devtools/slow_volume.py: a FUSE mount that adds a
fixed latency to every read request; each mount starts with an empty page cache). "worker" rows let the
worker choose the loader (worker/startup/weight_loading.py); "vllm default" rows pin LOAD_FORMAT=auto. The
TP 2 rows start the tiny model twice with PRESHARD=true (the first writes the shards, the second reads
them) and report the bytes each rank reads. Weight-load seconds are vLLM's own figure (the loader's line).

    DTYPE=float32 python -m bench weights            # MODEL_NAME default: .models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.slow_volume import SlowVolume, fuse_unavailable_reason
from worker.model_files.storage import weight_files
from worker.startup.preshard import MANIFEST_NAME

RESULT_PREFIX = "WEIGHTS_RESULT "
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".models" / "smollm2-135m-instruct"
TP2_MODEL = ROOT / ".models" / "tiny-llama"  # SmolLM2's 9 heads do not split in 2
LATENCIES_MS = (2.0, 10.0)


def child_main() -> None:
    """One start: build the engine, print its phases and the breakdown line, stop."""
    from config.settings import load_settings
    from worker.engine.handle import EngineHandle
    from worker.logs import configure_logging

    configure_logging()
    handle = EngineHandle(load_settings())
    handle.start_now()
    try:
        import asyncio

        asyncio.run(handle.get())  # writes a pending pre-sharded set, as the first job would
        print(RESULT_PREFIX + json.dumps({"engine_build_s": handle.load_seconds, **handle.start_phases}), flush=True)
    finally:
        handle.shutdown()


def one_start(model: Path, timeout_s: float, **env: str) -> dict:
    child_env = {**os.environ, "MODEL_NAME": str(model), "ENFORCE_EAGER": "true", "HF_HUB_OFFLINE": "1", **env}
    done = subprocess.run([sys.executable, "-m", "bench", "weights-child"], cwd=ROOT, env=child_env,
                          capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"start failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    # The breakdown line: "engine ready in ... strategy=<loader> weights_load_s=<s>)".
    ready = [line for line in (done.stdout + done.stderr).splitlines() if "engine ready in" in line]
    strategy = re.search(r"strategy=(.*?)(?: weights_load_s=[\d.]+)?\)$", ready[-1]) if ready else None
    return {**json.loads(lines[-1][len(RESULT_PREFIX):]), "strategy": strategy.group(1) if strategy else "?"}


def storage_rows(model: Path, timeout_s: float) -> list[dict]:
    rows = [{"storage": "local disk", "loader": "worker", **one_start(model, timeout_s)}]
    for latency in LATENCIES_MS:
        for loader, env in (("vllm default", {"LOAD_FORMAT": "auto"}), ("worker", {})):
            with tempfile.TemporaryDirectory(prefix="bench-volume-") as mount:
                with SlowVolume(model, mount, latency_ms=latency) as volume:
                    row = one_start(Path(mount), timeout_s, **env)
                    stats = volume.stats()
            rows.append({"storage": f"volume, {latency:g} ms/read", "loader": loader, **row,
                         "requests": stats.requests, "bytes": stats.bytes})
            print("bench weights: " + json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def preshard_rows(timeout_s: float) -> list[dict]:
    checkpoint = sum(file.stat().st_size for file in weight_files(TP2_MODEL))
    # DTYPE as tests/startup/test_weight_loading.py starts it (the tiny model's own).
    env = {"TENSOR_PARALLEL_SIZE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0|1", "PRESHARD": "true", "DTYPE": "auto"}
    with tempfile.TemporaryDirectory(prefix="bench-preshard-") as cache:
        env["MODEL_CACHE_DIR"] = str(Path(cache) / "hub")
        first = one_start(TP2_MODEL, timeout_s, **env)
        second = one_start(TP2_MODEL, timeout_s, **env)
        manifest = json.loads(next(Path(cache).glob(f"presharded/*/{MANIFEST_NAME}")).read_text())["files"]
    per_rank = max(size for name, size in manifest.items() if re.match(r"model-rank-\d+-part-", name))
    return [
        {"storage": "local disk, TP 2", "loader": "original (each rank opens all)", **first, "rank_bytes": checkpoint},
        {"storage": "local disk, TP 2", "loader": "pre-sharded", **second, "rank_bytes": per_rank},
    ]


def run_weights_bench(timeout_s: float = 900) -> tuple[str, list[dict]]:
    reason = fuse_unavailable_reason()
    if reason:
        raise SystemExit(f"bench weights needs a FUSE mount: {reason}")
    model = Path(os.environ.get("MODEL_NAME") or DEFAULT_MODEL)
    load_before, started = os.getloadavg(), time.perf_counter()
    rows = storage_rows(model, timeout_s)
    try:
        rows += preshard_rows(timeout_s)
    except RuntimeError as error:  # the storage rows still make a table
        print(f"bench weights: the TP 2 rows failed: {error}", file=sys.stderr)
    local = rows[0].get("weight load")
    lines = [
        f"{model.name}, DTYPE={os.environ.get('DTYPE', 'auto')}, eager mode, one engine start per row; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after; "
        f"{time.perf_counter() - started:.0f} s in all",
        "",
        "| storage | loader | chosen | weight load s | vs local | read requests | bytes read | bytes per rank | engine build s |",
        "|:--|:--|:--|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [table_row(row, local) for row in rows]
    return "\n".join(lines), rows


def table_row(row: dict, local_weights_s: float | None) -> str:
    weights = row.get("weight load")
    comparable = weights is not None and local_weights_s and "TP 2" not in row["storage"]
    cells = [
        row["storage"], row["loader"], row["strategy"],
        f"{weights:.2f}" if weights is not None else "-",
        f"{weights / local_weights_s:.2f}x" if comparable else "-",
        str(row.get("requests", "-")), str(row.get("bytes", "-")), str(row.get("rank_bytes", "-")),
        f"{row['engine_build_s']:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=900, help="seconds each start may take")


def run(args: argparse.Namespace) -> dict:
    table, rows = run_weights_bench(args.timeout)
    print(table)
    return {"weights": rows}
