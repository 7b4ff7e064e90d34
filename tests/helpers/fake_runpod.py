"""The worker as RunPod runs it: `python handler.py` against the RunPod API stand-in (devtools/runpod_standin.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.runpod_standin import FakeRunPod, free_port

__all__ = ["FakeRunPod", "WorkerProcess", "free_port", "warmed_worker"]


class WorkerProcess:
    """`python handler.py` (production mode against a FakeRunPod, or with `args`), output captured to a file."""

    def __init__(
        self, root: Path, env: dict[str, str], log_path: Path, args: list[str] | None = None, cwd: Path | None = None
    ) -> None:
        """`cwd`: where it runs (default `root`); the SDK keeps its jobs in progress in a file there."""
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(root / "handler.py"), *(args or [])],
            cwd=cwd or root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # The engine's own processes are in the worker's session: make sure none outlives the test.
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self._log.close()


def warmed_worker(
    root: Path, platform: FakeRunPod, env: dict[str, str], log_path: Path, cwd: Path | None = None, timeout: float = 240
) -> WorkerProcess:
    """A worker against `platform` that has run one short job (so its engine is built); its log's tail in the
    failure when it does not get there in `timeout` seconds."""
    process = WorkerProcess(root, env, log_path, cwd=cwd)
    platform.submit("warm-up", {"prompt": "warm", "sampling_params": {"max_tokens": 4}})
    try:
        platform.wait_for_results(["warm-up"], timeout=timeout)
    except TimeoutError:
        process.stop()
        raise AssertionError(process.log()[-5000:]) from None
    return process
