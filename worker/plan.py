"""Print the tensor-parallel plan of a model on a pod: every valid TP size, its memory, and the one to use.

    python -m worker.plan meta-llama/Meta-Llama-3-70B --gpus 8 --gpu-memory 80
    python -m worker.plan ./my-model --gpus 4 --gpu-memory 48 --dtype fp8 --max-model-len 32768
    python -m worker.plan config.json                  # on a pod: its own GPUs and topology
    python -m worker.plan meta-llama/Llama-3.1-405B --nodes 2 --gpus 8 --gpu-memory 80   # an Instant Cluster

MODEL is a hub id (only config.json is fetched; HF_TOKEN for gated models), a local folder or a config.json.
Exit status: 0 when a configuration fits, 1 when none does, 2 for bad arguments or an unreadable model.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from config.settings import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DTYPE_CHOICES,
    TP_SIZE_ALLOWED,
    WorkerSettings,
    parse_tensor_parallel_size,
)
from worker.model_files.config_json import ModelConfigError, read_model_config
from worker.parallel import topology
from worker.parallel.gpus import GpuInventory, visible_gpus
from worker.parallel.layout import ParallelismError, ParallelPlan, choose_parallelism, layout_problem
from worker.parallel.memory import (
    EIGHT_BIT_DTYPES,
    GB,
    RUNTIME_RESERVE_BYTES,
    Precision,
    default_max_model_len,
    format_bytes,
    kv_bytes_per_token,
    parameter_count,
    plan_memory,
    resolve_precision,
    weight_bytes,
)
from worker.parallel.rules import valid_tp_sizes
from worker.parallel.shape import ModelShape


def _tp_size(value: str) -> int | str:
    """As TENSOR_PARALLEL_SIZE is parsed (config/settings.py)."""
    parsed = parse_tensor_parallel_size(value)
    if parsed == "auto" or (isinstance(parsed, int) and parsed >= 1):
        return parsed
    raise argparse.ArgumentTypeError(TP_SIZE_ALLOWED)


def _default(setting: str):
    return WorkerSettings.model_fields[setting].get_default(call_default_factory=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="hub id (org/name), local model folder, or path to a config.json")
    parser.add_argument("--gpus", type=int, help="GPUs in the pod, or in each node with --nodes (default: this "
                        "machine's visible GPUs)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes of a cluster (as CLUSTER_NUM_NODES): TP inside a "
                        "node, PP across nodes; --gpus is per node")
    parser.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GB",
        help="memory of one GPU in GB (10^9 bytes; an '80GB' H100 has 85 GB). Default: this machine's GPUs",
    )
    parser.add_argument(
        "--dtype",
        default=_default("dtype"),
        choices=[*DTYPE_CHOICES, *EIGHT_BIT_DTYPES],
        help="weight dtype; fp8/int8 mean 8-bit weights (QUANTIZATION=fp8). Default: the model's own",
    )
    parser.add_argument("--quantization", help="vLLM quantization method, as QUANTIZATION (fp8, awq, gptq, ...)")
    parser.add_argument("--max-model-len", type=int, help="context length (default: the model's own)")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION, help="as GPU_MEMORY_UTILIZATION"
    )
    parser.add_argument(
        "--pipeline-parallel-size", type=int, default=_default("pipeline_parallel_size"), help="as PIPELINE_PARALLEL_SIZE"
    )
    parser.add_argument(
        "--tensor-parallel-size", type=_tp_size, default=_default("tensor_parallel_size"), help="check this size instead of 'auto'"
    )
    parser.add_argument("--kv-cache-dtype", help="as KV_CACHE_DTYPE (fp8 halves the KV cache)")
    parser.add_argument("--max-loras", type=int, default=0, help="LoRA adapter slots (as MAX_LORAS); 0: none")
    parser.add_argument("--max-lora-rank", type=int, default=16, help="as MAX_LORA_RANK (with --max-loras)")
    parser.add_argument("--revision", help="hub branch, tag or commit (as MODEL_REVISION)")
    parser.add_argument("--topology", type=Path, metavar="FILE", help="saved `nvidia-smi topo -m` output")
    return parser.parse_args(argv)


def pod_gpus(args: argparse.Namespace) -> GpuInventory:
    """The pod to plan for: the arguments, else this machine's GPUs."""
    local = visible_gpus() if args.gpus is None or args.gpu_memory is None else None
    count = args.gpus if args.gpus is not None else (local.count if local else 0)
    if args.gpu_memory is not None:
        memory = int(args.gpu_memory * GB)
    elif local and local.min_memory_bytes:
        memory = local.min_memory_bytes
    else:
        raise SystemExit("error: no GPUs readable on this machine: pass --gpus N and --gpu-memory GB")
    if count < 1:
        raise SystemExit("error: --gpus must be at least 1")
    if args.nodes < 1:
        raise SystemExit("error: --nodes must be at least 1")
    links = local.links if local and local.count == count else None
    if args.topology:
        try:
            links = topology.select_links(topology.parse_topo_matrix(args.topology.read_text()), range(count))
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: --topology {args.topology}: {error}") from None
    names = local.names if local and local.count == count else ()
    return GpuInventory(count, (memory,) * count, tuple(names), links, source="cli")


@dataclass(frozen=True)
class _Inputs:
    """What every part of the report reads: the CLI's arguments and what follows from them."""

    args: argparse.Namespace
    shape: ModelShape
    precision: Precision
    gpus: GpuInventory
    max_len: int
    valid: list[int]
    lora: tuple[int, int]  # (adapter slots, rank), (0, 0) without LoRA

    @property
    def memory(self) -> int:
        return self.gpus.min_memory_bytes or 0

    @property
    def show_eight_bit(self) -> bool:
        return self.precision.weight_bytes > 1


def render(args: argparse.Namespace, config: dict, gpus: GpuInventory) -> tuple[str, bool]:
    """The plan as text, and whether a configuration fits."""
    shape = ModelShape.from_config(config)
    lora = (args.max_loras, args.max_lora_rank) if args.max_loras > 0 else (0, 0)
    inputs = _Inputs(args, shape, resolve_precision(config, args.dtype, args.quantization, args.kv_cache_dtype), gpus,
                     default_max_model_len(shape, args.max_model_len), valid_tp_sizes(config), lora)
    try:
        plan, failure = _choose(inputs, config), None
    except ParallelismError as error:
        plan, failure = None, str(error)
    chosen = plan.tensor_parallel_size if plan is not None else None
    out = [*_summary(inputs), "", *_table(inputs, chosen), "", *_conclusion(inputs, plan, failure)]
    return "\n".join(out), plan is not None


def _choose(inputs: _Inputs, config: dict) -> ParallelPlan:
    args = inputs.args
    return choose_parallelism(
        model_name=args.model,
        model_config=config,
        requested_tp=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        gpus=inputs.gpus,
        precision=inputs.precision,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        nodes=args.nodes,
        lora=inputs.lora,
    )


def _summary(inputs: _Inputs) -> list[str]:
    args, shape, precision, gpus, lora = inputs.args, inputs.shape, inputs.precision, inputs.gpus, inputs.lora
    usable = int(inputs.memory * args.gpu_memory_utilization) - RUNTIME_RESERVE_BYTES
    return [
        f"Model      {args.model}: {parameter_count(shape) / 1e9:.2f} B parameters, {shape.num_layers} layers, "
        f"{shape.describe()}, head dim {shape.head_dim}",
        f"Precision  {precision.name}: weights {format_bytes(weight_bytes(shape, precision))} in total; KV cache "
        f"{format_bytes(kv_bytes_per_token(shape, precision))} per token ({precision.kv_bytes}-byte values)",
        f"{'Cluster' if args.nodes > 1 else 'Pod':<10} {f'{args.nodes} nodes x ' if args.nodes > 1 else ''}"
        f"{gpus.describe()}; GPU_MEMORY_UTILIZATION {args.gpu_memory_utilization:.2f} -> "
        f"{format_bytes(usable)} per GPU for weights + KV cache ({format_bytes(RUNTIME_RESERVE_BYTES)} kept for "
        "activations)",
        f"Context    MAX_MODEL_LEN {inputs.max_len:,} tokens; "
        + (f"PIPELINE_PARALLEL_SIZE = {args.nodes} x {gpus.count} GPUs / TP" if args.nodes > 1
           else f"PIPELINE_PARALLEL_SIZE {args.pipeline_parallel_size}")
        + (f"; LoRA {lora[0]} adapter slot(s) of rank {lora[1]}" if lora[0] else ""),
        f"Valid TENSOR_PARALLEL_SIZE: {', '.join(map(str, inputs.valid))}",
    ]


def _table(inputs: _Inputs, chosen: int | None) -> list[str]:
    """One row per valid TP size: memory per GPU and whether it fits (the planner's own fit rule)."""
    args, lora, nodes = inputs.args, inputs.lora, inputs.args.nodes
    header = f"{'TP':>4}" + (f" {'PP':>4}" if nodes > 1 else "") + f" {'GPUs':>5} {'weights/GPU':>12}"
    header += f" {'8-bit/GPU':>10}" if inputs.show_eight_bit else ""
    header += f" {'LoRA/GPU':>9}" if lora[0] else ""
    rows = [header + f" {'KV/token/GPU':>13} {'KV tokens':>12}  fits"]
    eight_bit = Precision("fp8", 1, inputs.precision.activation_bytes, inputs.precision.kv_bytes)
    for tp in inputs.valid:
        pp = args.pipeline_parallel_size
        if nodes > 1:  # across nodes the pipeline size follows from TP: TP x PP = all the cluster's GPUs
            if tp > inputs.gpus.count:
                continue  # tensor parallelism stays inside a node
            pp = nodes * inputs.gpus.count // tp
        row = plan_memory(inputs.shape, inputs.precision, tp=tp, pp=pp, gpu_memory_bytes=inputs.memory,
                          gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=inputs.max_len,
                          max_loras=lora[0], max_lora_rank=lora[1])
        problem = layout_problem(tp, pp, inputs.gpus.count, row, nodes)
        verdict = ("yes" if problem is None else f"no: {problem}") + ("   <- recommended" if tp == chosen else "")
        line = f"{tp:>4}" + (f" {pp:>4}" if nodes > 1 else "") + f" {tp * pp:>5} "
        line += f"{format_bytes(row.weight_bytes_per_gpu):>12}"
        if inputs.show_eight_bit:
            line += f" {format_bytes(weight_bytes(inputs.shape, eight_bit, tp, pp)):>10}"
        if lora[0]:
            line += f" {format_bytes(row.lora_bytes_per_gpu):>9}"
        rows.append(line + f" {format_bytes(row.kv_bytes_per_token):>13} {row.kv_tokens:>12,}  {verdict}")
    return rows


def _conclusion(inputs: _Inputs, plan: ParallelPlan | None, failure: str | None) -> list[str]:
    args, gpus = inputs.args, inputs.gpus
    out = []
    if plan is not None:
        recommended = f"TENSOR_PARALLEL_SIZE={plan.tensor_parallel_size}"
        if args.nodes > 1:
            recommended += f" x PIPELINE_PARALLEL_SIZE={plan.pipeline_parallel_size}"
        out.append(f"Recommended: {recommended}  ({plan.summary})")
        out += [f"Warning: {warning}" for warning in plan.warnings]
    else:
        out.append(f"No configuration fits:\n{failure}")
    if gpus.count > 1 and args.nodes == 1:
        pp = args.pipeline_parallel_size
        chosen = plan.tensor_parallel_size if plan is not None else None
        group = list(range(chosen or min(gpus.count, max(t for t in inputs.valid if t * pp <= gpus.count))))
        out.append(f"Interconnect: {topology.describe_links(gpus.links, group)}")
    if inputs.show_eight_bit:
        out.append(
            "8-bit/GPU: weights with QUANTIZATION=fp8 (linear layers at 1 byte; embeddings and norms stay 16-bit). "
            "Published per-GPU figures too small for 16-bit weights (the guide's 70B table: TP2 ~38, TP4 ~20, "
            "TP8 ~12 GB) are 8-bit weights plus ~2-3 GB of runtime memory."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = read_model_config(args.model, revision=args.revision)
    except ModelConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text, fits = render(args, config, pod_gpus(args))
    print(text)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
