"""LoRA adapters (LORA_MODULES): settings, fetching, sizing, the memory plan, and serving on a real CPU engine.

The engine here is this module's own (the tiny model with a tiny random adapter made by devtools/tiny_lora.py);
the OpenAI routes are reached with the official openai client through the test gateway.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from config.errors import SettingsError
from config.settings import load_settings
from devtools.tiny_lora import make_tiny_lora
from tests.helpers import ROOT, FatalRecorder, job_error, reference_config
from tests.helpers.openai_gateway import OpenAIGateway
from worker.model_files.adapters import (
    Adapter,
    AdapterError,
    adapter_rank,
    ensure_adapters,
    lora_engine_args,
    lora_sizes,
)
from worker.parallel.gpus import GpuInventory
from worker.parallel.layout import ParallelismError, choose_parallelism
from worker.parallel.memory import GB, lora_bytes, plan_memory, resolve_precision
from worker.parallel.shape import ModelShape

ADAPTER = "tiny-adapter"
PROMPT = "Hello, world! How are you"
GREEDY = {"temperature": 0, "max_tokens": 16}


@pytest.fixture(scope="module")
def adapter_dir(tiny_model):
    return make_tiny_lora(ROOT / ".models" / "tiny-lora", base=tiny_model)


# --- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a=/x/a b=org/b",
        "a=/x/a,b=org/b",
        '[{"name": "a", "path": "/x/a"}, {"name": "b", "path": "org/b"}]',
        '["a=/x/a", "b=org/b"]',
    ],
)
def test_lora_modules_take_vllm_serve_forms(value, tiny_model):
    settings = load_settings(model_name=str(tiny_model), lora_modules=value)
    assert [(m.name, m.path) for m in settings.lora_modules] == [("a", "/x/a"), ("b", "org/b")]


@pytest.mark.parametrize(
    "value, says",
    [
        ("a=/x a=/y", "repeated: a"),
        ("just-a-path", "is not name=path"),
        ('[{"name": "a"}]', "Field required"),
        ("[not json", "is not valid JSON"),
        ("base=/x", "served name"),
    ],
)
def test_bad_lora_modules_name_the_setting(value, says):
    with pytest.raises(SettingsError) as error:
        load_settings(model_name="org/m", served_model_name="base", lora_modules=value)
    assert "LORA_MODULES" in str(error.value) and says in str(error.value)


def test_openai_server_args_may_not_set_lora_modules(tiny_model):
    from worker.startup.server_args import server_args

    settings = load_settings(model_name=str(tiny_model), openai_server_args="--lora-modules a=/x")
    with pytest.raises(SettingsError, match="lora_modules \\(use LORA_MODULES\\)"):
        server_args(settings, str(tiny_model))


# --- fetching and sizing ----------------------------------------------------------------------------


def test_local_adapter_is_read_with_its_rank(adapter_dir, tiny_model):
    settings = load_settings(model_name=str(tiny_model), lora_modules=f"mine={adapter_dir}")
    assert ensure_adapters(settings) == [Adapter("mine", str(adapter_dir), 8)]


def test_missing_adapter_folder_names_the_entry(tmp_path, tiny_model):
    settings = load_settings(model_name=str(tiny_model), lora_modules=f"gone={tmp_path / 'nope'}")
    with pytest.raises(AdapterError, match="LORA_MODULES adapter 'gone'.*no such folder"):
        ensure_adapters(settings)


def test_folder_without_adapter_config_is_not_an_adapter(tiny_model):
    with pytest.raises(AdapterError, match="adapter_config.json is missing"):
        adapter_rank(str(tiny_model), "LORA_MODULES adapter 'x'")


def test_hub_adapter_goes_through_the_model_download_and_its_errors(tmp_path, tiny_model):
    # HF_HUB_OFFLINE=1 (conftest) and an empty cache: the model download's own message, naming the adapter.
    settings = load_settings(
        model_name=str(tiny_model), model_cache_dir=str(tmp_path), lora_modules="hubbed=acme/some-adapter"
    )
    with pytest.raises(AdapterError) as error:
        ensure_adapters(settings)
    message = str(error.value)
    assert message.startswith("LORA_MODULES adapter 'hubbed' (acme/some-adapter): Model acme/some-adapter")
    assert "HF_HUB_OFFLINE=1" in message


def test_rank_pattern_counts_toward_the_rank(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 40}}))
    assert adapter_rank(str(tmp_path), "x") == 40


def test_engine_lora_sizes_come_from_the_adapters_unless_set():
    adapters = [Adapter("a", "/a", 8), Adapter("b", "/b", 40)]
    assert lora_engine_args(adapters, {}) == {"enable_lora": True, "max_loras": 2, "max_lora_rank": 64}
    assert lora_engine_args(adapters, {"max_loras": 1, "max_lora_rank": 128}) == {"enable_lora": True}
    assert lora_sizes(adapters, {"max_loras": 1}) == (1, 64)
    assert lora_engine_args([], {}) == {} and lora_sizes([], {}) == (0, 0)
    with pytest.raises(AdapterError, match="max_lora_rank=16 is below.*b \\(rank 40\\)"):
        lora_engine_args(adapters, {"max_lora_rank": 16})


# --- memory plan ------------------------------------------------------------------------------------


def test_lora_memory_of_llama_3_8b_worked_by_hand():
    config = reference_config("meta-llama--Meta-Llama-3-8B")
    shape, precision = ModelShape.from_config(config), resolve_precision(config)
    # Per layer, per rank, per slot: qkv A 3x4096 + B 4096+2x1024, o A 4096 + B 4096,
    # gate/up A 2x4096 + B 2x14336, down A 14336 + B 4096 = 81,920 values; x 32 layers x 2 bytes.
    assert lora_bytes(shape, precision, max_loras=8, max_rank=64) == 81_920 * 64 * 8 * 32 * 2
    # TP 2 splits B of qkv/gate/up and A of o/down: 3x4096+2048+2x512 + 2048+4096 + 2x4096+2x7168 + 7168+4096.
    assert lora_bytes(shape, precision, max_loras=1, max_rank=16, tp=2) == 55_296 * 16 * 32 * 2


def test_adapters_take_kv_cache_room_in_the_plan():
    config = reference_config("meta-llama--Meta-Llama-3-8B")
    shape, precision = ModelShape.from_config(config), resolve_precision(config)
    common = dict(tp=1, gpu_memory_bytes=24 * GB, gpu_memory_utilization=0.9, max_model_len=8192)
    without = plan_memory(shape, precision, **common)
    with_lora = plan_memory(shape, precision, **common, max_loras=8, max_lora_rank=64)
    assert with_lora.lora_bytes_per_gpu > 0
    assert without.kv_cache_bytes_per_gpu - with_lora.kv_cache_bytes_per_gpu == with_lora.lora_bytes_per_gpu
    assert without.fits and not with_lora.fits


def test_start_up_refuses_a_plan_the_adapters_no_longer_fit():
    config = reference_config("meta-llama--Meta-Llama-3-8B")
    plan = dict(
        model_name="meta-llama/Meta-Llama-3-8B",
        model_config=config,
        requested_tp=1,
        pipeline_parallel_size=1,
        gpus=GpuInventory(1, (24 * GB,), ("L4",), None, source="test"),
        precision=resolve_precision(config),
        gpu_memory_utilization=0.9,
        max_model_len=8192,
    )
    assert "LoRA" not in choose_parallelism(**plan).summary
    assert "LoRA 1 x rank 16" in choose_parallelism(**plan, lora=(1, 16)).summary
    with pytest.raises(ParallelismError) as error:
        choose_parallelism(**plan, lora=(8, 64))
    assert "LoRA adapters take 2.7 GB per GPU" in str(error.value)
    assert "fewer or smaller LoRA adapter slots: max_loras=8 x max_lora_rank=64" in str(error.value)


# --- serving on a real engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_worker(loop, tiny_model, adapter_dir):
    from worker.engine.handle import EngineHandle
    from worker.jobs.dispatch import JobHandler

    settings = load_settings(
        model_name=str(tiny_model), enforce_eager=True, lora_modules=f"{ADAPTER}={adapter_dir}"
    )
    handle = EngineHandle(settings, on_fatal=FatalRecorder())
    loop.run_until_complete(handle.get())
    yield settings, handle, JobHandler(settings, handle).handle
    handle.shutdown()
    loop.run_until_complete(asyncio.sleep(0))


@pytest.fixture(scope="module")
def run(loop, lora_worker):
    handler = lora_worker[2]

    def run_job(job_input):
        async def collect():
            return [chunk async for chunk in handler({"id": "lora-job", "input": job_input})]

        return loop.run_until_complete(collect())

    return run_job


@pytest.fixture(scope="module")
def client(loop, lora_worker):
    gateway = OpenAIGateway(lora_worker[2])
    loop.run_until_complete(gateway.start())
    yield openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=180)
    loop.run_until_complete(gateway.stop())


def native_text(run, **extra):
    chunks = run({"prompt": PROMPT, "sampling_params": GREEDY, **extra})
    assert "error" not in chunks[-1], chunks
    return "".join(choice["text"] for chunk in chunks for choice in chunk["choices"])


def test_the_engine_was_sized_from_the_adapter(lora_worker):
    _, handle, _ = lora_worker
    lora_config = handle.engine.vllm_config.lora_config
    assert (lora_config.max_loras, lora_config.max_lora_rank) == (1, 8)


def test_adapter_changes_greedy_output_the_same_streamed_or_not(run):
    base = native_text(run)
    adapted = native_text(run, lora=ADAPTER)
    assert adapted != base
    assert native_text(run, lora=ADAPTER, stream=True) == adapted
    assert native_text(run) == base  # the base model is untouched by the adapter's slot


def test_openai_model_name_picks_the_adapter_as_native_does(run, call, client, lora_worker):
    settings = lora_worker[0]
    adapted = call(client.completions.create, model=ADAPTER, prompt=PROMPT, **GREEDY)
    assert adapted.model == ADAPTER and adapted.choices[0].text == native_text(run, lora=ADAPTER)
    base = call(client.completions.create, model=settings.served_name, prompt=PROMPT, **GREEDY)
    assert base.choices[0].text == native_text(run)
    streamed = call(
        lambda: "".join(c.choices[0].text for c in client.completions.create(
            model=ADAPTER, prompt=PROMPT, stream=True, **GREEDY))
    )
    assert streamed == adapted.choices[0].text
    chat = call(
        client.chat.completions.create, model=ADAPTER, messages=[{"role": "user", "content": PROMPT}], **GREEDY
    )
    native_chat = run({"messages": [{"role": "user", "content": PROMPT}], "sampling_params": GREEDY, "lora": ADAPTER})
    assert chat.choices[0].message.content == native_chat[-1]["choices"][0]["text"]


def test_models_lists_the_adapter_with_its_parent(call, client, lora_worker):
    settings = lora_worker[0]
    models = {m.id: m for m in call(client.models.list).data}
    assert set(models) == {settings.served_name, ADAPTER}
    assert models[ADAPTER].parent == settings.served_name


def test_unknown_adapter_is_a_clean_error_on_both_apis(run, call, client):
    error = job_error(run({"prompt": PROMPT, "lora": "nope"}))
    assert error["type"] == "invalid_input" and error["fields"][0]["field"] == "input.lora"
    assert f"'{ADAPTER}'" in error["message"]
    with pytest.raises(openai.NotFoundError) as raised:
        call(client.completions.create, model="nope", prompt=PROMPT, max_tokens=2)
    assert "nope" in raised.value.response.json()["error"]["message"]
    assert native_text(run, lora=ADAPTER)  # and the next job runs


def test_native_lora_without_adapters_says_none_are_served(run_job):
    error = job_error(run_job({"prompt": PROMPT, "lora": "x"}))
    assert error["type"] == "invalid_input" and "serves none" in error["message"]
