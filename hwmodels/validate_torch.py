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
from typing import Any, Protocol

from workloads.accuracy import ErrorStats, grouped
from workloads.ops import MemoryOp, OpKind
from workloads.pytorch.tracer import AtenClass, OpGraph, TracedOp


class _Step(Protocol):
    phase: str
    index: int
    context: int
    graph: OpGraph
    op_seconds: list[float | None]
    step_seconds: float


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
        if op.op is not None:
            return model.time(op.op)
        rows = op.outputs[0].numel // max(1, op.outputs[0].shape[-1]) if op.outputs and op.outputs[0].shape else 1
        kind = op.kind if op.kind is not None else OpKind.ELEMENTWISE
        return model.time(MemoryOp(op.aten, kind, max(1, rows), op.bytes_read, op.bytes_written, op.flops))

    return cost


def cpu_cost_fn(cpu: Any, threads: int = 1) -> CostFn:
    from hwmodels.cpu import CPUModel

    return CPUModel(cpu, threads=threads).time


def validate_steps(steps: Sequence[_Step], cost: CostFn) -> TorchValidation:
    triples: list[tuple[str, float, float]] = []
    op_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    unmatched = 0
    by_phase: dict[str, tuple[list[float], list[float]]] = {}
    for st in steps:
        sim_total = 0.0
        for op, meas in zip(st.graph.ops, st.op_seconds):
            sim = cost(op)
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
                            "flops": op.flops, "bytes": op.bytes, "measured_s": meas, "simulated_s": sim})
        sims, meas_l = by_phase.setdefault(st.phase, ([], []))
        sims.append(sim_total)
        meas_l.append(st.step_seconds)
        step_rows.append({"phase": st.phase, "step": st.index, "context": st.context,
                          "measured_s": st.step_seconds, "simulated_s": sim_total,
                          "ops": sum(1 for o in st.graph.ops if o.costs)})
    overall, per = grouped(triples)
    step_stats = {p: ErrorStats.from_pairs(s, m) for p, (s, m) in by_phase.items()}
    return TorchValidation(overall, dict(sorted(per.items())), step_stats, op_rows, step_rows, unmatched)
