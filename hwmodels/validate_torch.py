"""Simulate a traced PyTorch run and score it against the run's measurements (``xpusim validate torch``).

A step's simulated time is the sum of its traced ops' times, one after another on one stream (eager
PyTorch on a CPU runs them so; on a GPU it is the launch order of one stream). Ops are costed by
:class:`hwmodels.cpu.CPUModel` on the CPU and by the catalog GPU's kernel model on CUDA (GEMMs and
attention through their xpusim ops, the rest as memory-bound ``MemoryOp`` s of their bytes).

On Hopper a CUDA step's compute-bound kernels run at the step's power-limited clock rather than at the clock
they hold alone (:class:`CudaStepCost`, ``clock_context``).

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
from workloads.ops import DecodeAttention, Gemm, MemoryOp, Op, OpKind, PrefillAttention
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
    norm and other elementwise ops the stack's tables of their kind.

    Clock in context (``clock_context``, on by default where the family is in :data:`CLOCK_CONTEXT_FAMILIES`):
    a big GEMM timed alone, back to back, runs at its own power-limited clock (the H100's 8B gate_up at m = 2048:
    1455-1500 MHz at 640-660 W in kernel_times.csv, 660 us), and the family's GEMM constants hold that context.
    Inside a step, memory-bound kernels and host gaps lower the mean power and the clock rises (the same GEMM
    took 602-609 us in the validate-torch prefills). ``step_costs`` prices a step's kernels in that context
    (:func:`hwmodels.power.context_scales`, the family's ``[power]`` table): each kernel as a
    :class:`~hwmodels.power.Phase` (its FLOPs, DRAM bytes, and its time split by :meth:`kernel_phase` into
    clock-bound seconds and the rest), the step as their sum plus the GPU's idle time the co-execution gives,
    and each kernel's clock-bound seconds scaled by ``x_k / x_step`` (its sustained clock alone over the
    step's), at least ``1 / max_clock_ratio``.

    Only a speed-up is applied (factor ``min(1, x_k / x_step)``): a kernel that is not power-limited alone
    (``x_k = 1``: attention at these sizes, small GEMMs) or less than the step was timed in short calls, before
    the controller acts, at whatever clock the GPU held (1545-1770 MHz under 390-600 W for the H100's mid-size
    GEMMs in kernel_times.csv, not f_max), so the clock its constants hold is not known to be above the
    step's. Scaled both ways, the in-step cuDNN prefill attention (constants fitted on such calls) came out
    12 % slow and its wape rose from 0.004-0.029 to 0.064-0.142 on the eight committed batch-4 runs
    (docs/accuracy.md).
    Memory-bound ops are not clock-bound. No constant is fitted for any of this."""

    def __init__(self, gpu: Any, stack: str = "torch-step", host: str = "h200-xeon-torch2.11",
                 clock_context: bool | None = None) -> None:
        from hwmodels.host import load_host
        from hwmodels.kernels import GPUKernelModel

        self.model = GPUKernelModel(gpu, stack=stack)
        self.host = load_host(host)
        family = gpu.architecture.value
        self.clock_context = family in CLOCK_CONTEXT_FAMILIES if clock_context is None else clock_context
        self.power: Any = None
        if self.clock_context:
            from hwmodels.power import gpu_power

            self.power = gpu_power(gpu)  # ConfigError naming the file where the family has no [power] table
        self._alone: dict[Any, float] = {}

    def __call__(self, op: TracedOp) -> float:
        """The op's device time alone (the kernel model's; no clock context)."""
        return self._priced(op)[0]

    def _priced(self, op: TracedOp) -> tuple[float, dict[str, float], Op | None]:
        if not op.costs:
            return 0.0, {}, None
        if op.op is not None:
            t, bd = self.model.cost(op.op)
            return t, bd, op.op
        m = _memory_op(op)
        t, bd = self.model.cost(m)
        return max(0.0, t - bd.get("launch_s", 0.0)), bd, m

    def kernel_phase(self, op: Op, t: float, bd: dict[str, float]) -> Any:
        """``op`` priced at ``t`` seconds with breakdown ``bd`` as a :class:`hwmodels.power.Phase`: its FLOPs
        (tensor work: GEMMs and attention; a memory-bound op's few FLOPs are not counted), DRAM bytes, and the
        seconds that stretch as 1 / clock: the ``clock_s`` the kernel model reports for a GEMM
        (:func:`hwmodels.kernels.gemm.gemm_cost`) or an attention call (its CTA schedule's share of the body).
        A memory-bound op: none."""
        from hwmodels.power import Phase

        if isinstance(op, Gemm):
            tc = min(bd.get("clock_s", 0.0), t)
            split = bd.get("split_k", 1.0)
            nbytes = op.bytes + (8.0 * op.m * op.n * split if split > 1 else 0.0)  # fp32 partials (gemm.py)
            return Phase(op.flops, nbytes, tc, t - tc)
        if isinstance(op, (PrefillAttention, DecodeAttention)):
            tc = min(bd.get("clock_s", 0.0), t)
            return Phase(op.flops, bd.get("bytes", op.bytes), tc, t - tc)
        return Phase(0.0, float(getattr(op, "bytes", 0.0)), 0.0, t)

    def in_context(self, priced: Sequence[tuple[float, Any]], idle_s: float) -> list[float]:
        """Device times of a step's kernels, given as ``(seconds alone, Phase or None)`` (None: no kernel), in
        the step's clock context; the GPU idles ``idle_s`` seconds between them. Unchanged where clock context
        is off."""
        if not self.clock_context:
            return [t for t, _ in priced]
        from hwmodels.power import context_scales, sustained_clock

        phases = [ph for _, ph in priced if ph is not None]
        alone = []
        for ph in phases:
            x = self._alone.get(ph)
            if x is None:
                x = self._alone[ph] = sustained_clock(self.model.gpu, ph, cal=self.power).clock_frac
            alone.append(x)
        scales, _ = context_scales(self.model.gpu, phases, idle_s, cal=self.power, alone=alone)
        it = iter(scales)
        out = []
        for t, ph in priced:
            if ph is None:
                out.append(t)
                continue
            f = min(1.0, next(it))  # only a speed-up (class docstring)
            out.append(t if f == 1.0 or ph.t_compute == 0.0 else ph.t_other + ph.t_compute * f)
        return out

    def step_costs(self, ops: Sequence[TracedOp]) -> list[float]:
        """Device time of each op of one step, in the step's clock context (class docstring)."""
        from hwmodels.host import step_time

        priced = [self._priced(op) for op in ops]
        alone = [t for t, _, _ in priced]
        if not self.clock_context:
            return alone
        busy = sum(alone)
        idle = max(0.0, step_time(self.host, [o.costs for o in ops], alone) - busy)
        return self.in_context([(t, self.kernel_phase(m, t, bd) if m is not None else None)
                                for t, bd, m in priced], idle)

    def step_time(self, ops: Sequence[TracedOp], sims: Sequence[float]) -> float:
        from hwmodels.host import step_time

        return step_time(self.host, [o.costs for o in ops], sims)

    def kernels_step_time(self, ops: Sequence[Op], views_per_launch: float) -> float:
        """An eager step given as xpusim ops in launch order (e.g.
        :func:`workloads.measured_xpusim.torch_llama_step_ops`): a ``MemoryOp`` of ``kernels`` launches is
        that many equal kernels; every launch costs the host ``launch_s`` plus ``views_per_launch`` view
        ops (the traced module's ratio, which a list of kernels does not carry). Its memory ops take the
        stack table of the role their name gives (``rope*`` -> rope, ``silu*`` -> activation). Kernels in
        the step's clock context as :meth:`step_costs`."""
        from dataclasses import replace

        from hwmodels.host import co_execute
        from hwmodels.power import Phase

        per_launch = self.host.launch_s + views_per_launch * self.host.view_s
        priced: list[tuple[float, Any]] = []
        for op in ops:
            if isinstance(op, MemoryOp):
                role = _ROLE_BY_NAME.get(op.name.split("_")[0])
                m = replace(op, kind=role) if role is not None else op
                t, bd = self.model.cost(m)
                n = max(1, m.kernels)
                body = max(0.0, t - bd.get("launch_s", 0.0)) / n
                priced += [(body, Phase(0.0, m.bytes / n, 0.0, body))] * n  # not clock-bound (kernel_phase)
            else:
                t, bd = self.model.cost(op)
                priced.append((t, self.kernel_phase(op, t, bd)))
        alone = [t for t, _ in priced]
        if self.clock_context:
            step, _, busy = co_execute([(per_launch, t) for t in alone], self.host.kernel_gap_s)
            alone = self.in_context(priced, max(0.0, step - busy))
        return co_execute([(per_launch, t) for t in alone], self.host.kernel_gap_s)[0]


def views_per_launch(ops: Sequence[TracedOp]) -> float:
    """View/metadata ops (``not op.costs``: no kernel) per op that launches one, over a traced step: the
    ``views_per_launch`` of :meth:`CudaStepCost.kernels_step_time`, which a list of kernels does not carry.
    Raises ``ValueError`` when no op launches a kernel."""
    launches = sum(o.costs for o in ops)
    if launches == 0:
        raise ValueError(f"views_per_launch: none of the {len(ops)} ops launches a kernel")
    return sum(not o.costs for o in ops) / launches


# Families whose GEMM / attention constants were fitted on kernels timed alone under sustained load, and whose
# [power] table is our own measurement (hopper.toml: gemm.csv, kernel_times.csv, the H200 power run): the
# clock-in-context correction applies. Ampere's kernel constants come from short microbenchmarks (the Vidur
# files: kernels that end before the power controller acts), so its paths are unchanged.
CLOCK_CONTEXT_FAMILIES = frozenset({"hopper"})


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
