"""Where a cold start went: vLLM's own phase timings, gathered from its engine processes, in one log line.

vLLM times weight loading, torch.compile, CUDA graph capture and engine init inside its engine processes
and only logs them there. `record_vllm_phases()` hands vLLM a logging config (VLLM_LOGGING_CONFIG_PATH, read
by every vLLM process as it starts) that is vLLM's default plus `PhaseRecorder`, a handler that appends
those timings to a file; `StartPhases.read()` collects them after the engine is up. A user's own
VLLM_LOGGING_CONFIG_PATH (or VLLM_CONFIGURE_LOGGING=0) is left alone: the breakdown then shows our phases only.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

from config.environment import user_configures_vllm_logging
from worker.startup.environment import set_variable, unset_variable

log = logging.getLogger(__name__)

# vLLM 0.32's log lines for each phase -> (phase, the regex group with its seconds).
VLLM_PHASE_LINES = {
    # vLLM's default and sharded loaders' line, or the Run:ai streamer's (its own logger) for load_format=runai_*.
    "weight load": re.compile(r"Loading weights took ([\d.]+) seconds|\[RunAI Streamer\] Overall time to stream .*: ([\d.]+)s"),
    "model load": re.compile(r"Model loading took .* and ([\d.]+) seconds"),
    # torch.compile's own line, or the compile share vLLM reports in its engine-init line.
    "compile": re.compile(r"torch\.compile took ([\d.]+) s in total|\(compilation: ([\d.]+) s"),
    "graph capture": re.compile(r"Graph capturing finished in ([\d.]+) secs"),
    "engine init": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
}


class PhaseRecorder(logging.Handler):
    """In vLLM's processes: append each phase timing vLLM logs to `path`, as "phase seconds" lines."""

    def __init__(self, path: str) -> None:
        super().__init__(level=logging.INFO)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            for phase, pattern in VLLM_PHASE_LINES.items():
                match = pattern.search(message)
                if match:
                    seconds = next(group for group in match.groups() if group)
                    with open(self.path, "a") as out:  # one short line: appends from several ranks stay whole
                        out.write(f"{phase}\t{seconds}\n")
        except Exception:  # a timing line must never break vLLM's start
            self.handleError(record)


class StartPhases:
    """The seconds of each phase of one engine build: ours (timed here) and vLLM's (from its processes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.notes: list[str] = []  # what the weights are read from, and how
        self._file: Path | None = None

    def record_vllm_phases(self) -> None:
        """Before the engine starts: have vLLM's processes report their phase timings to us."""
        if user_configures_vllm_logging():
            return
        folder = Path(tempfile.mkdtemp(prefix="worker-start-phases-"))
        self._file = folder / "phases.tsv"
        self._file.touch()
        config_path = folder / "vllm-logging.json"
        config_path.write_text(json.dumps(vllm_logging_config(str(self._file))))
        set_variable("VLLM_LOGGING_CONFIG_PATH", str(config_path))

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = seconds

    def note(self, text: str) -> None:
        self.notes.append(text)

    def read_vllm_phases(self) -> None:
        """After the engine is up: vLLM's phases (the slowest rank's, when several report one)."""
        if self._file is None:
            return
        unset_variable("VLLM_LOGGING_CONFIG_PATH")
        for line in self._file.read_text().splitlines():
            phase, _, seconds = line.partition("\t")
            try:
                self.seconds[phase] = max(self.seconds.get(phase, 0.0), float(seconds))
            except ValueError:
                continue

    def summary(self) -> str:
        """e.g. "download 0.0 s, plan 0.1 s, weight load 2.1 s, compile 20.3 s, ..., engine ready 41.0 s"."""
        seconds = dict(self.seconds)
        if "engine ready" in seconds:
            # What no phase accounts for: starting vLLM's processes and their imports, profiling, KV cache set-up.
            accounted = ("download", "plan", "model load" if "model load" in seconds else "weight load", "engine init")
            seconds["other"] = max(0.0, seconds["engine ready"] - sum(seconds.get(phase, 0.0) for phase in accounted))
        order = ["download", "plan", "weight load", "model load", "compile", "graph capture", "engine init", "other", "engine ready"]
        phases = ", ".join(f"{phase} {seconds[phase]:.1f} s" for phase in order if phase in seconds)
        if not self.notes:
            return phases
        weights_s = seconds.get("weight load", seconds.get("model load"))  # GPU runners time the whole model load
        timed = f" weights_load_s={weights_s:.2f}" if weights_s is not None else ""
        return f"{phases}; {'; '.join(self.notes)}{timed}"


def vllm_logging_config(phases_file: str) -> dict:
    """vLLM's own default logging config (built from the VLLM_LOGGING_* env vars when vLLM was imported), plus
    the PhaseRecorder on the vllm logger."""
    from copy import deepcopy

    from worker.vllm_api import VLLM_DEFAULT_LOGGING_CONFIG

    config = deepcopy(VLLM_DEFAULT_LOGGING_CONFIG)
    config["handlers"]["worker_start_phases"] = {"()": f"{__name__}.PhaseRecorder", "path": phases_file}
    config["loggers"]["vllm"]["handlers"].append("worker_start_phases")
    config["loggers"]["runai_model_streamer"] = {"handlers": ["worker_start_phases"], "level": "INFO"}
    return config
