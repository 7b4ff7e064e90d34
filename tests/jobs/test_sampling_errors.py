"""Every check vLLM 0.32 makes of a user-settable SamplingParams field names that field in the job error.

The cases follow vllm/sampling_params.py: SamplingParams.__post_init__ / _verify_args / _verify_greedy_sampling
(when the worker builds the request: no engine needed), StructuredOutputsParams.__post_init__ (when the input
is parsed), and SamplingParams.verify / update_from_tokenizer (when the engine admits the request: run on the
session engine). Checks on fields a job cannot set (extra_args, stream_interval, detokenize,
logprob_token_ids, prompt_logprob_*, trace_decode_token_ids, thinking_token_budget) and those for setups the
worker does not run (speculative decoding, diffusion models, a request-level structured-output backend)
are left out; so are checks the worker's own bounds or schema make first (n > 16, logprobs > 20, types).
"""

from __future__ import annotations

import pytest

from tests.helpers import job_error

DEEP_SCHEMA = {"type": "array", "items": {}}
for _ in range(80):
    DEEP_SCHEMA = {"type": "array", "items": DEEP_SCHEMA}

# (sampling_params, the field the error must name) for checks made as SamplingParams is built.
BUILD_CHECKS = [
    ({"n": 0}, "n"),  # _verify_num_sequences
    ({"n": 2, "temperature": 0.0}, "n"),  # _verify_greedy_sampling
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 5, "max_tokens": 3}, "min_tokens"),
    ({"logprobs": -2}, "logprobs"),
    ({"prompt_logprobs": -2}, "prompt_logprobs"),
    ({"stop": [""]}, "stop"),  # was named "n": the first field name found anywhere in the message
    ({"stop": ""}, "stop"),
    ({"bad_words": [""]}, "bad_words"),
    # The message echoes the values: a field's name among them must not win.
    ({"bad_words": ["", "presence_penalty"]}, "bad_words"),
    # Built as the input is parsed: StructuredOutputsParams checks itself.
    ({"structured_outputs": {"json": {"type": "object"}, "regex": "a+"}}, "structured_outputs"),
    ({"structured_outputs": {}}, "structured_outputs"),
]

# Checked by the engine on admission (SamplingParams.verify, update_from_tokenizer).
ADMISSION_CHECKS = [
    ({"logprobs": -1}, "logprobs"),  # the whole vocabulary: above the engine's max_logprobs
    ({"prompt_logprobs": -1}, "prompt_logprobs"),
    ({"stop_token_ids": [10**6]}, "stop_token_ids"),
    ({"logit_bias": {"1000000": 1.0}}, "logit_bias"),
    ({"allowed_token_ids": []}, "allowed_token_ids"),
    ({"allowed_token_ids": [10**6]}, "allowed_token_ids"),
    ({"bad_words": [f"word{i}" for i in range(200)]}, "bad_words"),  # above VLLM_MAX_NUM_BAD_WORDS
    ({"structured_outputs": {"grammar": "  "}}, "structured_outputs"),
    ({"structured_outputs": {"json": "  "}}, "structured_outputs"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a\x00"}}, "structured_outputs"),
    ({"structured_outputs": {"structural_tag": " "}}, "structured_outputs"),
    # vLLM's message names no field: the error says sampling_params rather than guess one ("n" used to win).
    ({"structured_outputs": {"choice": []}}, None),
    ({"structured_outputs": {"json": DEEP_SCHEMA}}, None),
]


def field_of(sampling_params_field: str | None) -> str:
    return f"input.sampling_params.{sampling_params_field}" if sampling_params_field else "input.sampling_params"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def build_error(job_input: dict, tokenizer) -> dict:
    from worker.jobs.request import build_engine_request, parse_job_input
    from worker.requests.errors import JobError

    with pytest.raises(JobError) as raised:
        build_engine_request(parse_job_input(job_input), tokenizer, max_model_len=2048, default_max_tokens=8)
    return {"type": raised.value.type, "fields": [f.field for f in raised.value.fields], "message": raised.value.message}


@pytest.mark.parametrize(("sampling_params", "field"), BUILD_CHECKS, ids=[repr(c[0])[:60] for c in BUILD_CHECKS])
def test_a_check_made_as_the_request_is_built_names_its_field(tokenizer, sampling_params, field):
    error = build_error({"prompt": "Hello", "sampling_params": sampling_params}, tokenizer)
    assert error["type"] == "invalid_input"
    assert error["fields"] == [field_of(field)], error
    assert "parameter=" not in error["message"], "vLLM's parameter/value suffix is not part of the message"


@pytest.mark.parametrize(("sampling_params", "field"), ADMISSION_CHECKS, ids=[repr(c[0])[:60] for c in ADMISSION_CHECKS])
def test_a_check_made_as_the_engine_admits_the_request_names_its_field(run_job, sampling_params, field):
    error = job_error(run_job({"prompt": "Hello", "sampling_params": {"max_tokens": 4, **sampling_params}}))
    assert error["type"] == "invalid_input", error
    assert [f["field"] for f in error["fields"]] == [field_of(field)], error


def test_field_names_match_whole_words_only():
    from worker.jobs.request import sampling_error
    from worker.vllm_api import VLLMValidationError

    cases = {
        "stop cannot contain an empty string.": "stop",
        "min_tokens must be less than or equal to max_tokens=3, got 5.": "min_tokens",
        "token_id(s) [9] in stop_token_ids contain out-of-vocab token ids.": "stop_token_ids",
        "The JSON schema is nested too deeply": None,
        "Choice '[]' cannot be an empty list": None,
    }
    for message, field in cases.items():
        assert sampling_error(VLLMValidationError(message)).fields[0].field == field_of(field), message
    # vLLM's own parameter wins over anything the message says.
    named = sampling_error(VLLMValidationError("stop and n are wrong", parameter="top_p"))
    assert named.fields[0].field == "input.sampling_params.top_p"
