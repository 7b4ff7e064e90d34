"""Tensor-parallel rules, GPU discovery and the start-up decision (plan_parallelism)."""

from __future__ import annotations

import json

import pytest

from config.settings import load_settings
from tests.helpers import (
    MODEL_CONFIGS,
    QUANTIZED_CONFIGS,
    QUANTIZED_VALID_SIZES,
    ROOT,
    TOPOLOGY,
    VALID_SIZES,
    reference_config,
)
from tests.helpers.fake_hub import write_hub_cache
from tests.helpers.fake_nvml import FakeNvml, install
from worker.model_files.config_json import ModelConfigError, read_model_config
from worker.parallel import gpus as gpus_module
from worker.parallel.gpus import GpuInventory, select_visible, visible_gpus
from worker.parallel.layout import ParallelismError, plan_parallelism
from worker.parallel.memory import GB
from worker.parallel.rules import tp_problem, valid_tp_sizes
from worker.parallel.shape import ModelShape
from worker.parallel.topology import parse_topo_matrix

config = reference_config


def pod(count: int, memory_gb: float = 80, topo: str | None = None) -> GpuInventory:
    links = parse_topo_matrix((TOPOLOGY / topo).read_text()) if topo else None
    return GpuInventory(count, (int(memory_gb * GB),) * count, ("NVIDIA H100 80GB HBM3",) * count, links, "nvml")


CPU = GpuInventory(0)


def settings(model: str = "org/model", **overrides):
    return load_settings(model_name=model, **overrides)


def test_every_reference_config_is_covered():
    assert {p.stem for p in MODEL_CONFIGS.glob("*.json")} == set(VALID_SIZES)
    assert {p.stem for p in QUANTIZED_CONFIGS.glob("*.json")} == set(QUANTIZED_VALID_SIZES)


@pytest.mark.parametrize("name, sizes", [*VALID_SIZES.items(), *QUANTIZED_VALID_SIZES.items()])
def test_valid_tp_sizes(name, sizes):
    assert valid_tp_sizes(config(name)) == sizes


def test_quantization_problem_names_the_scale():
    fp8 = ModelShape.from_config(config("Qwen--Qwen3-235B-A22B-FP8"))
    assert tp_problem(fp8, 8) is None  # 192 per GPU: vLLM refines the 128x128 blocks to 64x64
    assert tp_problem(fp8, 32) == (
        "the expert MLP per GPU 48 (1536 / 32) is not a multiple of the FP8 block size 128, "
        "and the finer scale vLLM falls back to would be 16 wide (under 32)"
    )
    awq = ModelShape.from_config(config("Qwen2.5-72B-AWQ-unpadded-mlp"))
    assert tp_problem(awq, 2) == "the MLP per GPU 14784 (29568 / 2) is not a multiple of the AWQ group size 128"
    assert "awq groups of 128" in awq.describe() and "fp8 blocks 128x128" in fp8.describe()


def test_fp8_blocks_without_a_finer_fallback():
    # compressed-tensors FP8 MoE has no block refinement (validate_fp8_block_shape_moe always applies):
    # 1536 / 8 = 192 is not a multiple of 128, so TP 8 and beyond are out.
    qwen = config("Qwen--Qwen3-235B-A22B-FP8")
    block = {"weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]}}
    compressed = {**qwen, "quantization_config": {"quant_method": "compressed-tensors",
                                                  "config_groups": {"group_0": {"targets": ["Linear"], **block}}}}
    assert valid_tp_sizes(compressed) == [1, 2, 4]
    assert tp_problem(ModelShape.from_config(compressed), 8) == (
        "the expert MLP per GPU 192 (1536 / 8) is not a multiple of the FP8 block size 128"
    )
    # A dense FP8 model: down_proj's input per GPU must hold whole blocks (Qwen3-32B-FP8: MLP 25600 = 128 x 200).
    dense = {"hidden_size": 5120, "num_attention_heads": 64, "num_key_value_heads": 8, "num_hidden_layers": 64,
             "head_dim": 128, "intermediate_size": 25600, "quantization_config": qwen["quantization_config"]}
    assert valid_tp_sizes(dense) == [1, 2, 4, 8]  # 25600 / 16 = 1600 = 12.5 blocks
    assert valid_tp_sizes({**dense, "quantization_config": None}) == [1, 2, 4, 8, 16, 32, 64]


def test_awq_group_sizes():
    awq = config("Qwen2.5-72B-AWQ-unpadded-mlp")
    # The published checkpoint pads the MLP to 29696 = 128 x 232 = 128 x 2^3 x 29 for this: TP 2, 4, 8 work.
    assert valid_tp_sizes({**awq, "intermediate_size": 29696}) == [1, 2, 4, 8]
    gptq = {**awq, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}}
    assert valid_tp_sizes(gptq) == [1]
    per_channel = {**awq, "quantization_config": {**awq["quantization_config"], "group_size": -1}}
    assert valid_tp_sizes(per_channel) == valid_tp_sizes(config("Qwen--Qwen2.5-72B-Instruct"))
    # Experts: Marlin needs whole groups per GPU, else MoE WNA16 halves the group down to 32.
    moe = {"hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16, "num_hidden_layers": 24,
           "num_experts": 60, "moe_intermediate_size": 1408, "quantization_config": awq["quantization_config"]}
    # 1408 = 2^7 x 11 per GPU: 1408 whole groups; 704 -> gcd(128, 704, 2048) = 64; 352 -> 32; 176 -> 16, out
    assert valid_tp_sizes(moe) == [1, 2, 4]


def test_tp_problem_names_the_rule():
    qwen = ModelShape.from_config(config("Qwen--Qwen2.5-7B-Instruct"))
    assert tp_problem(qwen, 8) == "28 attention heads don't split 8 ways"
    assert tp_problem(qwen, 7) == "4 KV heads neither split 7 ways nor replicate evenly over 7 GPUs"
    assert tp_problem(qwen, 28) == "the MLP size 18944 doesn't split 28 ways"
    assert tp_problem(qwen, 4) is None


def test_kv_heads_replicate_evenly():
    base = {"hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 2, "intermediate_size": 3072}
    assert valid_tp_sizes({**base, "num_key_value_heads": 3}) == [1, 3, 6, 12]  # 2 and 4 break 3 KV heads
    assert valid_tp_sizes({**base, "num_key_value_heads": 1}) == [1, 2, 3, 4, 6, 12]  # MQA replicates anywhere
    assert valid_tp_sizes(base) == [1, 2, 3, 4, 6, 12]  # no num_key_value_heads: one KV head per head


def test_moe_expert_width_must_divide():
    # Qwen-MoE style: the expert MLP (moe_intermediate_size) and the shared expert are split by TP.
    moe = {"hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16, "num_hidden_layers": 24,
           "intermediate_size": 5632, "num_experts": 60, "moe_intermediate_size": 1408,
           "shared_expert_intermediate_size": 5632}
    assert valid_tp_sizes(moe) == [1, 2, 4, 8, 16]
    assert valid_tp_sizes({**moe, "moe_intermediate_size": 1400}) == [1, 2, 4, 8]  # 1400 = 2^3 x 175
    assert "expert MLP size 1400" in tp_problem(ModelShape.from_config({**moe, "moe_intermediate_size": 1400}), 16)


# --- start-up decision -------------------------------------------------------------------------------


def test_auto_picks_largest_valid_size_within_gpus():
    plan = plan_parallelism(settings("meta-llama/Meta-Llama-3-70B"), config("meta-llama--Meta-Llama-3-70B"), pod(8))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (8, 1)
    assert plan.summary.startswith("TENSOR_PARALLEL_SIZE=auto -> 8")
    assert "largest size meta-llama/Meta-Llama-3-70B allows within 8 visible GPU(s)" in plan.summary
    assert plan.memory is not None and plan.memory.fits
    assert plan.warnings == ["GPU interconnect unknown (topology not readable): cannot check for NVLink."]


def test_auto_says_why_it_uses_fewer_gpus():
    plan = plan_parallelism(settings("Qwen/Qwen2.5-7B-Instruct"), config("Qwen--Qwen2.5-7B-Instruct"),
                            pod(8, topo="h100-sxm-8x.txt"))
    assert plan.tensor_parallel_size == 4
    assert "(8: 28 attention heads don't split 8 ways)" in plan.summary
    assert plan.warnings == [
        "Using 4 of 8 GPUs (TENSOR_PARALLEL_SIZE=4 x PIPELINE_PARALLEL_SIZE=1); "
        "Qwen/Qwen2.5-7B-Instruct allows TP sizes 1, 2, 4."
    ]
    smol = plan_parallelism(settings("s"), config("HuggingFaceTB--SmolLM2-135M-Instruct"), pod(8))
    assert smol.tensor_parallel_size == 3


def test_explicit_size_invalid_for_the_model():
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size="8"),
                         config("Qwen--Qwen2.5-7B-Instruct"), pod(8))
    message = str(caught.value)
    for part in ("TENSOR_PARALLEL_SIZE=8", "Qwen/Qwen2.5-7B-Instruct", "28 attention heads", "4 KV heads",
                 "MLP 18944", "8 visible GPU(s)", "valid sizes that fit: 1, 2, 4"):
        assert part in message
    assert isinstance(caught.value, ValueError)


def test_explicit_size_larger_than_the_gpus():
    with pytest.raises(ParallelismError, match=r"needs 16 GPUs.*4 visible GPU\(s\).*fit: 1, 2, 4 \(all valid"):
        plan_parallelism(settings("m", tensor_parallel_size=16), config("meta-llama--Meta-Llama-3-70B"), pod(4))


def test_explicit_valid_size():
    plan = plan_parallelism(settings("m", tensor_parallel_size=4), config("meta-llama--Meta-Llama-3-70B"),
                            pod(4, topo="pcie-4x.txt"))
    assert plan.tensor_parallel_size == 4 and plan.summary.startswith("TENSOR_PARALLEL_SIZE=4 (set)")
    # The guide's warning: this TP group talks over PCIe.
    assert len(plan.warnings) == 1 and "PCIe, not NVLink" in plan.warnings[0]


def test_nvlink_pod_has_no_interconnect_warning():
    plan = plan_parallelism(settings("m"), config("meta-llama--Meta-Llama-3-70B"), pod(8, topo="h100-sxm-8x.txt"))
    assert plan.warnings == []


def test_cpu_backend_auto_is_one():
    plan = plan_parallelism(settings("m"), config("meta-llama--Meta-Llama-3-70B"), CPU)
    assert plan.tensor_parallel_size == 1 and plan.memory is None
    assert "no GPUs visible" in plan.summary


def test_cpu_backend_checks_explicit_size_against_the_model_only():
    # 32-way TP on a machine without GPUs: vLLM's CPU backend runs it as processes; memory is not checked.
    plan = plan_parallelism(settings("m", tensor_parallel_size=32), config("meta-llama--Meta-Llama-3-70B"), CPU)
    assert plan.tensor_parallel_size == 32 and plan.memory is None
    with pytest.raises(ParallelismError, match=r"TENSOR_PARALLEL_SIZE=2 .* 9 attention heads.*Valid sizes: 1, 3"):
        plan_parallelism(settings("m", tensor_parallel_size=2), config("HuggingFaceTB--SmolLM2-135M-Instruct"), CPU)


def test_weights_that_do_not_fit_suggest_a_larger_size():
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("meta-llama/Meta-Llama-3-70B", tensor_parallel_size=2),
                         config("meta-llama--Meta-Llama-3-70B"), pod(8))
    message = str(caught.value)
    assert "weights need 70.6 GB per GPU, 70.0 GB usable" in message
    assert "- a larger TENSOR_PARALLEL_SIZE=4: 35.3 GB of weights per GPU" in message
    assert "- 8-bit weights (QUANTIZATION=fp8" in message and "at TENSOR_PARALLEL_SIZE=8, fits" in message


def test_model_beyond_one_node_explains_pipeline_parallelism():
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("meta-llama/Llama-3.1-405B"), config("meta-llama--Llama-3.1-405B"), pod(8))
    message = str(caught.value)
    assert "bfloat16 weights are 811.7 GB in total" in message
    assert "51.3 GB per GPU at TENSOR_PARALLEL_SIZE=8, fits" in message  # FP8 405B fits one 8 x 80 GB node
    assert "more than one 8-GPU node" in message
    assert "Tensor parallelism stays inside a node" in message
    assert "TENSOR_PARALLEL_SIZE=8 x PIPELINE_PARALLEL_SIZE=2 = 16 GPUs" in message


def test_fp8_405b_fits_one_node():
    plan = plan_parallelism(settings("m", quantization="fp8"), config("meta-llama--Llama-3.1-405B"), pod(8))
    assert plan.tensor_parallel_size == 8 and plan.memory.kv_tokens >= 131072


def test_more_gpus_within_a_node():
    with pytest.raises(ParallelismError, match=r"a pod with 4 GPUs of 80.0 GB \(TENSOR_PARALLEL_SIZE=4\)"):
        plan_parallelism(settings("m"), config("meta-llama--Meta-Llama-3-70B"), pod(2))


def test_no_room_for_one_sequence_of_kv_cache():
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("m"), config("Qwen--Qwen2.5-7B-Instruct"), pod(1, memory_gb=20))
    message = str(caught.value)
    assert "less than one 32,768-token sequence" in message
    assert "- a shorter MAX_MODEL_LEN (at most 13," in message
    plan = plan_parallelism(settings("m", max_model_len=8192), config("Qwen--Qwen2.5-7B-Instruct"),
                            pod(1, memory_gb=20))
    assert plan.tensor_parallel_size == 1


def test_pipeline_parallel_size():
    seventy_b = config("meta-llama--Meta-Llama-3-70B")
    plan = plan_parallelism(settings("m", pipeline_parallel_size=2), seventy_b, pod(8))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (4, 2)
    plan = plan_parallelism(settings("m", tensor_parallel_size=2, pipeline_parallel_size=4), seventy_b, pod(8))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (2, 4)
    with pytest.raises(ParallelismError, match="PIPELINE_PARALLEL_SIZE=16 needs at least 16 GPUs"):
        plan_parallelism(settings("m", pipeline_parallel_size=16), seventy_b, pod(8))


# Pipeline layouts of 8 GPUs for Llama-3-70B: its valid TP sizes that leave 2 or more stages (4, 2, 1).
SEVENTY_B_ON_8 = (
    "Layouts that use all 8 GPU(s): TENSOR_PARALLEL_SIZE=4 x PIPELINE_PARALLEL_SIZE=2, "
    "TENSOR_PARALLEL_SIZE=2 x PIPELINE_PARALLEL_SIZE=4, TENSOR_PARALLEL_SIZE=1 x PIPELINE_PARALLEL_SIZE=8; "
    "or PIPELINE_PARALLEL_SIZE=1 with TENSOR_PARALLEL_SIZE=auto."
)


@pytest.mark.parametrize("tp, product", [(2, 4), (8, 16)])
def test_pipeline_stages_must_use_every_gpu(tp, product):
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("m", tensor_parallel_size=tp, pipeline_parallel_size=2),
                         config("meta-llama--Meta-Llama-3-70B"), pod(8))
    message = str(caught.value)
    assert message.startswith(
        f"TENSOR_PARALLEL_SIZE={tp} x PIPELINE_PARALLEL_SIZE=2 = {product} GPUs, but this pod has 8 visible GPU(s)"
    )
    assert "TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE must equal the GPUs. Set TENSOR_PARALLEL_SIZE=4 (or auto)." \
        in message
    assert message.endswith(SEVENTY_B_ON_8)


def test_pipeline_stages_that_do_not_divide_the_gpus():
    # 8 GPUs in 3 stages: auto would take TP 2 (6 GPUs), which pipeline parallelism does not allow.
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("m", pipeline_parallel_size=3), config("meta-llama--Meta-Llama-3-70B"), pod(8))
    message = str(caught.value)
    assert message.startswith("TENSOR_PARALLEL_SIZE=auto -> 2 x PIPELINE_PARALLEL_SIZE=3 = 6 GPUs")
    assert "8 GPUs do not split into 3 equal pipeline stages." in message
    assert message.endswith(SEVENTY_B_ON_8)


def test_pipeline_auto_tp_that_the_model_cannot_take():
    # 16 GPUs / PP 2 = TP 8, but Qwen2.5-7B allows 1, 2, 4: auto falls to 4 (8 GPUs), so say why and what works.
    with pytest.raises(ParallelismError) as caught:
        plan_parallelism(settings("Qwen/Qwen2.5-7B-Instruct", pipeline_parallel_size=2),
                         config("Qwen--Qwen2.5-7B-Instruct"), pod(16))
    message = str(caught.value)
    assert "TENSOR_PARALLEL_SIZE=auto -> 4 x PIPELINE_PARALLEL_SIZE=2 = 8 GPUs, but this pod has 16" in message
    assert ("TENSOR_PARALLEL_SIZE=8 would use all 16, but not for Qwen/Qwen2.5-7B-Instruct: "
            "28 attention heads don't split 8 ways.") in message
    assert ("Layouts that use all 16 GPU(s): TENSOR_PARALLEL_SIZE=4 x PIPELINE_PARALLEL_SIZE=4, "
            "TENSOR_PARALLEL_SIZE=2 x PIPELINE_PARALLEL_SIZE=8, TENSOR_PARALLEL_SIZE=1 x PIPELINE_PARALLEL_SIZE=16;") \
        in message


def test_without_pipeline_stages_fewer_gpus_is_a_warning():
    # PP 1: a TP smaller than the GPUs leaves some idle (allowed); larger cannot run (test above).
    plan = plan_parallelism(settings("m", tensor_parallel_size=2), config("meta-llama--Meta-Llama-3-8B"), pod(4))
    assert plan.tensor_parallel_size == 2
    assert plan.warnings[0].startswith("Using 2 of 4 GPUs (TENSOR_PARALLEL_SIZE=2 x PIPELINE_PARALLEL_SIZE=1)")


def test_cpu_backend_pipeline_needs_no_gpu_count():
    plan = plan_parallelism(settings("m", tensor_parallel_size=2, pipeline_parallel_size=3),
                            config("meta-llama--Meta-Llama-3-8B"), CPU)
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (2, 3)


def test_auto_skips_sizes_that_cut_quantization_scales():
    awq = plan_parallelism(settings("Qwen2.5-72B-AWQ-unpadded-mlp"), config("Qwen2.5-72B-AWQ-unpadded-mlp"), pod(8))
    assert awq.tensor_parallel_size == 1
    assert "(8: the MLP per GPU 3696 (29568 / 8) is not a multiple of the AWQ group size 128)" in awq.summary
    # 4-bit weights: half a byte per linear-layer parameter; embeddings and lm_head stay float16.
    assert "awq (4-bit weights) weights 40.1 GB/GPU" in awq.summary
    with pytest.raises(ParallelismError, match=r"TENSOR_PARALLEL_SIZE=2 .*14784 \(29568 / 2\) .* AWQ group size 128"):
        plan_parallelism(settings("m", tensor_parallel_size=2), config("Qwen2.5-72B-AWQ-unpadded-mlp"), pod(8))

    fp8 = plan_parallelism(settings("m"), config("Qwen--Qwen3-235B-A22B-FP8"), pod(8, topo="h100-sxm-8x.txt"))
    assert fp8.tensor_parallel_size == 8
    assert "fp8 (8-bit weights) weights 29.7 GB/GPU" in fp8.summary  # 236 GB at 1 byte/parameter, / 8
    assert fp8.warnings == [
        "TENSOR_PARALLEL_SIZE=8 gives each GPU 192 of every expert's 1536-wide MLP, not a multiple of the FP8 "
        "block size 128: vLLM re-scales the experts to 64-wide scales and runs them on its Triton FP8 kernels, "
        "which may be slower."
    ]
    with pytest.raises(ParallelismError, match=r"expert MLP per GPU 48 \(1536 / 32\).*fit: 1, 2, 4, 8, 16"):
        plan_parallelism(settings("m", tensor_parallel_size=32), config("Qwen--Qwen3-235B-A22B-FP8"), pod(32))


def test_pipeline_groups_are_checked_for_pcie_separately():
    # TP 2 x PP 2 on two NVLink-bridged pairs: each TP group is NVLink; PCIe only between stages.
    plan = plan_parallelism(settings("m", tensor_parallel_size=2, pipeline_parallel_size=2),
                            config("Qwen--Qwen2.5-7B-Instruct"), pod(4, topo="nvlink-pairs-4x.txt"))
    assert plan.warnings == []


def test_unreadable_gpus_stop_start_up():
    broken = GpuInventory(0, source="nvml", error="NVML query failed: GPU is lost")
    with pytest.raises(ParallelismError, match="GPUs are present but cannot be read"):
        plan_parallelism(settings("m"), config("meta-llama--Meta-Llama-3-8B"), broken)


def test_unknown_gpu_memory_skips_the_memory_plan():
    torch_count = GpuInventory(8, source="torch")
    plan = plan_parallelism(settings("m"), config("meta-llama--Llama-3.1-405B"), torch_count)
    assert plan.tensor_parallel_size == 8 and plan.memory is None
    assert plan.warnings[0].startswith("GPU memory unknown (torch)")


# --- model config ------------------------------------------------------------------------------------


def test_read_model_config_from_folder_and_file(tmp_path):
    original = config("Qwen--Qwen2.5-7B-Instruct")
    (tmp_path / "config.json").write_text(json.dumps(original))
    assert read_model_config(str(tmp_path)) == original
    assert read_model_config(str(tmp_path / "config.json")) == original
    assert read_model_config(str(MODEL_CONFIGS / "Qwen--Qwen2.5-7B-Instruct.json")) == original


def test_read_model_config_errors(tmp_path):
    with pytest.raises(ModelConfigError, match="needs config.json"):
        read_model_config(str(tmp_path))
    with pytest.raises(ModelConfigError, match="no such folder or file"):
        read_model_config(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="cannot read"):
        read_model_config(str(tmp_path))


def test_read_model_config_from_the_hub_cache(tmp_path):
    # HF_HUB_OFFLINE=1 (conftest): hf_hub_download answers from the cache, as on a worker with a network volume.
    original = config("meta-llama--Meta-Llama-3-8B")
    write_hub_cache(tmp_path, "meta-llama/Meta-Llama-3-8B", original)
    assert read_model_config("meta-llama/Meta-Llama-3-8B", cache_dir=str(tmp_path)) == original


def test_read_model_config_hub_unreachable(tmp_path):
    with pytest.raises(ModelConfigError, match=r"Model org/not-cached .*is not in the cache"):
        read_model_config("org/not-cached", cache_dir=str(tmp_path))


# --- GPU discovery -----------------------------------------------------------------------------------


def test_this_machine_has_no_gpus():
    inventory = visible_gpus()  # real NVML: no driver here
    assert (inventory.count, inventory.error) == (0, None)
    assert inventory.describe() == "no GPUs (vLLM CPU backend)"


def test_cuda_visible_devices_parsing():
    uuids = [f"GPU-{i}aaa" for i in range(4)]
    assert select_visible(None, uuids) == [0, 1, 2, 3]
    assert select_visible("", uuids) == []
    assert select_visible("2,0", uuids) == [2, 0]
    assert select_visible("1,7,2", uuids) == [1]  # CUDA stops at the first invalid entry
    assert select_visible("-1", uuids) == []
    assert select_visible("GPU-3,GPU-1aaa", uuids) == [3, 1]  # unique UUID prefixes
    assert select_visible("1,1", uuids) == [1]


def test_nvml_inventory_respects_cuda_visible_devices(monkeypatch):
    fake = install(monkeypatch, FakeNvml(count=8, memory_gb=80, topo_text=(TOPOLOGY / "h100-sxm-8x.txt").read_text()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    inventory = visible_gpus()
    assert inventory.count == 2 and inventory.memory_bytes == (80 * GB, 80 * GB)
    assert inventory.names == ("NVIDIA H100 80GB HBM3",) * 2
    assert inventory.links == {(0, 1): "NV"} and inventory.source == "nvml"
    assert inventory.describe() == "2 x NVIDIA H100 80GB HBM3 (80.0 GB)"
    assert fake.shutdowns == 1


def test_nvml_inventory_pcie_pod_warns(monkeypatch):
    install(monkeypatch, FakeNvml(count=4, memory_gb=48, name="NVIDIA L40S",
                                  topo_text=(TOPOLOGY / "pcie-4x.txt").read_text()))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    inventory = visible_gpus()
    plan = plan_parallelism(settings("m"), config("meta-llama--Meta-Llama-3-8B"), inventory)
    assert plan.tensor_parallel_size == 4
    assert "GPU0-GPU1 PCIe, one switch (PIX)" in plan.warnings[0]


def test_nvml_without_driver_is_a_cpu_machine(monkeypatch):
    import pynvml

    install(monkeypatch, FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    monkeypatch.setattr(gpus_module, "_nvidia_device_files", lambda: [])
    assert visible_gpus() == GpuInventory(0)


def test_nvml_failing_with_gpus_present_is_an_error(monkeypatch):
    import pynvml

    install(monkeypatch, FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    monkeypatch.setattr(gpus_module, "_nvidia_device_files", lambda: ["/dev/nvidia0"])
    inventory = visible_gpus()
    assert inventory.count == 0 and "NVML could not start" in inventory.error


def test_gpu_discovery_imports_no_torch_or_vllm():
    import subprocess
    import sys

    code = ("import sys; import worker.parallel.layout, worker.parallel.gpus; worker.parallel.gpus.visible_gpus(); "
            "print(sorted(m for m in ('torch', 'vllm', 'huggingface_hub') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
