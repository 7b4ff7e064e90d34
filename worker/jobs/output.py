"""vLLM outputs -> job output chunks.

Each chunk a job yields is one HTTP POST to RunPod's stream endpoint, so deltas are coalesced:
the first goes out at once (time to first token), later ones at most every `flush_interval_s`
or once `max_chunk_chars` are waiting, and the last one flushes everything with finish_reason,
usage and metrics. vLLM's incremental detokenizer only emits whole characters, and chunks only
concatenate its deltas, so a chunk never splits a multi-byte UTF-8 character.

When a job asks for `logprobs` (or `prompt_logprobs`), each choice carries "logprobs": one entry per
generated token, {"token", "token_id", "logprob", "top_logprobs": [{"token", "token_id", "logprob"}]};
a stream's chunks carry the entries of their own tokens, so joined they equal the whole result's list.
"prompt_logprobs" (the same entries, one per prompt token; the first has no logprob) comes once: in the
first chunk of a stream, or in the whole result.

Per token this does a clock read and a list append: no validation, no logging, no I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from worker.engine.load import EngineLoad
from worker.vllm_api import Logprob, RequestOutput


@dataclass
class JobClock:
    """Times of a job's life, for the per-job metrics in its final output."""

    received: float = field(default_factory=time.perf_counter)
    started: float | None = None  # the engine was ready and the request went in
    engine_wait_s: float = 0.0  # time spent waiting for the engine to start (cold start)
    first_token: float | None = None
    last_token: float | None = None
    engine_load: EngineLoad | None = None  # the engine's running/waiting requests as the job went in

    def engine_ready(self, waited_s: float, load: EngineLoad | None = None) -> None:
        self.started = time.perf_counter()
        self.engine_wait_s = waited_s
        self.engine_load = load

    def token_seen(self) -> None:
        now = time.perf_counter()
        if self.first_token is None:
            self.first_token = now
        self.last_token = now


@dataclass
class _Choice:
    pending: list[str] = field(default_factory=list)
    pending_chars: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    reported_finish: bool = False
    logprobs: list[dict[str, Any]] | None = None  # None: the job did not ask for them


def token_logprobs(token_ids: Any, logprobs: Any, top_n: int) -> list[dict[str, Any]]:
    """vLLM's per-position logprobs (a dict of token id -> Logprob, the chosen token among them) as entries
    of the chosen token with its `top_n` most likely alternatives; a position without logprobs (the
    prompt's first token) has logprob None."""
    entries = []
    for token_id, position in zip(token_ids, logprobs):
        chosen: Logprob | None = position.get(token_id) if position else None
        top = sorted(((lp.rank or 0, tid, lp) for tid, lp in (position or {}).items() if (lp.rank or 0) <= top_n))
        entries.append(
            {
                "token": chosen.decoded_token if chosen else None,
                "token_id": token_id,
                "logprob": chosen.logprob if chosen else None,
                "top_logprobs": [{"token": lp.decoded_token, "token_id": tid, "logprob": lp.logprob} for _, tid, lp in top],
            }
        )
    return entries


def prompt_logprobs(output: RequestOutput, top_n: int | None) -> list[dict[str, Any]] | None:
    if top_n is None or output.prompt_logprobs is None:
        return None
    return token_logprobs(output.prompt_token_ids or (), output.prompt_logprobs, top_n)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def job_metrics(clock: JobClock, completion_tokens: int, last: RequestOutput | None) -> dict[str, Any]:
    """Per-job timing: time to first token, generation speed, and time queued inside the engine."""
    metrics: dict[str, Any] = {}
    started = clock.started or clock.received
    if clock.engine_wait_s > 0.001:
        # Only a job that arrived while the engine was still starting (cold start) waited here.
        metrics["engine_start_wait_ms"] = round(clock.engine_wait_s * 1000, 2)
    if clock.first_token is not None:
        metrics["time_to_first_token_ms"] = round((clock.first_token - started) * 1000, 2)
        generation_s = (clock.last_token or clock.first_token) - clock.first_token
        if completion_tokens > 1 and generation_s > 0:
            # The first token is prefill; speed counts the decode steps after it.
            metrics["generation_tokens_per_s"] = round((completion_tokens - 1) / generation_s, 1)
    stats = getattr(last, "metrics", None)
    if stats is not None and getattr(stats, "scheduled_ts", 0) and getattr(stats, "queued_ts", 0):
        metrics["queue_ms"] = round(max(0.0, stats.scheduled_ts - stats.queued_ts) * 1000, 2)
    metrics.update(engine_load_metrics(clock))
    metrics["total_ms"] = round((time.perf_counter() - clock.received) * 1000, 2)
    return metrics


def engine_load_metrics(clock: JobClock) -> dict[str, int]:
    """The engine's running and waiting requests when the job went in (its latest step's), if known."""
    if clock.engine_load is None:
        return {}
    return {"engine_running": clock.engine_load.running, "engine_waiting": clock.engine_load.waiting}


async def stream_chunks(
    outputs: AsyncIterator[RequestOutput],
    clock: JobClock,
    *,
    flush_interval_s: float,
    max_chunk_chars: int,
    top_logprobs: int | None = None,
    top_prompt_logprobs: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Coalesce DELTA-mode RequestOutputs into job chunks {"choices": [{"index", "text", ...}]}.
    `top_logprobs` / `top_prompt_logprobs`: the job's sampling_params logprobs / prompt_logprobs."""
    choices: dict[int, _Choice] = {}
    prompt_tokens = 0
    last_flush = None  # None until the first chunk has gone out
    last: RequestOutput | None = None
    prompt_entries = None

    async for output in outputs:
        # The per-token path: keep it to a clock read and a few appends.
        now = time.perf_counter()
        last = output
        if clock.first_token is None:
            clock.first_token = now
            prompt_tokens = len(output.prompt_token_ids or ())
            prompt_entries = prompt_logprobs(output, top_prompt_logprobs)
        clock.last_token = now
        waiting_chars, newly_finished = _take(choices, output, top_logprobs)
        if output.finished:
            break
        if (
            last_flush is None
            or now - last_flush >= flush_interval_s
            or waiting_chars >= max_chunk_chars
            or newly_finished
        ):
            chunk = _drain(choices)
            if chunk["choices"]:
                last_flush = now
                if prompt_entries is not None:
                    chunk["prompt_logprobs"], prompt_entries = prompt_entries, None
                yield chunk

    final = _drain(choices, final=True)
    if prompt_entries is not None:
        final["prompt_logprobs"] = prompt_entries
    completion_tokens = sum(c.completion_tokens for c in choices.values())
    final["usage"] = usage(prompt_tokens, completion_tokens)
    final["metrics"] = job_metrics(clock, completion_tokens, last)
    yield final


def _take(choices: dict[int, _Choice], output: RequestOutput, top_logprobs: int | None) -> tuple[int, bool]:
    """One output's deltas added to their choices: (the characters now waiting to be sent, whether a choice
    finished with it)."""
    waiting_chars = 0
    newly_finished = False
    for completion in output.outputs:
        choice = choices.get(completion.index)
        if choice is None:
            choice = choices[completion.index] = _Choice()
        if completion.text:
            choice.pending.append(completion.text)
            choice.pending_chars += len(completion.text)
        if top_logprobs is not None and completion.logprobs is not None:
            entries = token_logprobs(completion.token_ids, completion.logprobs, top_logprobs)
            choice.logprobs = (choice.logprobs or []) + entries
        choice.completion_tokens += len(completion.token_ids)
        if completion.finish_reason is not None:
            choice.finish_reason = completion.finish_reason
            choice.stop_reason = completion.stop_reason
            newly_finished = True
        waiting_chars += choice.pending_chars
    return waiting_chars, newly_finished


def _drain(choices: dict[int, _Choice], final: bool = False) -> dict[str, Any]:
    out = []
    for index in sorted(choices):
        choice = choices[index]
        report_finish = choice.finish_reason is not None and not choice.reported_finish
        if not choice.pending and not report_finish and not final:
            continue
        item: dict[str, Any] = {"index": index, "text": "".join(choice.pending)}
        if choice.logprobs is not None:
            item["logprobs"], choice.logprobs = choice.logprobs, []
        if report_finish:
            item["finish_reason"] = choice.finish_reason
            if choice.stop_reason is not None:
                item["stop_reason"] = choice.stop_reason
            choice.reported_finish = True
        if report_finish or choice.pending or final:
            out.append(item)
        choice.pending.clear()
        choice.pending_chars = 0
    return {"choices": out}


def final_result(
    output: RequestOutput, clock: JobClock, top_logprobs: int | None = None, top_prompt_logprobs: int | None = None
) -> dict[str, Any]:
    """A non-streamed job's whole result from one FINAL_ONLY RequestOutput."""
    clock.token_seen()
    choices = []
    completion_tokens = 0
    for completion in sorted(output.outputs, key=lambda c: c.index):
        item: dict[str, Any] = {
            "index": completion.index,
            "text": completion.text,
            "finish_reason": completion.finish_reason,
        }
        if completion.stop_reason is not None:
            item["stop_reason"] = completion.stop_reason
        if top_logprobs is not None and completion.logprobs is not None:
            item["logprobs"] = token_logprobs(completion.token_ids, completion.logprobs, top_logprobs)
        choices.append(item)
        completion_tokens += len(completion.token_ids)
    prompt_tokens = len(output.prompt_token_ids or [])
    metrics = job_metrics(clock, completion_tokens, output)
    # FINAL_ONLY sees no individual tokens: take first-token timing from the engine's stats.
    stats = output.metrics
    if stats is not None and stats.first_token_latency:
        metrics["time_to_first_token_ms"] = round(stats.first_token_latency * 1000, 2)
        decode_s = (stats.last_token_ts - stats.first_token_ts) if stats.last_token_ts else 0
        if completion_tokens > 1 and decode_s > 0:
            metrics["generation_tokens_per_s"] = round((completion_tokens - 1) / decode_s, 1)
    else:
        metrics.pop("time_to_first_token_ms", None)
        metrics.pop("generation_tokens_per_s", None)
    result = {"choices": choices, "usage": usage(prompt_tokens, completion_tokens), "metrics": metrics}
    prompt_entries = prompt_logprobs(output, top_prompt_logprobs)
    if prompt_entries is not None:
        result["prompt_logprobs"] = prompt_entries
    return result


async def coalesce_events(
    events: AsyncIterator[str], *, flush_interval_s: float, max_chars: int, immediate: int = 1
) -> AsyncIterator[str]:
    """Join text events (e.g. SSE "data: ...\n\n") into chunks by the same rule as `stream_chunks`:
    the first `immediate` events at once, then at most one chunk per interval or per `max_chars`,
    and whatever is left when the stream ends. Joined SSE events are still valid SSE."""
    pending: list[str] = []
    pending_chars = 0
    last_flush = 0.0
    sent = 0
    async for event in events:
        pending.append(event)
        pending_chars += len(event)
        now = time.perf_counter()
        if sent < immediate or now - last_flush >= flush_interval_s or pending_chars >= max_chars:
            yield "".join(pending)
            pending.clear()
            pending_chars = 0
            last_flush = now
            sent += 1
    if pending:
        yield "".join(pending)


async def until(deadline: float, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`items`, raising TimeoutError at the loop-time `deadline`; bounded per await, so the deadline
    never fires in the consumer's code between two items."""
    iterator = aiter(items)
    while True:
        async with asyncio.timeout_at(deadline):
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
        yield item
