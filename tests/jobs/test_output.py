"""Chunk coalescing on a scripted sequence of vLLM RequestOutputs (the engine's own types)."""

from __future__ import annotations

import asyncio
import time

from vllm.outputs import CompletionOutput, RequestOutput

from worker.jobs.output import JobClock, stream_chunks


def delta(text: str, *, index: int = 0, finish: str | None = None) -> RequestOutput:
    completion = CompletionOutput(index=index, text=text, token_ids=[1], cumulative_logprob=None, logprobs=None,
                                  finish_reason=finish)
    return RequestOutput(request_id="r", prompt=None, prompt_token_ids=[1, 2, 3], prompt_logprobs=None,
                         outputs=[completion], finished=finish is not None)


async def scripted(outputs, gap_s: float = 0.0):
    for output in outputs:
        if gap_s:
            await asyncio.sleep(gap_s)
        yield output


def collect(outputs, *, interval_s: float, max_chars: int = 10_000, gap_s: float = 0.0):
    async def run():
        return [c async for c in stream_chunks(scripted(outputs, gap_s), JobClock(),
                                               flush_interval_s=interval_s, max_chunk_chars=max_chars)]
    return asyncio.run(run())


def test_first_delta_alone_then_coalesced_then_final_flush():
    outputs = [delta(f"t{i} ") for i in range(100)] + [delta("end", finish="length")]
    chunks = collect(outputs, interval_s=60)
    assert chunks[0]["choices"] == [{"index": 0, "text": "t0 "}]
    assert len(chunks) == 2
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "length"
    assert "".join(c["text"] for ch in chunks for c in ch["choices"]) == "".join(f"t{i} " for i in range(100)) + "end"
    assert final["usage"] == {"prompt_tokens": 3, "completion_tokens": 101, "total_tokens": 104}


def test_interval_bounds_the_number_of_chunks():
    outputs = [delta("x") for _ in range(40)] + [delta("", finish="stop")]
    started = time.perf_counter()
    chunks = collect(outputs, interval_s=0.05, gap_s=0.005)
    elapsed = time.perf_counter() - started
    # One chunk at once, then at most one per interval, plus the final one.
    assert len(chunks) <= 2 + elapsed / 0.05
    assert len(chunks) >= 3
    assert "".join(c["text"] for ch in chunks for c in ch["choices"]) == "x" * 40


def test_size_flushes_early():
    outputs = [delta("abcd") for _ in range(10)] + [delta("", finish="stop")]
    chunks = collect(outputs, interval_s=60, max_chars=8)
    assert [len(c["choices"][0]["text"]) for c in chunks[:-1]] == [4, 8, 8, 8, 8]


def test_zero_interval_sends_every_delta():
    outputs = [delta(str(i)) for i in range(5)] + [delta("", finish="stop")]
    chunks = collect(outputs, interval_s=0)
    assert [c["choices"][0]["text"] for c in chunks] == ["0", "1", "2", "3", "4", ""]


def test_several_choices_keep_their_indices_and_finish_separately():
    outputs = [delta("a", index=0), delta("b", index=1), delta("c", index=1, finish="stop"),
               delta("d", index=0, finish="length")]
    outputs[-1].finished = True
    outputs[2].finished = False
    chunks = collect(outputs, interval_s=60)
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        for c in chunk["choices"]:
            texts[c["index"]] += c["text"]
            if "finish_reason" in c:
                finishes[c["index"]] = c["finish_reason"]
    assert texts == {0: "ad", 1: "bc"}
    assert finishes == {0: "length", 1: "stop"}
