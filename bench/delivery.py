"""`python -m bench delivery`: results and streams through the runpod SDK while RunPod's API refuses a share of
the posts, with the worker's result delivery and with the SDK's own.

The worker as RunPod runs it (`python handler.py`, the real runpod SDK, MODEL_NAME's engine) against the RunPod
API stand-in (devtools/runpod_standin.py) in this process, twice: with worker/transports/queue/delivery.py and
with the SDK's own posting (RESULT_DELIVERY_TIMEOUT_S=0, "stock"). Each worker runs `--jobs` jobs (half
streamed, greedy, submitted at once) fault-free for the reference outputs, then per round two such batches: in each, a share of the job-stream and job-done posts of half its jobs is refused with
503 before the stand-in records them (the other half the next time), so every job is refused once per round
and the jobs left alone are the fault-free baseline under the same load. Per worker, over the refused jobs:

  completed       with a result and no error (a lost result never comes)
  intact          ... whose output is the reference text of the same job
  streams intact  streamed jobs whose client saw the reference text: no chunk missing, none twice
  extra s/job     their mean submit -> result time minus that of the jobs left alone in the same batches
                  (a lost result has no time: it is left out)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.runpod_standin import FakeRunPod, Faults

ROOT = Path(__file__).resolve().parents[1]
# A lost result never arrives: a run ends when every job has one, or when none came for this long.
QUIET_S = 20.0
START_TIMEOUT_S = 600.0


@dataclass
class DeliveryResult:
    delivery: str  # "worker" or "stock"
    jobs: int
    streamed: int
    completed: int
    intact: int
    streams_intact: int
    refused_take: int
    refused_stream: int
    refused_done: int
    posts_after_final: int
    fault_free_s_per_job: float  # mean submit -> result
    extra_s_per_job: float


def job_input(i: int, max_tokens: int) -> dict:
    params = {"temperature": 0, "max_tokens": max_tokens}
    job = {"prompt": f"Job {i}: write about item {i * 7919 % 1000}", "sampling_params": params}
    return {**job, "stream": True} if i % 2 == 0 else job


def text_of(outputs: list[dict]) -> str:
    return "".join(choice.get("text", "") for output in outputs for choice in output.get("choices", []))


class Run:
    """One batch of jobs submitted at once on the stand-in, `faults` applied to the posts of the jobs numbered in
    `faulted` only (the others, in the same batch, are the fault-free baseline under the same load)."""

    def __init__(self, fake: FakeRunPod, prefix: str, count: int, max_tokens: int, faults: Faults, faulted: set[int]):
        self.fake, self.ids, self.faulted = fake, [f"{prefix}-{i}" for i in range(count)], faulted
        self.arrived: dict[str, float] = {}
        self._any = threading.Event()
        fake.on_result = self._record
        fake.set_faults(dataclasses.replace(faults, jobs=frozenset(self.ids[i] for i in faulted)))
        for i, job_id in enumerate(self.ids):
            fake.submit(job_id, job_input(i, max_tokens))
        while len(self.arrived) < count and self._any.wait(QUIET_S):
            self._any.clear()
        fake.set_faults(Faults())

    def _record(self, job_id: str) -> None:
        self.arrived[job_id] = time.perf_counter()
        self._any.set()

    def result(self, i: int) -> dict | None:
        return self.fake.results.get(self.ids[i])

    def streamed_text(self, i: int) -> str:
        return text_of([post["output"] for post in self.fake.streams.get(self.ids[i], [])])

    def seconds(self, i: int) -> float | None:
        """Submit -> result; None for a result that never came."""
        job_id = self.ids[i]
        return self.arrived[job_id] - self.fake.submitted_at[job_id] if job_id in self.arrived else None


def start_worker(fake: FakeRunPod, delivery: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, **fake.env(), "WARM_START": "true", "PYTHONUNBUFFERED": "1"}
    if delivery == "stock":
        env["RESULT_DELIVERY_TIMEOUT_S"] = "0"
    with open(log_path, "w") as log:
        # Its own session: the SDK's heartbeat process outlives the worker's exit, killed with the group below.
        return subprocess.Popen(
            [sys.executable, "handler.py"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def bench_one(delivery: str, args: argparse.Namespace, log_dir: Path) -> DeliveryResult:
    """One worker: a fault-free run (the reference outputs), then `args.rounds` rounds of two batches, each with
    faults on the posts of half its jobs (two of every four, so half of them streamed), the other half next."""
    fake = FakeRunPod().start()
    worker = start_worker(fake, delivery, log_dir / f"worker-{delivery}.log")
    try:
        fake.submit("warm-up", {"prompt": "warm", "sampling_params": {"max_tokens": 4}})
        fake.wait_for_results(["warm-up"], timeout=START_TIMEOUT_S)
        reference = Run(fake, f"{delivery}-reference", args.jobs, args.max_tokens, Faults(), set())
        runs = []
        for r in range(args.rounds):
            for half in (0, 1):
                faults = Faults(take=args.refused_takes, stream=args.refused, done=args.refused, seed=args.seed + r)
                faulted = {i for i in range(args.jobs) if (i // 2) % 2 == half}
                runs.append(Run(fake, f"{delivery}-{r}-{half}", args.jobs, args.max_tokens, faults, faulted))
        return summarize(delivery, fake, reference, runs, args.jobs)
    finally:
        worker.terminate()
        worker.wait(120)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        fake.stop()


def summarize(delivery: str, fake: FakeRunPod, reference: Run, runs: list[Run], jobs: int) -> DeliveryResult:
    """Each run's faulted jobs against the reference outputs; their times against the same run's other jobs."""
    completed = intact = streams_intact = 0
    faulted_s, fault_free_s = [], []
    for i in range(jobs):
        expected = reference.result(i)
        if expected is None or "error" in expected:
            raise RuntimeError(f"job {i} failed without faults: {expected}")
        for run in runs:
            if i not in run.faulted:
                fault_free_s.append(run.seconds(i))
                continue
            result = run.result(i)
            done = result is not None and "error" not in result
            completed += done
            intact += done and text_of(result["output"]) == text_of(expected["output"])
            streams_intact += i % 2 == 0 and run.streamed_text(i) == reference.streamed_text(i)
            faulted_s += [run.seconds(i)] if done else []
    return DeliveryResult(
        delivery=delivery,
        jobs=sum(len(run.faulted) for run in runs),
        streamed=sum(1 for run in runs for i in run.faulted if i % 2 == 0),
        completed=completed,
        intact=intact,
        streams_intact=streams_intact,
        refused_take=fake.refused["take"],
        refused_stream=fake.refused["stream"],
        refused_done=fake.refused["done"],
        posts_after_final=fake.posts_after_final,
        fault_free_s_per_job=round(statistics.mean(fault_free_s), 3),
        extra_s_per_job=round(statistics.mean(faulted_s) - statistics.mean(fault_free_s), 3),
    )


def render(results: list[DeliveryResult], args: argparse.Namespace, load: tuple[float, float]) -> str:
    lines = [
        f"{args.rounds} round(s) of two batches of {args.jobs} jobs of {args.max_tokens} tokens, half streamed, "
        f"submitted at once; in each batch {args.refused:.0%} of half its jobs' job-stream and job-done posts "
        f"(and {args.refused_takes:.0%} of job-takes) refused with 503, seed {args.seed}; "
        f"MODEL_NAME {os.environ.get('MODEL_NAME')}; load average before {load[0]:.2f} / after {load[1]:.2f} (1 min)",
        "",
        "| delivery | completed | intact | streams intact | refused take / stream / done | posts after final "
        "| fault-free s/job | extra s/job |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.delivery} | {r.completed}/{r.jobs} | {r.intact}/{r.jobs} | {r.streams_intact}/{r.streamed} | "
            f"{r.refused_take} / {r.refused_stream} / {r.refused_done} | {r.posts_after_final} | "
            f"{r.fault_free_s_per_job:.3f} | {r.extra_s_per_job:+.3f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=60, help="jobs per batch")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--refused", type=float, default=0.3, help="share of stream and result posts refused")
    parser.add_argument("--refused-takes", type=float, default=0.0, help="share of job-take polls refused")
    parser.add_argument("--seed", type=int, default=28, help="the first round's; each next round's is +1")
    parser.add_argument("--rounds", type=int, default=1, help="rounds in which each job is refused once")
    parser.add_argument("--variant", nargs="+", choices=["worker", "stock"], default=["worker", "stock"])


def run(args: argparse.Namespace) -> dict:
    if not os.environ.get("MODEL_NAME"):
        raise SystemExit("python -m bench delivery: set MODEL_NAME (e.g. .models/tiny-llama) to the workers' model")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    load_before = os.getloadavg()[0]
    results = [bench_one(name, args, log_dir) for name in args.variant]
    print(render(results, args, (load_before, os.getloadavg()[0])))
    print(f"\nworker logs: {log_dir}")
    return {"delivery_results": [dataclasses.asdict(r) for r in results]}
