"""The start-up decision: which TENSOR_PARALLEL_SIZE and PIPELINE_PARALLEL_SIZE to run on this pod, or why
none works. `plan_parallelism` checks the choice against the visible GPUs and their memory before vLLM is
built, so a bad configuration stops with one readable message instead of a stack trace from deep inside vLLM.
The one place that decides whether a layout fits (the plan CLI shows these verdicts; it does not redo them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker.parallel import topology
from worker.parallel.gpus import GpuInventory, visible_gpus
from worker.parallel.memory import (
    RUNTIME_RESERVE_BYTES,
    MemoryRow,
    Precision,
    default_max_model_len,
    format_bytes,
    plan_memory,
    resolve_precision,
    weight_bytes,
)
from worker.parallel.rules import (
    GPUS_PER_NODE,
    finer_scale_warning,
    tp_problem,
    valid_sizes_of,
    valid_tp_sizes,
)
from worker.parallel.shape import (
    ModelShape,
    ParallelismError,
)

if TYPE_CHECKING:
    from config.settings import WorkerSettings

__all__ = [
    "GPUS_PER_NODE",
    "GpuInventory",
    "ParallelPlan",
    "ParallelismError",
    "choose_parallelism",
    "cluster_layouts",
    "plan_parallelism",
    "tp_problem",
    "valid_tp_sizes",
    "visible_gpus",
]

@dataclass(frozen=True)
class ParallelPlan:
    """The sizes to give vLLM, the one-line reason to log, and warnings to log once at start."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    summary: str
    warnings: list[str] = field(default_factory=list)
    memory: MemoryRow | None = None  # None on the CPU backend or when GPU memory is unknown
    valid_sizes: tuple[int, ...] = ()


def layout_problem(tp: int, pp: int, gpu_count: int, row: MemoryRow | None, nodes: int = 1) -> str | None:
    """Why TP x PP cannot run on `nodes` nodes of `gpu_count` GPUs with memory `row`, or None: the fit verdict
    that the start-up decision enforces and the plan CLI shows for every valid size."""
    if nodes > 1:
        if gpu_count % tp:
            return f"TP {tp} does not divide the {gpu_count} GPUs of a node (TP stays inside a node)"
        if tp * pp != nodes * gpu_count:
            return f"TP x PP must equal the cluster's {nodes * gpu_count} GPUs"
        return row.problem() if row is not None and not row.fits else None
    if tp * pp > gpu_count:
        return f"needs {tp * pp} GPUs, the pod has {gpu_count}"
    if pp > 1 and tp * pp != gpu_count:
        return f"TP x PP must equal the {gpu_count} GPUs"
    if row is not None and not row.fits:
        return row.problem()
    return None


def plan_parallelism(
    settings: "WorkerSettings", model_config: dict[str, Any], gpus: GpuInventory, *, lora: tuple[int, int] = (0, 0)
) -> ParallelPlan:
    """Decide the tensor/pipeline sizes for `settings` on `gpus`; ParallelismError if they cannot work.
    lora: (max_loras, max_lora_rank) the engine reserves adapter memory for (worker/model_files/adapters.py)."""
    return choose_parallelism(
        model_name=settings.model_name,
        model_config=model_config,
        requested_tp=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        gpus=gpus,
        precision=resolve_precision(
            model_config,
            dtype=settings.dtype,
            quantization=settings.quantization,
            kv_cache_dtype=settings.engine_args.get("kv_cache_dtype"),
        ),
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=settings.max_model_len,
        nodes=settings.cluster_nodes,
        enforce_eager=settings.enforce_eager,
        lora=lora,
    )


def choose_parallelism(
    *,
    model_name: str,
    model_config: dict[str, Any],
    requested_tp: int | str,
    pipeline_parallel_size: int,
    gpus: GpuInventory,
    precision: Precision,
    gpu_memory_utilization: float,
    max_model_len: int | None,
    nodes: int = 1,
    enforce_eager: bool = False,
    lora: tuple[int, int] = (0, 0),
) -> ParallelPlan:
    """`plan_parallelism` without the settings object (the CLI calls this). `gpus` are one node's; with
    `nodes` > 1 the engine spans that many such nodes (TP inside a node, PP across nodes)."""
    shape = ModelShape.from_config(model_config)
    valid = valid_sizes_of(shape)
    pp = pipeline_parallel_size
    context = _Context(model_name, shape, valid, pp, gpus, precision, gpu_memory_utilization,
                       default_max_model_len(shape, max_model_len), nodes, lora)
    if gpus.error:
        raise ParallelismError(
            f"NVIDIA GPUs are present but cannot be read ({gpus.error}); this pod cannot run {model_name}."
        )
    if pp > shape.num_layers:
        raise ParallelismError(
            f"PIPELINE_PARALLEL_SIZE={pp} exceeds the {shape.num_layers} layers of {model_name}: "
            "each pipeline stage needs at least one layer."
        )
    if nodes > 1:
        plan = _plan_cluster(context, requested_tp)
    elif gpus.count == 0:
        plan = _plan_cpu(context, requested_tp)
    else:
        plan = _plan_gpus(context, requested_tp)
    if enforce_eager and gpus.count == 0 and plan.pipeline_parallel_size > 1:
        # vLLM 0.32's CPU runner warms up (and so allocates the tensors passed between pipeline stages) only
        # when it compiles: in eager mode the first request fails in every stage after the first.
        raise ParallelismError(
            f"ENFORCE_EAGER=true does not work with PIPELINE_PARALLEL_SIZE={plan.pipeline_parallel_size} on "
            "vLLM's CPU backend (its later pipeline stages fail the first request): set ENFORCE_EAGER=false."
        )
    return plan


@dataclass(frozen=True)
class _Context:
    model: str
    shape: ModelShape
    valid: list[int]
    pp: int
    gpus: GpuInventory
    precision: Precision
    utilization: float
    max_model_len: int
    nodes: int = 1
    lora: tuple[int, int] = (0, 0)  # (max_loras, max_lora_rank)

    def memory(self, tp: int, pp: int | None = None, precision: Precision | None = None) -> MemoryRow | None:
        if not self.gpus.min_memory_bytes:
            return None
        return plan_memory(
            self.shape,
            precision or self.precision,
            tp=tp,
            pp=pp or self.pp,
            gpu_memory_bytes=self.gpus.min_memory_bytes,
            gpu_memory_utilization=self.utilization,
            max_model_len=self.max_model_len,
            max_loras=self.lora[0],
            max_lora_rank=self.lora[1],
        )

    def describe_model(self) -> str:
        return f"{self.model} ({self.shape.describe()})"

    def sizes(self, limit: int | None = None) -> str:
        return ", ".join(str(tp) for tp in self.valid if limit is None or tp <= limit)


def _plan_cpu(ctx: _Context, requested_tp: int | str) -> ParallelPlan:
    # vLLM's CPU backend runs tensor parallelism across CPU processes: no GPU count or memory to check.
    encoder = "; encoder-only model: no KV cache" if ctx.shape.encoder_only else ""
    if requested_tp == "auto":
        summary = "TENSOR_PARALLEL_SIZE=auto -> 1: no GPUs visible, vLLM runs on its CPU backend" + encoder
        return ParallelPlan(1, ctx.pp, summary, valid_sizes=tuple(ctx.valid))
    tp = int(requested_tp)
    problem = tp_problem(ctx.shape, tp)
    if problem:
        raise ParallelismError(
            f"TENSOR_PARALLEL_SIZE={tp} does not work for {ctx.describe_model()}: {problem}. "
            f"No GPUs are visible (vLLM CPU backend). Valid sizes: {ctx.sizes()}; or TENSOR_PARALLEL_SIZE=auto."
        )
    summary = (
        f"TENSOR_PARALLEL_SIZE={tp} (set): valid for {ctx.model} (valid: {ctx.sizes()}); no GPUs visible, "
        f"so it runs as {tp * ctx.pp} CPU process(es) on vLLM's CPU backend{encoder}"
    )
    return ParallelPlan(tp, ctx.pp, summary, valid_sizes=tuple(ctx.valid))


def _plan_gpus(ctx: _Context, requested_tp: int | str) -> ParallelPlan:
    count, pp = ctx.gpus.count, ctx.pp
    if pp > count:
        raise ParallelismError(
            f"PIPELINE_PARALLEL_SIZE={pp} needs at least {pp} GPUs (TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE "
            f"= GPUs used), but this pod has {count}: {ctx.gpus.describe()}. {_full_layouts_hint(ctx)}"
        )
    budget = count // pp
    if requested_tp == "auto":
        tp = max(size for size in ctx.valid if size <= budget)
        why = f"largest size {ctx.model} allows within {count} visible GPU(s)" + (f" / PP {pp}" if pp > 1 else "")
        if tp < budget:
            why += f" ({budget}: {tp_problem(ctx.shape, budget)})"
        head = f"TENSOR_PARALLEL_SIZE=auto -> {tp}"
        if pp > 1 and tp * pp != count:
            raise ParallelismError(_pipeline_error(ctx, tp, auto=True))
    else:
        tp = int(requested_tp)
        problem = tp_problem(ctx.shape, tp)
        if problem is None and pp > 1 and tp * pp != count:
            raise ParallelismError(_pipeline_error(ctx, tp, auto=False))
        problem = problem or layout_problem(tp, pp, count, None)
        if problem:
            raise ParallelismError(
                f"TENSOR_PARALLEL_SIZE={tp} does not work for {ctx.describe_model()} on this pod: {problem}. "
                f"The pod has {count} visible GPU(s) ({ctx.gpus.describe()}). Use one of the valid sizes "
                f"that fit: {ctx.sizes(budget)} (all valid sizes: {ctx.sizes()}); or TENSOR_PARALLEL_SIZE=auto."
            )
        head, why = f"TENSOR_PARALLEL_SIZE={tp} (set)", "valid for the model and the GPUs"

    row = ctx.memory(tp)
    if row is not None and not row.fits:
        raise ParallelismError(_memory_error(ctx, row, budget))
    summary = f"{head}, PIPELINE_PARALLEL_SIZE={pp}: {why}; valid sizes {ctx.sizes()}; {ctx.gpus.describe()}"
    if row is None and ctx.shape.encoder_only:
        summary += "; encoder-only model: no KV cache"
    return ParallelPlan(tp, pp, summary + _memory_summary(ctx, row), _gpu_warnings(ctx, tp, row), row, tuple(ctx.valid))


def _gpu_warnings(ctx: _Context, tp: int, row: MemoryRow | None) -> list[str]:
    count, pp = ctx.gpus.count, ctx.pp
    warnings = [] if row is not None else [_UNKNOWN_MEMORY.format(source=ctx.gpus.source)]
    finer_scales = finer_scale_warning(ctx.shape, tp)
    if finer_scales:
        warnings.append(finer_scales)
    if tp * pp < count:  # only with PP 1: pipeline stages must use every GPU (checked above)
        warnings.append(
            f"Using {tp * pp} of {count} GPUs (TENSOR_PARALLEL_SIZE={tp} x PIPELINE_PARALLEL_SIZE={pp}); "
            f"{ctx.model} allows TP sizes {ctx.sizes()}."
        )
    if tp > 1:
        groups = [list(range(stage * tp, (stage + 1) * tp)) for stage in range(pp)]
        pcie = topology.pcie_warning(ctx.gpus.links, groups)
        if pcie:
            warnings.append(pcie)
        elif ctx.gpus.links is None and ctx.gpus.source == "nvml":
            warnings.append("GPU interconnect unknown (topology not readable): cannot check for NVLink.")
    return warnings


_UNKNOWN_MEMORY = "GPU memory unknown ({source}): memory plan skipped, vLLM will check it."


def _memory_summary(ctx: _Context, row: MemoryRow | None) -> str:
    if row is None:
        return ""
    summary = f"; {ctx.precision.name} weights {format_bytes(row.weight_bytes_per_gpu)}/GPU, {row.describe_kv_cache()}"
    if row.lora_bytes_per_gpu:
        summary += f"; LoRA {ctx.lora[0]} x rank {ctx.lora[1]} {format_bytes(row.lora_bytes_per_gpu)}/GPU"
    return summary


def cluster_layouts(shape: ModelShape, valid: list[int], gpus_per_node: int, nodes: int) -> list[tuple[int, int]]:
    """Every (TP, PP) that uses all GPUs of `nodes` nodes with TP inside a node, largest TP first: TP divides the
    node's GPUs, TP x PP = nodes x GPUs per node, and each pipeline stage keeps at least one layer."""
    total = nodes * gpus_per_node
    return [
        (tp, total // tp)
        for tp in reversed(valid)
        if gpus_per_node % tp == 0 and total // tp <= shape.num_layers
    ]


def _plan_cluster(ctx: _Context, requested_tp: int | str) -> ParallelPlan:
    """One engine across `ctx.nodes` nodes: TP inside a node, PP across nodes (TP x PP = all their GPUs)."""
    if ctx.gpus.count == 0:
        return _plan_cpu_cluster(ctx, requested_tp)
    return _plan_gpu_cluster(ctx, requested_tp)


def _plan_cpu_cluster(ctx: _Context, requested_tp: int | str) -> ParallelPlan:
    """vLLM's CPU backend across nodes: each node runs TP CPU processes per pipeline stage it holds."""
    nodes, where = ctx.nodes, f"{ctx.nodes} nodes x {ctx.gpus.describe()}"
    tp = 1 if requested_tp == "auto" else int(requested_tp)
    pp = ctx.pp if ctx.pp > 1 else nodes
    problem = tp_problem(ctx.shape, tp)
    if problem is None and pp % nodes:
        problem = f"PIPELINE_PARALLEL_SIZE={pp} does not split into {nodes} nodes"
    if problem is None and pp > ctx.shape.num_layers:
        problem = f"{pp} pipeline stages exceed the model's {ctx.shape.num_layers} layers"
    if problem:
        raise ParallelismError(
            f"TENSOR_PARALLEL_SIZE={requested_tp} x PIPELINE_PARALLEL_SIZE={ctx.pp} does not work for "
            f"{ctx.describe_model()} on {where}: {problem}. Valid layouts: TENSOR_PARALLEL_SIZE=<one of "
            f"{ctx.sizes()}> x PIPELINE_PARALLEL_SIZE={nodes} (one stage per node)."
        )
    summary = (
        f"cluster of {where}: TENSOR_PARALLEL_SIZE={tp} x PIPELINE_PARALLEL_SIZE={pp}, "
        f"{tp * pp // nodes} CPU process(es) per node"
    )
    return ParallelPlan(tp, pp, summary, valid_sizes=tuple(ctx.valid))


def _plan_gpu_cluster(ctx: _Context, requested_tp: int | str) -> ParallelPlan:
    nodes, per_node = ctx.nodes, ctx.gpus.count
    where = f"{nodes} nodes x {ctx.gpus.describe()}"
    layouts = cluster_layouts(ctx.shape, ctx.valid, per_node, nodes)
    rows = {tp: ctx.memory(tp, pp) for tp, pp in layouts}
    fitting = [(tp, pp) for tp, pp in layouts if layout_problem(tp, pp, per_node, rows[tp], nodes) is None]

    def named(options: list[tuple[int, int]]) -> str:
        return ", ".join(f"TENSOR_PARALLEL_SIZE={tp} x PIPELINE_PARALLEL_SIZE={pp}" for tp, pp in options) or "none"

    def refuse(setting: str, problem: str) -> ParallelismError:
        return ParallelismError(
            f"{setting} does not work for {ctx.describe_model()} on {where}: {problem}. Across nodes, "
            f"TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE must equal the cluster's {nodes * per_node} GPUs, "
            f"with tensor parallelism inside a node. Valid layouts that fit: {named(fitting)} "
            f"(all valid layouts: {named(layouts)})."
        )

    requested_pp = ctx.pp if ctx.pp > 1 else None  # PIPELINE_PARALLEL_SIZE=1 (the default) means: from TP
    if requested_tp == "auto":
        candidates = [(tp, pp) for tp, pp in fitting if requested_pp in (None, pp)]
        setting = "TENSOR_PARALLEL_SIZE=auto" + (f" x PIPELINE_PARALLEL_SIZE={requested_pp}" if requested_pp else "")
        if not candidates:
            biggest = rows.get(layouts[0][0]) if layouts else None
            problem = biggest.problem() if biggest is not None and not biggest.fits else "no layout is left"
            raise refuse(setting, problem or "no layout fits")
        tp, pp = candidates[0]  # the largest TP: fewest pipeline stages
        head = f"TENSOR_PARALLEL_SIZE=auto -> {tp}"
    else:
        tp = int(requested_tp)
        setting = f"TENSOR_PARALLEL_SIZE={tp}" + (f" x PIPELINE_PARALLEL_SIZE={requested_pp}" if requested_pp else "")
        pp = nodes * per_node // tp
        problem = (
            tp_problem(ctx.shape, tp)
            or (f"TP {tp} x PP {requested_pp} = {tp * requested_pp} GPUs" if requested_pp not in (None, pp) else None)
            or layout_problem(tp, pp, per_node, rows.get(tp), nodes)
            or (f"{pp} pipeline stages exceed the model's {ctx.shape.num_layers} layers" if pp > ctx.shape.num_layers
                else None)
        )
        if problem:
            raise refuse(setting, problem)
        head = f"TENSOR_PARALLEL_SIZE={tp} (set)"
    row = rows.get(tp)
    warnings = [] if row is not None else [_UNKNOWN_MEMORY.format(source=ctx.gpus.source)]
    summary = (
        f"cluster of {where}: {head}, PIPELINE_PARALLEL_SIZE={pp} ({pp // nodes} stage(s) per node); "
        f"valid layouts {named(layouts)}"
    )
    return ParallelPlan(tp, pp, summary + _memory_summary(ctx, row), warnings, row, tuple(ctx.valid))


def _pipeline_error(ctx: _Context, tp: int, *, auto: bool) -> str:
    """TP x PP differs from the visible GPUs with pipeline stages: say what would make them equal."""
    count, pp = ctx.gpus.count, ctx.pp
    setting = f"TENSOR_PARALLEL_SIZE={'auto -> ' if auto else ''}{tp}"
    parts = [
        f"{setting} x PIPELINE_PARALLEL_SIZE={pp} = {tp * pp} GPUs, but this pod has {count} visible GPU(s) "
        f"({ctx.gpus.describe()}): with pipeline parallelism, TENSOR_PARALLEL_SIZE x PIPELINE_PARALLEL_SIZE "
        "must equal the GPUs."
    ]
    if count % pp:
        parts.append(f"{count} GPUs do not split into {pp} equal pipeline stages.")
    elif (problem := tp_problem(ctx.shape, count // pp)) is not None:
        parts.append(f"TENSOR_PARALLEL_SIZE={count // pp} would use all {count}, but not for {ctx.model}: {problem}.")
    else:
        parts.append(f"Set TENSOR_PARALLEL_SIZE={count // pp} (or auto).")
    parts.append(_full_layouts_hint(ctx))
    return " ".join(parts)


def _full_layouts_hint(ctx: _Context) -> str:
    """The TP x PP layouts that use every visible GPU (largest TP first: it has the lower latency)."""
    count, layers = ctx.gpus.count, ctx.shape.num_layers
    layouts = [
        f"TENSOR_PARALLEL_SIZE={tp} x PIPELINE_PARALLEL_SIZE={count // tp}"
        for tp in reversed(ctx.valid)
        if count % tp == 0 and 1 < count // tp <= layers
    ]
    options = f"Layouts that use all {count} GPU(s): {', '.join(layouts)}; or " if layouts else "Or "
    return options + "PIPELINE_PARALLEL_SIZE=1 with TENSOR_PARALLEL_SIZE=auto."


def _memory_error(ctx: _Context, row: MemoryRow, budget: int) -> str:
    total = weight_bytes(ctx.shape, ctx.precision)
    lines = [
        f"{ctx.describe_model()} does not fit on {ctx.gpus.describe()} at TENSOR_PARALLEL_SIZE={row.tp} x "
        f"PIPELINE_PARALLEL_SIZE={row.pp}: {row.problem()}. {ctx.precision.name} weights are "
        f"{format_bytes(total)} in total; each GPU has {format_bytes(row.usable_bytes_per_gpu)} for weights and "
        f"KV cache at GPU_MEMORY_UTILIZATION={ctx.utilization} (less {format_bytes(RUNTIME_RESERVE_BYTES)} for "
        f"activations). MAX_MODEL_LEN={ctx.max_model_len}. Options:"
    ]
    if row.lora_bytes_per_gpu:
        lines.append(
            f"- fewer or smaller LoRA adapter slots: max_loras={ctx.lora[0]} x max_lora_rank={ctx.lora[1]} take "
            f"{format_bytes(row.lora_bytes_per_gpu)} per GPU (ENGINE_ARGS max_loras / max_lora_rank)"
        )
    larger = next((r for r in map(ctx.memory, ctx.valid) if r and r.tp > row.tp and r.tp <= budget and r.fits), None)
    if larger:
        lines.append(
            f"- a larger TENSOR_PARALLEL_SIZE={larger.tp}: {format_bytes(larger.weight_bytes_per_gpu)} of weights "
            f"per GPU, KV cache ~{larger.kv_tokens:,} tokens (or TENSOR_PARALLEL_SIZE=auto)"
        )
    if row.weights_fit and row.kv_tokens > 0:
        lines.append(f"- a shorter MAX_MODEL_LEN (at most {row.kv_tokens:,} tokens fit here)")
    if ctx.precision.weight_bytes > 1:
        eight_bit = Precision("fp8", 1, ctx.precision.activation_bytes, ctx.precision.kv_bytes)
        best = max(size for size in ctx.valid if size <= budget)
        fp8 = ctx.memory(best, precision=eight_bit)
        verdict = "fits" if fp8 and fp8.fits else f"still does not fit ({fp8.problem() if fp8 else '?'})"
        lines.append(
            f"- 8-bit weights (QUANTIZATION=fp8, or an FP8/INT8 checkpoint): "
            f"{format_bytes(fp8.weight_bytes_per_gpu) if fp8 else '?'} per GPU at TENSOR_PARALLEL_SIZE={best}, "
            f"{verdict}"
        )
    if larger is None:
        lines.append(_more_gpus_option(ctx))
    return "\n".join(lines)


def _more_gpus_option(ctx: _Context) -> str:
    """The fewest GPUs (of this memory size) that hold the model: TP inside a node, PP across nodes."""
    in_node = [tp for tp in ctx.valid if tp <= GPUS_PER_NODE]
    memory = format_bytes(ctx.gpus.min_memory_bytes or 0)
    # Within a node, tensor parallelism alone is preferred (lower latency); pipeline stages only if it must.
    one_node = [(tp, 1, tp) for tp in in_node if (row := ctx.memory(tp, 1)) and row.fits] or [
        (tp * pp, pp, tp)
        for tp in in_node
        for pp in range(2, GPUS_PER_NODE // tp + 1)
        if (row := ctx.memory(tp, pp)) and row.fits
    ]
    if one_node:
        # On this pod, pipeline stages must use every GPU (TP x PP = GPUs); TP alone may use fewer.
        here = [(g, pp, tp) for g, pp, tp in one_node if g == ctx.gpus.count or (pp == 1 and g < ctx.gpus.count)]
        gpus, pp, tp = min(here or one_node)
        layout = f"TENSOR_PARALLEL_SIZE={tp}" + (f" x PIPELINE_PARALLEL_SIZE={pp}" if pp > 1 else "")
        if here:
            return f"- {layout} ({gpus} GPUs)"
        pod = "more GPUs: a pod" if gpus > ctx.gpus.count else "a pod"
        return f"- {pod} with {gpus} GPUs of {memory} ({layout})"
    # Beyond one node: fill each node with TP and add pipeline stages, one per node.
    tp = max(in_node)
    pp = next((pp for pp in range(2, ctx.shape.num_layers + 1) if (r := ctx.memory(tp, pp)) and r.fits), None)
    if pp is None:
        return f"- more GPUs: no TP x PP layout of {memory} GPUs holds the model at this precision and length"
    return (
        f"- more GPUs: it needs {tp * pp} GPUs of {memory}, more than one {GPUS_PER_NODE}-GPU node. Tensor "
        f"parallelism stays inside a node (NVLink); pipeline parallelism spans nodes: TENSOR_PARALLEL_SIZE={tp} x "
        f"PIPELINE_PARALLEL_SIZE={pp} = {tp * pp} GPUs on {pp} nodes (TP x PP must equal the GPUs used; a "
        "serverless worker is one pod, so this needs a RunPod Instant Cluster: see the README's Multi-node section)"
    )
