"""Fit the ``torch-step`` stack (``hwmodels/stacks/torch-step.toml``) on the 1B ``validate torch`` run.

``python benchmarks/fit_torch_step.py`` reads ``validation/measured/h200/validate_torch_llama-3.2-1b`` (the
profiler's device time of every aten op of one prefill of 4 x 512 tokens and 32 decode steps, PyTorch 2.11 eager,
H200) and, with the Hopper family constants and the stack's geometry (``geometry``, ``block_threads``, ``vec``,
``kernels``) fixed, fits per memory-op table (``norm``, ``add``, ``rope``, ``activation``, ``elementwise``) its
``passes`` and ``bw_eff``: those minimising the WAPE of the ops of that table's kind, each costed as
:class:`hwmodels.validate_torch.CudaStepCost` costs it (the kernel model less the launch), by Nelder-Mead over
(log passes, log bw_eff) from four starts, the best kept. The gather constants are closed form: the median 4-index
decode lookup gives ``gather_index_latencies`` = t / (4 x ``mem_latency_s``); the 2,048-index prefill lookup gives
``gather_elems_per_sm_cycle`` = elements / (SMs x clock x (t - ``mem_latency_s``)) (issue-bound: its bytes take
less time at the DRAM rate). It prints the values to put in the TOML and, per kind, n / WAPE in-sample (1B) and
held out (the 8B run, ``validate_torch_llama-3.1-8b``); ``--report-only`` scores the committed stack; ``--gemm``
also fits ``gemm_eff`` on the run's GEMMs (bounded scalar search on their WAPE; reported, not taken: the TOML says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hwmodels.gpu import GPUSpec, load_gpu
from hwmodels.kernels import GPUKernelModel, load_calibration, load_stack
from hwmodels.kernels.stack import OP_TABLES, Stack
from workloads.measured_xpusim import read_validate_torch
from workloads.ops import Gemm, MemoryOp, OpKind
from workloads.pytorch.tracer import TracedOp

H200 = ROOT / "validation" / "measured" / "h200"
FIT_RUN = H200 / "validate_torch_llama-3.2-1b"
HELD_OUT_RUN = H200 / "validate_torch_llama-3.1-8b"
GPU = "h200-sxm-141gb"
STACK = "torch-step"
STARTS = ((1.0, 1.0), (2.0, 0.5), (4.0, 0.25), (3.0, 0.1))  # (passes, bw_eff)


def memory_op(op: TracedOp) -> MemoryOp:
    """The ``MemoryOp`` :class:`~hwmodels.validate_torch.CudaStepCost` costs for a traced memory-bound op."""
    out = op.outputs[0] if op.outputs else None
    rows = out.numel // max(1, out.shape[-1]) if out is not None and out.shape else 1
    kind = op.kind if op.kind is not None else OpKind.ELEMENTWISE
    return MemoryOp(op.aten, kind, max(1, rows), op.bytes_read, op.bytes_written, op.flops)


def collect(run_dir: Path) -> dict[MemoryOp | Gemm, list[float]]:
    """Every memory-bound op and GEMM of a run (one key per distinct op) with its measured device times."""
    out: dict[MemoryOp | Gemm, list[float]] = defaultdict(list)
    for st in read_validate_torch(run_dir).steps:
        for op, meas in zip(st.graph.ops, st.op_seconds):
            if not op.costs or meas is None or op.kind is None:
                continue
            if op.op is None:
                out[memory_op(op)].append(meas)
            elif isinstance(op.op, Gemm):
                out[op.op].append(meas)
    return dict(out)


def op_time(model: GPUKernelModel, op: MemoryOp | Gemm) -> float:
    """As CudaStepCost: a GEMM with its launch (ramp and tail inside the kernel), a memory op without."""
    t, bd = model.cost(op)
    return t if isinstance(op, Gemm) else max(0.0, t - bd.get("launch_s", 0.0))


def wape(model: GPUKernelModel, ops: dict[MemoryOp | Gemm, list[float]]) -> float:
    err = tot = 0.0
    for op, meas in ops.items():
        s = op_time(model, op)
        err += sum(abs(s - m) for m in meas)
        tot += sum(meas)
    return err / tot if tot > 0 else math.nan


def by_kind(ops: dict[MemoryOp | Gemm, list[float]]) -> dict[OpKind, dict[MemoryOp | Gemm, list[float]]]:
    out: dict[OpKind, dict[MemoryOp | Gemm, list[float]]] = defaultdict(dict)
    for op, meas in ops.items():
        out[op.kind][op] = meas
    return out


def fit_gemm(gpu: GPUSpec, stack: Stack, ops: dict[MemoryOp | Gemm, list[float]]) -> Stack:
    """``stack`` with the ``gemm_eff`` (tensor throughput relative to the family's, which gemm.csv's isolated,
    L2-flushed F.linear calls check) that minimises the WAPE of the run's GEMMs (bounded scalar search)."""
    cal = load_calibration(gpu.architecture.value)

    def objective(e: float) -> float:
        return wape(GPUKernelModel(gpu, cal, dataclasses.replace(stack, gemm_eff=e)), ops)

    r = minimize_scalar(objective, bounds=(0.8, 1.5), method="bounded", options={"xatol": 1e-4})
    return dataclasses.replace(stack, gemm_eff=float(r.x))


def fit_table(gpu: GPUSpec, stack: Stack, kind: OpKind, ops: dict[MemoryOp | Gemm, list[float]]) -> Stack:
    """``stack`` with the (passes, bw_eff) of ``kind``'s table that minimise the WAPE of ``ops``."""
    cal = load_calibration(gpu.architecture.value)
    base = stack.impl(kind)

    def trial(x: np.ndarray) -> Stack:
        impl = dataclasses.replace(base, passes=float(math.exp(x[0])), bw_eff=float(math.exp(x[1])))
        return dataclasses.replace(stack, ops={**stack.ops, kind: impl})

    def objective(x: np.ndarray) -> float:
        return wape(GPUKernelModel(gpu, cal, trial(x)), ops)

    best = None
    for p, b in STARTS:
        r = minimize(objective, np.log([p, b]), method="Nelder-Mead",
                     options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None
    return trial(best.x)


def fit_gather(gpu: GPUSpec, stack: Stack, ops: dict[MemoryOp | Gemm, list[float]]) -> Stack:
    cal = load_calibration(gpu.architecture.value)
    emb = {op: m for op, m in ops.items() if isinstance(op, MemoryOp) and op.kind is OpKind.EMBEDDING}
    small = [m for op, ms in emb.items() if op.tokens <= stack.gather_small_max for m in ms]
    large = [(op, statistics.median(ms)) for op, ms in emb.items() if op.tokens > stack.gather_small_max]
    vals: dict[str, float] = {}
    small_ops = [op for op in emb if op.tokens <= stack.gather_small_max]
    if small and small_ops:
        idx = small_ops[0].tokens
        vals["gather_index_latencies"] = statistics.median(small) / (idx * cal.mem_latency_s)
    if large:
        op, t = max(large, key=lambda x: x[0].tokens)
        elems = op.bytes_written / 2.0
        vals["gather_elems_per_sm_cycle"] = elems / (gpu.sm_count * (gpu.boost_clock_hz or 1.5e9)
                                                     * (t - cal.mem_latency_s))
    return dataclasses.replace(stack, **vals)


def report(gpu: GPUSpec, stack: Stack, runs: dict[str, dict[MemoryOp | Gemm, list[float]]]) -> None:
    model = GPUKernelModel(gpu, stack=stack)
    kinds = sorted({op.kind for ops in runs.values() for op in ops}, key=lambda k: k.value)
    for kind in kinds:
        cells = []
        for name, ops in runs.items():
            sel = {op: m for op, m in ops.items() if op.kind is kind}
            cells.append(f"{name} n={sum(len(m) for m in sel.values()):5d} wape={wape(model, sel):.3f}")
        sys.stdout.write(f"# {kind.value:12s} " + "   ".join(cells) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--report-only", action="store_true", help="score the committed stack, fit nothing")
    ap.add_argument("--gemm", action="store_true",
                    help="also fit gemm_eff on the run's GEMMs (not taken: torch-step.toml says why)")
    args = ap.parse_args()
    gpu = load_gpu(GPU)
    stack = load_stack(STACK)
    fit_ops = collect(FIT_RUN)
    runs = {"1B (fitted)": fit_ops, "8B (held out)": collect(HELD_OUT_RUN)}
    if not args.report_only:
        groups = by_kind(fit_ops)
        stack = fit_gather(gpu, stack, fit_ops)
        sys.stdout.write(f"gather_index_latencies = {stack.gather_index_latencies:.4g}\n"
                         f"gather_elems_per_sm_cycle = {stack.gather_elems_per_sm_cycle:.4g}\n")
        if args.gemm:
            stack = fit_gemm(gpu, stack, groups[OpKind.GEMM])
            sys.stdout.write(f"gemm_eff = {stack.gemm_eff:.4g}\n")
        for table, kind in OP_TABLES.items():
            if kind not in stack.ops or kind not in groups:
                continue
            stack = fit_table(gpu, stack, kind, groups[kind])
            impl = stack.ops[kind]
            sys.stdout.write(f"[{table}] passes = {impl.passes:.5g}  bw_eff = {impl.bw_eff:.5g}\n")
    report(gpu, stack, runs)


if __name__ == "__main__":
    main()
