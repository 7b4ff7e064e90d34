"""`python -m bench burst`: a burst of jobs queued at once at the RunPod stand-in, per CONCURRENCY_MODE.

Each worker is `python handler.py` as RunPod runs it (the SDK's real job loop, its own engine) against the
stand-in (devtools/runpod_standin.py) in this process, pinned to a CPU core of its own (on RunPod each worker
has its own GPU). Per mode:

  1. one worker, warm: BURST jobs queued at once. Reported: the jobs the worker held while the stand-in still
     had jobs queued (median, p90, weighted by time), the engine's running/waiting requests each job found on
     admission (its per-job metrics), and the burst time (queued -> last result).
  2. the same worker and a second one started `--second-after` seconds after the burst is queued (then its
     own cold start, with the worker's default WARM_START): how many jobs each completed, when the second took
     its first, and the burst time.

    MODEL_NAME=.models/tiny-llama ENFORCE_EAGER=true python -m bench burst --jobs 96 --max-tokens 128

docs/concurrency.md has a table it printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.runpod_standin import FakeRunPod

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900.0  # a cold start on one shared CPU core
BURST_TIMEOUT_S = 1800.0


@dataclass
class BurstRun:
    mode: str
    workers: int
    jobs: int
    burst_s: float
    held_p50: float  # by the first worker, while jobs were queued at the stand-in (time-weighted)
    held_p90: float
    engine_running_p50: float  # the first worker's engine, as each of its jobs found it
    engine_running_max: int
    engine_waiting_p50: float
    engine_waiting_max: int
    completed: dict[str, int] = field(default_factory=dict)  # per worker
    second_first_take_s: float | None = None  # burst queued -> the second worker's first job taken
    target_log_lines: int = 0  # the first worker's "job target" lines, start to end of this run


class WorkerProcess:
    """`python handler.py` against `platform`, pinned to `core`, in a folder of its own under `log_dir` (the
    SDK keeps its jobs in progress in a file in the working directory: on RunPod each worker has its own, and
    a worker sharing another's takes that one's jobs for its own); its log there too."""

    def __init__(self, platform: FakeRunPod, worker_id: str, core: int, log_dir: Path, **env: str) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_WEBHOOK")}
        full_env.update(PYTHONUNBUFFERED="1", VLLM_CPU_OMP_THREADS_BIND=str(core), **env)
        full_env.update(platform.env(RUNPOD_POD_ID=worker_id))
        if Path(full_env["MODEL_NAME"]).exists():  # a local folder: relative to this process's directory
            full_env["MODEL_NAME"] = str(Path(full_env["MODEL_NAME"]).resolve())
        workdir = log_dir / worker_id
        workdir.mkdir()
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(ROOT / "handler.py")], cwd=workdir, env=full_env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        try:
            os.killpg(self.proc.pid, 9)  # vLLM's engine processes are in its session
        except ProcessLookupError:
            pass
        self._log.close()


def held_time_weighted(samples: list[tuple[float, int, dict[str, int]]], worker: str) -> list[tuple[int, float]]:
    """(jobs `worker` held, for how long) over the stand-in's samples while it still had jobs queued."""
    spans = []
    for (at, queued, held), (next_at, _, _) in zip(samples, samples[1:]):
        if queued > 0 and next_at > at:
            spans.append((held.get(worker, 0), next_at - at))
    return spans


def weighted_percentile(spans: list[tuple[int, float]], q: float) -> float:
    if not spans:
        return 0.0
    ordered = sorted(spans)
    total = sum(weight for _, weight in ordered)
    reached = 0.0
    for value, weight in ordered:
        reached += weight
        if reached >= q / 100 * total:
            return float(value)
    return float(ordered[-1][0])


def job_input(i: int, max_tokens: int) -> dict:
    """A streamed job of exactly `max_tokens` tokens (bench/generation.py's load, on the SDK path)."""
    return {
        "prompt": f"Burst request {i}: explain tensor parallelism.",
        "sampling_params": {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
        "stream": True,
    }


def job_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The per-job metrics of a streamed job's aggregate output (its last chunk)."""
    return result["output"][-1].get("metrics", {})


def burst(platform: FakeRunPod, tag: str, jobs: int, max_tokens: int, late_start=None) -> tuple[float, dict, list]:
    """Queue `jobs` at once; `late_start()` is called meanwhile if given. The burst time, the results, and the
    stand-in's hold samples from the burst on."""
    first_sample = len(platform.holding)
    ids = [f"{tag}-{i}" for i in range(jobs)]
    started = time.perf_counter()
    platform.submit_burst([(job_id, job_input(i, max_tokens)) for i, job_id in enumerate(ids)])
    if late_start is not None:
        late_start()
    results = platform.wait_for_results(ids, timeout=BURST_TIMEOUT_S)
    burst_s = platform.holding[-1][0] - started  # the last sample: the last result's arrival
    failed = [r for r in results.values() if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) failed, e.g. {failed[0]}")
    return burst_s, results, platform.holding[first_sample:] + [(time.perf_counter(), 0, {})]


def summarize(mode: str, workers: int, platform: FakeRunPod, results: dict, samples: list, burst_s: float) -> BurstRun:
    first = f"{mode}-a"
    spans = held_time_weighted(samples, first)
    mine = [job_metrics(r) for job_id, r in results.items() if platform.taken_by[job_id] == first]
    running = [m["engine_running"] for m in mine if "engine_running" in m] or [0]
    waiting = [m["engine_waiting"] for m in mine if "engine_waiting" in m] or [0]
    return BurstRun(
        mode=mode, workers=workers, jobs=len(results), burst_s=round(burst_s, 2),
        held_p50=weighted_percentile(spans, 50), held_p90=weighted_percentile(spans, 90),
        engine_running_p50=statistics.median(running), engine_running_max=max(running),
        engine_waiting_p50=statistics.median(waiting), engine_waiting_max=max(waiting),
        completed=dict(Counter(platform.taken_by[job_id] for job_id in results)),
    )


def run_mode(mode: str, jobs: int, max_tokens: int, engine_limit: int, cap: int, second_after: float | None,
             cores: list[int], log_dir: Path) -> list[BurstRun]:
    platform = FakeRunPod().start()
    settings = dict(CONCURRENCY_MODE=mode, MAX_CONCURRENCY=str(cap), MAX_NUM_SEQS=str(engine_limit))
    workers = [WorkerProcess(platform, f"{mode}-a", cores[0], log_dir, WARM_START="true", **settings)]
    runs = []
    try:
        platform.submit("warm", job_input(0, 8))
        platform.wait_for_results(["warm"], timeout=START_TIMEOUT_S)
        burst_s, results, samples = burst(platform, f"{mode}-one", jobs, max_tokens)
        runs.append(summarize(mode, 1, platform, results, samples, burst_s))
        runs[-1].target_log_lines = workers[0].log_path.read_text().count("job target")
        if second_after is not None:
            def start_second() -> None:
                time.sleep(second_after)
                workers.append(WorkerProcess(platform, f"{mode}-b", cores[1 % len(cores)], log_dir, **settings))

            queued_at = time.perf_counter()
            burst_s, results, samples = burst(platform, f"{mode}-two", jobs, max_tokens, start_second)
            run = summarize(mode, 2, platform, results, samples, burst_s)
            taken_by_b = [platform.taken[j] for j in results if platform.taken_by[j] == f"{mode}-b"]
            run.second_first_take_s = round(min(taken_by_b) - queued_at, 1) if taken_by_b else None
            run.target_log_lines = workers[0].log_path.read_text().count("job target") - runs[0].target_log_lines
            runs.append(run)
    finally:
        for worker in workers:
            worker.stop()
        platform.stop()
    return runs


def render_burst_table(runs: list[BurstRun], jobs: int, max_tokens: int, engine_limit: int, cap: int,
                       second_after: float | None, load: tuple[float, float]) -> str:
    lines = [
        f"{jobs} streamed {max_tokens}-token jobs queued at once at the RunPod stand-in; engine MAX_NUM_SEQS "
        f"{engine_limit}, MAX_CONCURRENCY {cap}; each worker on one CPU core of its own; the second worker started "
        f"{second_after or 0:g} s after the burst was queued, then its cold start; load average before "
        f"{load[0]:.2f} / after {load[1]:.2f} (1 min)",
        "",
        "| mode | workers | burst s | held p50 | held p90 | engine running p50 / max | waiting p50 / max "
        "| jobs per worker | 2nd worker's first job at s | target log lines |",
        "|:--|--:|--:|--:|--:|--:|--:|:--|--:|--:|",
    ]
    for r in runs:
        per_worker = ", ".join(f"{name.rsplit('-', 1)[1]}: {count}" for name, count in sorted(r.completed.items()))
        second = "" if r.second_first_take_s is None and r.workers == 1 else f"{r.second_first_take_s}"
        lines.append(
            f"| {r.mode} | {r.workers} | {r.burst_s:.1f} | {r.held_p50:g} | {r.held_p90:g} | "
            f"{r.engine_running_p50:g} / {r.engine_running_max} | {r.engine_waiting_p50:g} / {r.engine_waiting_max} | "
            f"{per_worker} | {second} | {r.target_log_lines} |"
        )
    lines.append("")
    lines.append("held: jobs the first worker held (taken, no result yet) while the stand-in still had jobs queued")
    return "\n".join(lines)


def run_burst_bench(modes: list[str], jobs: int, max_tokens: int, engine_limit: int, cap: int,
                    second_after: float | None) -> tuple[str, list[dict]]:
    if "MODEL_NAME" not in os.environ:
        raise SystemExit("burst: set MODEL_NAME (e.g. .models/smollm2-135m-instruct) as for the worker")
    cores = sorted(os.sched_getaffinity(0))
    runs: list[BurstRun] = []
    before = os.getloadavg()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    for index, mode in enumerate(modes):  # a mode may be given more than once (runs alternated on a busy machine)
        mode_dir = log_dir / f"{index + 1}-{mode}"
        mode_dir.mkdir()
        runs += run_mode(mode, jobs, max_tokens, engine_limit, cap, second_after, cores, mode_dir)
    after = os.getloadavg()
    table = render_burst_table(runs, jobs, max_tokens, engine_limit, cap, second_after, (before[0], after[0]))
    table += f"\nworkers' logs: {log_dir}"
    return table, [asdict(r) for r in runs]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=96, help="jobs in the burst")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--modes", nargs="+", choices=["adaptive", "fixed"], default=["adaptive", "fixed"],
                        help="the CONCURRENCY_MODEs to run")
    parser.add_argument("--engine-limit", type=int, default=8, help="the workers' MAX_NUM_SEQS")
    parser.add_argument("--max-concurrency", type=int, default=64, help="the workers' MAX_CONCURRENCY")
    parser.add_argument("--second-after", type=float, default=0.0, metavar="S",
                        help="start the second worker S s after the burst is queued (then its cold start)")
    parser.add_argument("--one-worker", action="store_true", help="skip the two-worker run")


def run(args: argparse.Namespace) -> dict:
    table, rows = run_burst_bench(
        args.modes, args.jobs, args.max_tokens, args.engine_limit, args.max_concurrency,
        None if args.one_worker else args.second_after,
    )
    print(table)
    return {"max_tokens": args.max_tokens, "burst_results": rows}
