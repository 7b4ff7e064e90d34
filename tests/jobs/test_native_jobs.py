"""Native jobs on the real vLLM engine (tiny model), through the handler exactly as the SDK calls it."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import job_error

GREEDY = {"temperature": 0, "max_tokens": 40}


def test_non_stream_result_has_text_finish_reason_usage_and_metrics(run_job):
    chunks = run_job({"prompt": "Hello, world!", "sampling_params": GREEDY})
    assert len(chunks) == 1
    result = chunks[0]
    (choice,) = result["choices"]
    assert choice["index"] == 0
    assert isinstance(choice["text"], str) and choice["text"]
    assert choice["finish_reason"] in ("length", "stop")
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    metrics = result["metrics"]
    assert metrics["time_to_first_token_ms"] >= 0
    assert metrics["total_ms"] > 0
    assert metrics["engine_running"] >= 0 and metrics["engine_waiting"] >= 0  # the engine's, as the job went in


def test_stream_yields_deltas_and_a_final_chunk_equal_to_the_whole_text(run_job):
    job = {"prompt": "Tensor parallelism splits", "sampling_params": {**GREEDY, "max_tokens": 64}}
    whole = run_job(job)[0]
    chunks = run_job({**job, "stream": True})

    assert len(chunks) >= 2, "the first delta goes out at once, the rest after it"
    for chunk in chunks[:-1]:
        assert set(chunk) == {"choices"}
        assert all("finish_reason" not in c for c in chunk["choices"])
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert last["usage"] == whole["usage"]
    assert "time_to_first_token_ms" in last["metrics"]
    streamed = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
    # Concatenated deltas equal the non-streamed text: no character split or lost at chunk edges.
    assert streamed == whole["choices"][0]["text"]


def test_stream_of_multibyte_text_never_splits_a_character(run_job):
    job = {"prompt": "東京 日本語 😀 café — ", "sampling_params": {**GREEDY, "max_tokens": 120}}
    whole = run_job(job)[0]["choices"][0]["text"]
    chunks = run_job({**job, "stream": True})
    deltas = [c["text"] for chunk in chunks for c in chunk["choices"]]
    assert "".join(deltas) == whole
    for delta in deltas:
        delta.encode("utf-8")  # a lone surrogate (half a character) would raise here


def test_chat_messages_are_rendered_with_the_model_template(run_job, tiny_model):
    from transformers import AutoTokenizer

    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi."},
    ]
    result = run_job({"messages": messages, "sampling_params": GREEDY})[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert result["usage"]["prompt_tokens"] == len(tokenizer.encode(rendered, add_special_tokens=False))
    # Same text as a prompt gives the same greedy output: the template is the only difference.
    as_prompt = run_job({"prompt": rendered, "sampling_params": GREEDY})[0]
    assert as_prompt["choices"][0]["text"] == result["choices"][0]["text"]


def test_default_max_tokens_is_the_rest_of_the_context_capped(run_job, worker_settings):
    result = run_job({"prompt": "Once upon a time", "sampling_params": {"temperature": 0, "ignore_eos": True}})[0]
    assert result["usage"]["completion_tokens"] == min(
        worker_settings.default_max_tokens, 2048 - result["usage"]["prompt_tokens"]
    )


def test_n_and_seed_give_several_reproducible_choices(run_job):
    job = {"prompt": "Pick a word:", "sampling_params": {"n": 3, "seed": 7, "temperature": 1.0, "max_tokens": 12}}
    first = run_job(job)[0]
    second = run_job(job)[0]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in second["choices"]]
    assert all(c["finish_reason"] in ("length", "stop") for c in first["choices"])
    assert 3 <= first["usage"]["completion_tokens"] <= 3 * 12


def test_stop_string_ends_generation(run_job):
    whole = run_job({"prompt": "Hello", "sampling_params": GREEDY})[0]["choices"][0]["text"]
    stop = whole[5:8]
    assert stop.strip(), "the tiny model's greedy text should have characters to stop on"
    result = run_job({"prompt": "Hello", "sampling_params": {**GREEDY, "stop": [stop]}})[0]["choices"][0]
    assert result["finish_reason"] == "stop"
    assert result["stop_reason"] == stop
    assert stop not in result["text"]
    assert whole.startswith(result["text"])


def test_logit_bias_keys_are_token_ids_as_json_strings(run_job, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    token_id = tokenizer.encode(" tensor", add_special_tokens=False)[0]
    # A large bias on one token makes greedy decoding repeat it: the JSON key reached vLLM as a token id.
    bias = {str(token_id): 100.0}
    result = run_job({"prompt": "Hello", "sampling_params": {"temperature": 0, "max_tokens": 4, "logit_bias": bias}})[0]
    assert result["choices"][0]["text"] == tokenizer.decode([token_id] * 4), result


# Refused once the job reaches the engine: vLLM's own admission checks (out-of-vocabulary token ids), and a
# prompt long enough to be tokenized off the event loop. Field-level validation without the engine: jobs/test_request.py.
ENGINE_REFUSED = [
    ({"prompt": "word " * 5000}, "input.prompt"),
    ({"prompt": "a", "sampling_params": {"stop_token_ids": [10**6]}}, "input.sampling_params.stop_token_ids"),
    ({"prompt": "a", "sampling_params": {"allowed_token_ids": [10**6]}}, "input.sampling_params.allowed_token_ids"),
    ({"prompt": "a", "sampling_params": {"logit_bias": {"1000000": 1.0}}}, "input.sampling_params.logit_bias"),
]


@pytest.mark.parametrize("job_input, field", ENGINE_REFUSED, ids=[field for _, field in ENGINE_REFUSED])
def test_bad_inputs_fail_with_a_structured_error_naming_the_field_and_the_next_job_works(run_job, job_input, field):
    error = job_error(run_job(job_input))
    assert error["type"] == "invalid_input", (job_input, error)
    assert field in [f["field"] for f in error["fields"]], (job_input, error)
    assert error["message"]
    ok = run_job({"prompt": "Still alive?", "sampling_params": GREEDY})[0]
    assert ok["choices"][0]["text"]


def test_sixteen_concurrent_jobs_all_complete_with_full_outputs(loop, job_handler, run_job):
    prompts = [f"Job number {i} says" for i in range(16)]
    solo = {p: run_job({"prompt": p, "sampling_params": GREEDY})[0]["choices"][0]["text"] for p in prompts[:3]}

    async def one(i: int, prompt: str):
        job = {"id": f"concurrent-{i}", "input": {"prompt": prompt, "sampling_params": GREEDY, "stream": i % 2 == 0}}
        return [chunk async for chunk in job_handler(job)]

    async def all_jobs():
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))

    results = loop.run_until_complete(all_jobs())
    for i, (prompt, chunks) in enumerate(zip(prompts, results)):
        assert "error" not in chunks[-1], chunks
        text = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
        assert chunks[-1]["usage"]["completion_tokens"] == 40 or chunks[-1]["choices"][0]["finish_reason"] == "stop"
        if prompt in solo:
            # Batched with 15 others, each job still gets exactly its own greedy output.
            assert text == solo[prompt]


def test_engine_is_built_once_and_shared(loop, engine_handle, run_job):
    run_job({"prompt": "a", "sampling_params": {"max_tokens": 2}})
    first = engine_handle.engine
    run_job({"prompt": "b", "sampling_params": {"max_tokens": 2}})
    assert engine_handle.engine is first
    assert loop.run_until_complete(engine_handle.get()) is first


def test_the_sdk_sees_the_handler_as_a_streaming_generator(job_handler):
    from runpod.serverless.modules.rp_handler import is_generator

    # Otherwise the SDK would treat the generator object itself as the job's output.
    assert is_generator(job_handler)


def test_jobs_waiting_on_a_failed_start_all_get_the_reason_and_the_worker_exits_once(loop, worker_settings, tmp_path):
    from tests.helpers import FatalRecorder
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    fatal = FatalRecorder()
    settings = worker_settings.model_copy(update={"model_name": str(tmp_path / "no-such-model")})
    jobs = JobHandler(settings, EngineHandle(settings, on_fatal=fatal))

    async def run(job_id):
        return [chunk async for chunk in jobs.handle({"id": job_id, "input": {"prompt": "hi"}})]

    async def three_at_once():
        return await asyncio.gather(*(run(f"job-{i}") for i in range(3)))

    for chunks in loop.run_until_complete(three_at_once()):
        error = job_error(chunks)
        assert error["type"] == "engine_start_failed" and "no-such-model" in error["message"], error
    assert len(fatal.reasons) == 1, "one failed build, one exit"


class NamedTemplatesTokenizer:
    """A tokenizer shaped like those that keep several chat templates by name (Hermes-2-Pro, Command-R),
    or, with chat_template None, like Mistral's, which has none: only what build_engine_request uses."""

    def __init__(self, chat_template):
        self.chat_template = chat_template
        self.rendered_with: dict = {}

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, **kwargs):
        self.rendered_with = kwargs
        return messages[-1]["content"]

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]


def test_chat_jobs_work_with_named_or_missing_chat_templates():
    from worker.jobs.request import build_engine_request, parse_job_input

    job = parse_job_input({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"flavour": "x"}})
    named = NamedTemplatesTokenizer({"default": "{{ messages[0].content }}{{ flavour }}", "tool_use": "{{ tools }}"})
    request = build_engine_request(job, named, max_model_len=64, default_max_tokens=8)
    assert request.prompt_token_ids == [ord("h"), ord("i")]
    assert named.rendered_with == {"flavour": "x"}, "a variable the default template reads is passed"
    for template in (None, {"tool_use": "{{ tools }}"}):
        tokenizer = NamedTemplatesTokenizer(template)
        build_engine_request(job, tokenizer, max_model_len=64, default_max_tokens=8)
        assert tokenizer.rendered_with == {}, "nothing to read the variable: dropped, as vLLM's server drops it"
    plain = parse_job_input({"messages": [{"role": "user", "content": "hi"}]})
    build_engine_request(plain, NamedTemplatesTokenizer(None), max_model_len=64, default_max_tokens=8)
