"""worker/jobs/request.py without the engine: job input -> validated job -> vLLM request, on the tiny model's
real tokenizer. Every bad input is invalid_input naming the field (the end-to-end path: test_native_jobs.py)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from devtools.tiny_model import make_tiny_model
from tests.helpers import TINY_MODEL_DIR
from worker.jobs.request import build_engine_request, parse_job_input
from worker.requests.errors import JobError

BAD_INPUTS = [
    ("not an object", "input"),
    ({}, "input"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "input"),
    ({"prompt": 5}, "input.prompt"),
    ({"prompt": ""}, "input.prompt"),
    ({"prompt": "a", "sampling_params": {"temprature": 0.5}}, "input.sampling_params.temprature"),
    ({"prompt": "a", "sampling_params": {"temperature": -1}}, "input.sampling_params.temperature"),
    ({"prompt": "a", "sampling_params": {"top_p": 0}}, "input.sampling_params.top_p"),
    ({"prompt": "a", "sampling_params": {"max_tokens": "ten"}}, "input.sampling_params.max_tokens"),
    ({"prompt": "a", "sampling_params": {"max_tokens": 10**6}}, "input.sampling_params.max_tokens"),
    ({"prompt": "a", "sampling_params": {"n": 1000}}, "input.sampling_params.n"),
    ({"prompt": "a", "sampling_params": {"stop": ["x"] * 1000}}, "input.sampling_params.stop"),
    ({"prompt": "a", "stream": "yes"}, "input.stream"),
    ({"prompt": "a", "unknown": 1}, "input.unknown"),
    ({"messages": []}, "input.messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "input.messages[0].role"),
    ({"messages": [{"role": "user"}]}, "input.messages[0].content"),
    ({"prompt": "word " * 3000}, "input.prompt"),
    # A job may not bring its own template: it would run arbitrary Jinja on the worker.
    (
        {"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"chat_template": "{{ 'x' }}"}},
        "input.chat_template_kwargs",
    ),
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(make_tiny_model(TINY_MODEL_DIR))


@pytest.fixture(scope="module")
def max_model_len() -> int:
    return json.loads((make_tiny_model(TINY_MODEL_DIR) / "config.json").read_text())["max_position_embeddings"]


def build(job_input, tokenizer, max_model_len):
    return build_engine_request(parse_job_input(job_input), tokenizer, max_model_len=max_model_len, default_max_tokens=16)


@pytest.mark.parametrize("job_input, field", BAD_INPUTS, ids=[f"{i}-{field}" for i, (_, field) in enumerate(BAD_INPUTS)])
def test_bad_input_is_invalid_input_naming_the_field(job_input, field, tokenizer, max_model_len):
    with pytest.raises(JobError) as caught:
        build(job_input, tokenizer, max_model_len)
    error = caught.value
    assert error.type == "invalid_input", error
    assert field in [f.field for f in error.fields], error
    assert error.message and field in error.message


def test_a_valid_job_becomes_a_request_with_the_rest_of_the_context_capped(tokenizer, max_model_len):
    request = build({"prompt": "Hello there", "sampling_params": {"temperature": 0}}, tokenizer, max_model_len)
    assert request.prompt_token_ids == tokenizer.encode("Hello there")
    assert request.sampling_params.max_tokens == 16
    assert request.sampling_params.temperature == 0
