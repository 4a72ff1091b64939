"""Simulate a traced PyTorch run and score it against the run's measurements (``xpusim validate torch``).

A step's simulated time is the sum of its traced ops' times, one after another on one stream (eager
PyTorch on a CPU runs them so; on a GPU it is the launch order of one stream). Ops are costed by
:class:`hwmodels.cpu.CPUModel` on the CPU and by the catalog GPU's kernel model on CUDA (GEMMs and
attention through their xpusim ops, the rest as memory-bound ``MemoryOp`` s of their bytes).

Scores, with :class:`workloads.accuracy.ErrorStats`: per op kind (``workloads.ops.OpKind``) over every
op the profiler timed, the whole ops set, and the steps (``prefill``: the prefill, ``decode``: each
decode step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workloads.accuracy import ErrorStats, grouped
from workloads.measured_xpusim import RunStep
from workloads.ops import MemoryOp, Op, OpKind
from workloads.pytorch.tracer import AtenClass, TracedOp

CostFn = Callable[[TracedOp], float]


@dataclass
class TorchValidation:
    overall: ErrorStats
    per_kind: dict[str, ErrorStats]
    steps: dict[str, ErrorStats]
    op_rows: list[dict[str, Any]] = field(default_factory=list)
    step_rows: list[dict[str, Any]] = field(default_factory=list)
    unmatched: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.overall.to_dict()
        out["ops"] = {k: v.to_dict() for k, v in self.per_kind.items()}
        out["steps"] = {k: v.to_dict() for k, v in self.steps.items()}
        return out


def gpu_cost_fn(gpu: Any, stack: str = "torch") -> CostFn:
    """Cost of a traced op on a catalog GPU with the kernel model (``stack``: how the kernels are launched)."""
    from hwmodels.kernels import GPUKernelModel

    model = GPUKernelModel(gpu, stack=stack)

    def cost(op: TracedOp) -> float:
        if not op.costs:
            return 0.0
        return model.time(op.op if op.op is not None else _memory_op(op))

    return cost


def _memory_op(op: TracedOp) -> MemoryOp:
    """A traced op without an xpusim op as a memory-bound kernel: its output's rows, its kind
    (elementwise when the tracer gave none), its bytes and FLOPs."""
    out = op.outputs[0] if op.outputs else None
    rows = out.numel // max(1, out.shape[-1]) if out is not None and out.shape else 1
    kind = op.kind if op.kind is not None else OpKind.ELEMENTWISE
    return MemoryOp(op.aten, kind, max(1, rows), op.bytes_read, op.bytes_written, op.flops)


class CudaStepCost:
    """Eager PyTorch on a GPU: each op's device time as the profiler measures it (the kernel alone) and
    each step's time from the co-execution of the host's issue and the GPU's kernels (:mod:`hwmodels.host`).

    GEMMs and attention are costed by the kernel model (their times include the family's ``launch_s``,
    the ramp and tail inside the kernel's own duration); memory-bound ops under ``stack`` (default
    ``torch-step``: the kernels inside a step, L2-warm) without the launch (a profiled eager kernel is
    its body). The residual add is the vectorised kernel (the stack's ``[add]``), RoPE, activation,
    norm and other elementwise ops the stack's tables of their kind."""

    def __init__(self, gpu: Any, stack: str = "torch-step", host: str = "h200-xeon-torch2.11") -> None:
        from hwmodels.host import load_host
        from hwmodels.kernels import GPUKernelModel

        self.model = GPUKernelModel(gpu, stack=stack)
        self.host = load_host(host)

    def __call__(self, op: TracedOp) -> float:
        if not op.costs:
            return 0.0
        if op.op is not None:
            return self.model.time(op.op)
        t, bd = self.model.cost(_memory_op(op))
        return max(0.0, t - bd.get("launch_s", 0.0))

    def step_time(self, ops: Sequence[TracedOp], sims: Sequence[float]) -> float:
        from hwmodels.host import step_time

        return step_time(self.host, [o.costs for o in ops], sims)

    def kernels_step_time(self, ops: Sequence[Op], views_per_launch: float) -> float:
        """An eager step given as xpusim ops in launch order (e.g.
        :func:`workloads.measured_xpusim.torch_llama_step_ops`): a ``MemoryOp`` of ``kernels`` launches is
        that many equal kernels; every launch costs the host ``launch_s`` plus ``views_per_launch`` view
        ops (the traced module's ratio, which a list of kernels does not carry). Its memory ops take the
        stack table of the role their name gives (``rope*`` -> rope, ``silu*`` -> activation)."""
        from dataclasses import replace

        from hwmodels.host import co_execute

        per_launch = self.host.launch_s + views_per_launch * self.host.view_s
        items: list[tuple[float, float]] = []
        for op in ops:
            if isinstance(op, MemoryOp):
                role = _ROLE_BY_NAME.get(op.name.split("_")[0])
                m = replace(op, kind=role) if role is not None else op
                t, bd = self.model.cost(m)
                n = max(1, m.kernels)
                items += [(per_launch, max(0.0, t - bd.get("launch_s", 0.0)) / n)] * n
            else:
                items.append((per_launch, self.model.time(op)))
        return co_execute(items, self.host.kernel_gap_s)[0]


_ROLE_BY_NAME = {"rope": OpKind.ROPE, "silu": OpKind.ACTIVATION}


class StepCost:
    """A cost function that also prices a whole step at once (``step_costs(ops)``): the host CPU's,
    whose op times depend on what ran before (cache reuse distances, :func:`hwmodels.cpu.step_reuse`)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, op: TracedOp) -> float:
        return float(self.model.time(op))

    def step_costs(self, ops: Sequence[TracedOp]) -> list[float]:
        return list(self.model.step_costs(ops))


def cpu_cost_fn(cpu: Any, threads: int = 1) -> CostFn:
    from hwmodels.cpu import CPUModel

    return StepCost(CPUModel(cpu, threads=threads))


def validate_steps(steps: Sequence[RunStep], cost: CostFn) -> TorchValidation:
    triples: list[tuple[str, float, float]] = []
    op_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    step_triples: list[tuple[str, float, float]] = []
    unmatched = 0
    step_costs = getattr(cost, "step_costs", None)
    step_time = getattr(cost, "step_time", None)
    for st in steps:
        sim_total = 0.0
        sims: list[float] = (step_costs(st.graph.ops) if step_costs is not None  # the host CPU: in context
                             else [cost(op) for op in st.graph.ops])
        for op, meas, sim in zip(st.graph.ops, st.op_seconds, sims):
            sim_total += sim
            if op.aclass is AtenClass.VIEW or op.kind is None:
                continue
            if meas is None or not (meas > 0 and math.isfinite(meas)):
                unmatched += 1
                continue
            triples.append((op.kind.value, sim, meas))
            op_rows.append({"phase": st.phase, "step": st.index, "op_index": op.index, "aten": op.aten,
                            "kind": op.kind.value, "class": op.aclass.value, "scope": op.scope,
                            "input_shapes": ";".join("x".join(map(str, s)) for s in op.input_shapes),
                            "flops": op.flops, "bytes": op.bytes, "bytes_read": op.bytes_read,
                            "bytes_written": op.bytes_written, "measured_s": meas, "simulated_s": sim})
        if step_time is not None:  # a CUDA step: host and GPU co-execute (CudaStepCost)
            sim_total = float(step_time(st.graph.ops, sims))
        step_triples.append((st.phase, sim_total, st.step_seconds))
        step_rows.append({"phase": st.phase, "step": st.index, "context": st.context,
                          "measured_s": st.step_seconds, "simulated_s": sim_total,
                          "ops": sum(1 for o in st.graph.ops if o.costs)})
    overall, per = grouped(triples)
    _, step_stats = grouped(step_triples)
    return TorchValidation(overall, dict(sorted(per.items())), step_stats, op_rows, step_rows, unmatched)
