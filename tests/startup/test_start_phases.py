"""The cold-start breakdown: vLLM's phase timings come back from its engine processes, and the log line
names each phase with its seconds."""

from __future__ import annotations

import logging

from worker.startup.start_phases import VLLM_PHASE_LINES, PhaseRecorder, StartPhases

# vLLM 0.32's own format strings and arguments for each phase (its model loader, runner, monitor, engine core).
VLLM_LINES = [
    ("Loading weights took %.2f seconds", (2.51,), "weight load", 2.51),
    ("Model loading took %s GiB memory and %.6f seconds", ("1.2", 3.25), "model load", 3.25),
    ("%storch.compile took %.2f s in total", ("", 20.5), "compile", 20.5),
    ("Graph capturing finished in %.0f secs, took %.2f GiB", (7.0, 0.4), "graph capture", 7.0),
    ("init engine (profile, create kv cache, warmup model) took %.2f s (compilation: %.2f s)", (31.4, 20.5), "engine init", 31.4),
]


def test_each_vllm_phase_line_is_recorded_with_its_seconds(tmp_path):
    path = tmp_path / "phases.tsv"
    recorder = PhaseRecorder(str(path))
    for message, args, _, _ in VLLM_LINES:
        recorder.emit(logging.LogRecord("vllm.x", logging.INFO, __file__, 1, message, args, None))
    recorder.emit(logging.LogRecord("vllm.x", logging.INFO, __file__, 1, "an unrelated line took 9 s", (), None))
    recorded = [line.split("\t") for line in path.read_text().splitlines()]
    # The engine-init line also carries the compile time.
    expected = [(phase, seconds) for _, _, phase, seconds in VLLM_LINES] + [("compile", 20.5)]
    assert sorted((phase, float(value)) for phase, value in recorded) == sorted(expected)
    assert set(VLLM_PHASE_LINES) == {phase for _, _, phase, _ in VLLM_LINES}


def test_summary_names_each_phase_and_what_no_phase_accounts_for():
    phases = StartPhases()
    for phase, seconds in {"download": 1.0, "plan": 0.5, "model load": 3.0, "weight load": 2.5, "compile": 20.0,
                           "engine init": 30.0, "engine ready": 40.0}.items():
        phases.add(phase, seconds)
    assert phases.summary() == (
        "download 1.0 s, plan 0.5 s, weight load 2.5 s, model load 3.0 s, compile 20.0 s, engine init 30.0 s, "
        "other 5.5 s, engine ready 40.0 s"
    )


def test_the_engine_build_reports_vllm_phases_from_its_processes(running_engine, engine_handle):
    phases = engine_handle.start_phases
    # Timed here: download and plan; reported by vLLM's engine processes: weight load and engine init.
    assert {"download", "plan", "weight load", "engine init", "engine ready"} <= set(phases), phases
    assert phases["engine ready"] >= phases["engine init"] > 0


def test_once_the_engine_is_up_its_start_up_heap_is_out_of_the_collectors_reach(running_engine):
    """As `vllm serve` does: a full collection over torch's, vLLM's and the engine's objects stalled the event
    loop ~0.4 s mid-job; frozen, they are never scanned again."""
    import gc

    assert gc.get_freeze_count() > 100_000
