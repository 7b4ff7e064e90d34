"""Native jobs that ask for logprobs / prompt_logprobs (session engine, tiny model): the whole result and
the streamed chunks carry them, per token, and the chunks joined give the whole result's list."""

from __future__ import annotations

import math

PROMPT = "Tensor parallelism splits"
SAMPLING = {"temperature": 0, "max_tokens": 24, "ignore_eos": True, "logprobs": 3}


def assert_entry(entry: dict, top_n: int) -> None:
    assert set(entry) == {"token", "token_id", "logprob", "top_logprobs"}
    assert isinstance(entry["token_id"], int) and isinstance(entry["token"], str)
    assert entry["logprob"] <= 0 and math.isfinite(entry["logprob"])
    top = entry["top_logprobs"]
    assert len(top) == top_n
    assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
    assert all(set(t) == {"token", "token_id", "logprob"} for t in top)


def test_whole_result_carries_one_logprob_entry_per_generated_token(run_job, engine_handle):
    (result,) = run_job({"prompt": PROMPT, "sampling_params": SAMPLING})
    (choice,) = result["choices"]
    entries = choice["logprobs"]
    assert len(entries) == result["usage"]["completion_tokens"] == SAMPLING["max_tokens"]
    for entry in entries:
        assert_entry(entry, top_n=3)
        # Greedy: the chosen token is the most likely one.
        assert entry["top_logprobs"][0]["token_id"] == entry["token_id"]
    tokenizer = engine_handle.engine.get_tokenizer()
    assert tokenizer.decode([e["token_id"] for e in entries]) == choice["text"]


def test_streamed_logprobs_joined_equal_the_whole_result(run_job):
    job = {"prompt": PROMPT, "sampling_params": SAMPLING}
    (whole,) = run_job(job)
    chunks = run_job({**job, "stream": True})
    assert len(chunks) >= 2
    joined = [entry for chunk in chunks for choice in chunk["choices"] for entry in choice.get("logprobs", [])]
    assert [e["token_id"] for e in joined] == [e["token_id"] for e in whole["choices"][0]["logprobs"]]
    for streamed, entire in zip(joined, whole["choices"][0]["logprobs"]):
        assert streamed["token"] == entire["token"]
        assert math.isclose(streamed["logprob"], entire["logprob"], abs_tol=1e-3)
    assert "".join(c["text"] for chunk in chunks for c in chunk["choices"]) == whole["choices"][0]["text"]


def test_prompt_logprobs_cover_every_prompt_token_once(run_job):
    job = {"prompt": PROMPT, "sampling_params": {"temperature": 0, "max_tokens": 4, "prompt_logprobs": 2}}
    (whole,) = run_job(job)
    entries = whole["prompt_logprobs"]
    assert len(entries) == whole["usage"]["prompt_tokens"]
    assert entries[0]["logprob"] is None  # nothing comes before the first token
    for entry in entries[1:]:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2
    assert "logprobs" not in whole["choices"][0], "only what the job asked for"
    chunks = run_job({**job, "stream": True})
    carrying = [chunk for chunk in chunks if "prompt_logprobs" in chunk]
    assert len(carrying) == 1 and carrying[0] is chunks[0]
    assert [e["token_id"] for e in carrying[0]["prompt_logprobs"]] == [e["token_id"] for e in entries]


def test_logprobs_zero_gives_the_chosen_token_alone(run_job):
    (result,) = run_job({"prompt": PROMPT, "sampling_params": {**SAMPLING, "max_tokens": 4, "logprobs": 0}})
    for entry in result["choices"][0]["logprobs"]:
        assert_entry(entry, top_n=0)
