"""Fit an architecture family's silicon constants and the software-stack profiles measured on it.

``python benchmarks/fit_kernels.py ampere`` minimises, with scipy's bounded least squares, the log
ratio sim/meas over (file, op) groups weighted equally (so small ops count as much as big GEMMs), on a
stride-subsample of the files marked ``fitted`` in ``accuracy_ops.FIT_FILES`` (the shared files and
xpusim's own measurements under ``validation/measured/``) whose GPU is of that
family, and prints the family's ``[kernels]`` values (``hwmodels/calibration/<family>.toml``) and each
stack's (``hwmodels/stacks/<stack>.toml``). Every file is simulated under its own format's stack, so each
stack's constants are fitted on that stack's files only. Attention rows and constants are not fitted
here (``benchmarks/fit_attention.py``); nor are tile shapes, thread counts, kernel geometry (read from
the kernels' source) or the communication constants (no data here).

Reference points that pin products of constants: ``cublas`` and ``torch`` (a tuned ``torch.matmul`` /
``F.linear``) define the family's GEMM efficiency (``gemm_eff`` 1); a torch elementwise kernel (``add``/
``elementwise``, ``bw_eff`` 1; where a stack's files time both, ``add`` alone: the strided, unvectorised
``elementwise`` chains of eager PyTorch are slower) and, for ``vllm`` and ``torch``, the GEMM's weight
streaming (``gemm_bw_eff`` 1) define the family's streaming bandwidth.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy_ops import DEFAULT_DATA, FIT_FILES, load_shared

from hwmodels.gpu import load_gpu
from hwmodels.kernels import Calibration, Stack, load_calibration, load_stack
from hwmodels.validate_ops import simulate_measured, stack_for
from workloads.measured import MeasuredFile
from workloads.ops import OpKind

FAMILY_PARAMS = {
    "launch_s": (0.5e-6, 6e-6), "mem_latency_s": (0.05e-6, 1.5e-6),
    "gemm_peak_eff": (0.5, 1.0), "gemm_l2_bytes_per_clk_sm": (8.0, 128.0), "gemm_tile_s": (0.0, 20e-6),
    "gemm_overlap_loss": (0.0, 1.0),
    "mem_eff": (0.6, 1.0), "sm_bw_share": (0.5, 8.0), "l2_bw_mult": (1.0, 5.0),
}
STACK_PARAMS = {
    "gemm_eff": (0.5, 1.2), "gemm_bw_eff": (0.4, 1.2), "host_overhead_s": (0.0, 60e-6),
    "gather_index_latencies": (0.1, 5.0), "gather_elems_per_sm_cycle": (0.05, 20.0),
}
IMPL_BOUNDS = (0.1, 1.5)  # bw_eff of a memory kernel
REFERENCE_KINDS = {OpKind.ADD, OpKind.ELEMENTWISE}  # torch elementwise: bw_eff 1 by definition
GEMM_REFERENCE_STACKS = ("cublas", "torch")     # gemm_eff 1 by definition
STREAM_REFERENCE_STACKS = ("vllm", "torch")     # gemm_bw_eff 1 by definition
TARGET_PER_FILE = 1500
ATTENTION = {OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE}


def _solve(residuals, x0, lo, hi, keys, stacks, max_nfev):  # type: ignore[no-untyped-def]
    """Robust least squares in the unit box of the bounds; returns (family values, {stack: values})."""
    sol = least_squares(residuals, (x0 - lo) / (hi - lo), bounds=(0.0, 1.0), diff_step=1e-3, max_nfev=max_nfev,
                        loss="soft_l1", f_scale=0.02)
    x = lo + sol.x * (hi - lo)
    fam = {n: float(v) for (s, n), v in zip(keys, x) if not s}
    return fam, {s: {n: float(v) for (ss, n), v in zip(keys, x) if ss == s} for s in stacks}


def _subsample(m: MeasuredFile) -> MeasuredFile:
    recs = [r for r in m.records if not any(op.kind in ATTENTION for op in r.ops)]
    stride = max(1, math.ceil(len(recs) / TARGET_PER_FILE))
    return dataclasses.replace(m, records=tuple(recs[::stride]))


def _free_params(stack: Stack, files: list[MeasuredFile]) -> list[str]:
    """The stack's constants its files exercise, minus those fixed as references."""
    kinds = {op.kind for m in files for r in m.records for op in r.ops}
    wall = any(m.timing.value == "wall_clock" for m in files)
    names = []
    if OpKind.GEMM in kinds:
        if stack.name not in (*GEMM_REFERENCE_STACKS, "vllm"):
            names.append("gemm_eff")
        if stack.name not in STREAM_REFERENCE_STACKS:
            names.append("gemm_bw_eff")
    if wall:
        names.append("host_overhead_s")
    if OpKind.EMBEDDING in kinds:
        names += ["gather_index_latencies", "gather_elems_per_sm_cycle"]
    # a file that times the vectorised add apart from strided elementwise chains (torch) has add alone
    refs = {OpKind.ADD} if {OpKind.ADD, OpKind.ELEMENTWISE} <= kinds else REFERENCE_KINDS
    for kind in sorted(kinds & set(stack.ops), key=lambda k: k.value):
        if kind not in refs:
            names.append(f"{kind.value}.bw_eff")
    return names


def _get(stack: Stack, name: str) -> float:
    if "." in name:
        kind, key = name.split(".")
        return float(getattr(stack.ops[OpKind(kind)], key))
    return float(getattr(stack, name))


def _with(stack: Stack, values: dict[str, float]) -> Stack:
    top = {k: v for k, v in values.items() if "." not in k}
    ops = dict(stack.ops)
    for k, v in values.items():
        if "." in k:
            kind, key = k.split(".")
            ops[OpKind(kind)] = dataclasses.replace(ops[OpKind(kind)], **{key: v})
    return dataclasses.replace(stack, ops=ops, **top)


def fit(family: str, data: Path, max_nfev: int = 40,
        family_keys: tuple[str, ...] = ()) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The joint fit; ``family_keys`` limits the family constants it moves (default: all of them)."""
    files = []
    for f in FIT_FILES:
        gpu = load_gpu(f.hardware)
        if f.fitted and gpu.architecture.value == family:
            m = _subsample(load_shared(f, data))
            if m.records:
                files.append((m, gpu, f.stack or stack_for(m.format)))
    if not files:
        raise SystemExit(f"no shared files for family {family}")
    base = load_calibration(family)
    stacks = {s: load_stack(s) for _, _, s in files}
    keys: list[tuple[str, str]] = [("", n) for n in (family_keys or FAMILY_PARAMS) if n in FAMILY_PARAMS]
    for s, st in stacks.items():
        keys += [(s, n) for n in _free_params(st, [m for m, _, ss in files if ss == s])]

    def bounds(k: tuple[str, str]) -> tuple[float, float]:
        if not k[0]:
            return FAMILY_PARAMS[k[1]]
        return STACK_PARAMS.get(k[1], IMPL_BOUNDS)

    lo = np.array([bounds(k)[0] for k in keys])
    hi = np.array([bounds(k)[1] for k in keys])
    x0 = np.array([getattr(base, n) if not s else _get(stacks[s], n) for s, n in keys], dtype=float)
    x0 = np.clip(x0, lo, hi)
    scale = hi - lo

    def unpack(u: np.ndarray) -> tuple[Calibration, dict[str, Stack]]:
        x = lo + u * scale
        cal = dataclasses.replace(base, **{n: float(v) for (s, n), v in zip(keys, x) if not s})
        sts = {s: _with(st, {n: float(v) for (ss, n), v in zip(keys, x) if ss == s}) for s, st in stacks.items()}
        return cal, sts

    def residuals(u: np.ndarray) -> np.ndarray:
        cal, sts = unpack(u)
        res = []
        for m, gpu, s in files:
            groups: dict[str, list[float]] = {}
            for p in simulate_measured(m, gpu, cal, sts[s]):
                groups.setdefault(p.op, []).append(math.log(max(p.simulated_s, 1e-12) / p.measured_s))
            for r in groups.values():
                res.extend(np.asarray(r) / math.sqrt(len(r)))
        return np.asarray(res)

    sol = least_squares(residuals, (x0 - lo) / scale, bounds=(0.0, 1.0), diff_step=1e-3, max_nfev=max_nfev,
                        loss="soft_l1", f_scale=0.05)
    x = lo + sol.x * scale
    fam = {n: float(v) for (s, n), v in zip(keys, x) if not s}
    per_stack = {s: {n: float(v) for (ss, n), v in zip(keys, x) if ss == s} for s in stacks}
    return fam, per_stack


GEMM_FAMILY_PARAMS = ("gemm_peak_eff", "gemm_l2_bytes_per_clk_sm", "gemm_tile_s", "gemm_overlap_loss")
GEMM_STACK_PARAMS = ("gemm_eff", "gemm_bw_eff", "host_overhead_s")
TIME_WEIGHT = 0.8  # share of a file's weight spread by measured time (WAPE), the rest per row (MAPE)


def fit_gemm(family: str, data: Path, max_nfev: int = 60, time_weight: float = TIME_WEIGHT,
             only: str = "") -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Refit only the GEMM constants on the GEMM rows of the family's fitted files (the other constants
    as they are): log(sim/meas) per row, each file's weight spread ``time_weight`` by measured time (the
    large GEMMs that carry the WAPE) and the rest evenly over its rows (the MAPE), soft-L1. Rows are
    costed with :func:`hwmodels.kernels.gemm.gemm_times`, one call per (n, k) of a file."""
    from hwmodels.kernels.gemm import gemm_times
    from workloads.ops import Gemm

    files = []
    for f in FIT_FILES:
        gpu = load_gpu(f.hardware)
        if f.fitted and gpu.architecture.value == family and only in f.path:
            m = load_shared(f, data)
            recs = [(r.ops[0], r.seconds) for r in m.records if len(r.ops) == 1 and isinstance(r.ops[0], Gemm)]
            if recs:
                extra = m.timing.value == "wall_clock"
                files.append((gpu, f.stack or stack_for(m.format), recs, extra))
    if not files:
        raise SystemExit(f"no shared GEMM rows for family {family}")
    base = load_calibration(family)
    stacks = {s: load_stack(s) for _, s, _, _ in files}
    keys: list[tuple[str, str]] = [("", n) for n in GEMM_FAMILY_PARAMS]
    for s in sorted(stacks):
        wall = any(e for _, ss, _, e in files if ss == s)
        keys += [(s, n) for n in GEMM_STACK_PARAMS
                 if (n != "host_overhead_s" or wall)
                 and (n == "host_overhead_s" or s not in (*GEMM_REFERENCE_STACKS, "vllm"))]
    lo = np.array([(FAMILY_PARAMS if not s else STACK_PARAMS)[n][0] for s, n in keys])
    hi = np.array([(FAMILY_PARAMS if not s else STACK_PARAMS)[n][1] for s, n in keys])
    x0 = np.clip(np.array([getattr(base, n) if not s else getattr(stacks[s], n) for s, n in keys], dtype=float),
                 lo, hi)
    groups = []
    for gpu, s, recs, extra in files:
        meas = np.array([t for _, t in recs])
        w = np.sqrt((1 - time_weight) / len(meas) + time_weight * meas / meas.sum())
        by_nk: dict[tuple[int, int, object], list[int]] = {}
        for i, (op, _) in enumerate(recs):
            by_nk.setdefault((op.n, op.k, op.dtype), []).append(i)
        shapes = [(n, k, dt, np.array(idx), np.array([recs[i][0].m for i in idx])) for (n, k, dt), idx in by_nk.items()]
        groups.append((gpu, s, shapes, meas, w, extra))

    def unpack(u: np.ndarray) -> tuple[Calibration, dict[str, Stack]]:
        x = lo + u * (hi - lo)
        cal = dataclasses.replace(base, **{n: float(v) for (s, n), v in zip(keys, x) if not s})
        return cal, {s: dataclasses.replace(st, **{n: float(v) for (ss, n), v in zip(keys, x) if ss == s})
                     for s, st in stacks.items()}

    def residuals(u: np.ndarray) -> np.ndarray:
        cal, sts = unpack(u)
        out = []
        for gpu, s, shapes, meas, w, extra in groups:
            sim = np.empty_like(meas)
            for n, k, dt, idx, ms in shapes:
                sim[idx] = gemm_times(gpu, cal, sts[s], n, k, ms, dt)
            if extra:
                sim += sts[s].host_overhead_s
            out.append(np.log(sim / meas) * w)
        return np.concatenate(out)

    return _solve(residuals, x0, lo, hi, keys, stacks, max_nfev)


MEMORY_FAMILY_PARAMS = ("mem_latency_s",)
ROW_IMPL_PARAMS = {"bw_eff": IMPL_BOUNDS, "passes": (0.25, 3.0)}


def fit_memory(family: str, data: Path, max_nfev: int = 60, family_keys: tuple[str, ...] = (),
               time_weight: float = TIME_WEIGHT) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Refit only the per-token ("row") memory kernels' constants (each stack's ``bw_eff`` and
    ``passes`` of its row-geometry op kinds; ``family_keys`` of the family's, if named) on the rows of
    those op kinds in the family's fitted files, the other constants as they are. Weights as
    :func:`fit_gemm`: per file, ``time_weight`` by measured time, the rest per row."""
    from hwmodels.kernels import GPUKernelModel
    from hwmodels.kernels.stack import Geometry

    base = load_calibration(family)
    files = []
    for f in FIT_FILES:
        gpu = load_gpu(f.hardware)
        if not (f.fitted and gpu.architecture.value == family):
            continue
        m = load_shared(f, data)
        st = load_stack(f.stack or stack_for(m.format))
        rows = [kind for kind, impl in st.ops.items() if impl.geometry is Geometry.ROW]
        recs = [(r.ops[0], r.seconds) for r in m.records
                if len(r.ops) == 1 and getattr(r.ops[0], "kind", None) in rows]
        if recs:
            files.append((gpu, st.name, recs))
    if not files:
        raise SystemExit(f"no per-token memory-kernel rows for family {family}")
    stacks = {s: load_stack(s) for _, s, _ in files}
    keys: list[tuple[str, str]] = [("", n) for n in family_keys]
    for s in sorted(stacks):
        kinds = sorted({op.kind for _, ss, recs in files if ss == s for op, _ in recs}, key=lambda k: k.value)
        keys += [(s, f"{k.value}.{p}") for k in kinds for p in ROW_IMPL_PARAMS]
    lo = np.array([FAMILY_PARAMS[n][0] if not s else ROW_IMPL_PARAMS[n.split(".")[1]][0] for s, n in keys])
    hi = np.array([FAMILY_PARAMS[n][1] if not s else ROW_IMPL_PARAMS[n.split(".")[1]][1] for s, n in keys])
    x0 = np.clip(np.array([getattr(base, n) if not s else _get(stacks[s], n) for s, n in keys], dtype=float),
                 lo, hi)
    weights = []
    for _, _, recs in files:
        meas = np.array([t for _, t in recs])
        weights.append((meas, np.sqrt((1 - time_weight) / len(meas) + time_weight * meas / meas.sum())))

    def unpack(u: np.ndarray) -> tuple[Calibration, dict[str, Stack]]:
        x = lo + u * (hi - lo)
        cal = dataclasses.replace(base, **{n: float(v) for (s, n), v in zip(keys, x) if not s})
        return cal, {s: _with(st, {n: float(v) for (ss, n), v in zip(keys, x) if ss == s})
                     for s, st in stacks.items()}

    def residuals(u: np.ndarray) -> np.ndarray:
        cal, sts = unpack(u)
        out = []
        for (gpu, s, recs), (meas, w) in zip(files, weights):
            model = GPUKernelModel(gpu, cal, sts[s])
            sim = np.array([model.time(op) for op, _ in recs])
            out.append(np.log(sim / meas) * w)
        return np.concatenate(out)

    return _solve(residuals, x0, lo, hi, keys, stacks, max_nfev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("family")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-nfev", type=int, default=40)
    ap.add_argument("--gemm", action="store_true", help="refit only the GEMM constants, on the GEMM rows")
    ap.add_argument("--memory", action="store_true",
                    help="refit only the per-token memory kernels' constants, on their rows")
    ap.add_argument("--family-keys", default="",
                    help="with --memory: family keys to refit too; without --gemm/--memory: the only family keys "
                         "the joint fit moves (comma list; default all; 'none': only the stacks' constants)")
    ap.add_argument("--time-weight", type=float, default=TIME_WEIGHT,
                    help="with --memory or --gemm: share of each file's weight spread by measured time (the rest "
                         "per row)")
    ap.add_argument("--only", default="",
                    help="with --gemm: fit only the fitted files whose path contains this text")
    ap.add_argument("--score", action="store_true",
                    help="then score every file of the family with the fitted constants (validate_ops)")
    args = ap.parse_args()
    keys = tuple(k for k in args.family_keys.split(",") if k)
    if args.memory:
        fam, stacks = fit_memory(args.family, args.data, args.max_nfev, keys, args.time_weight)
    elif args.gemm:
        fam, stacks = fit_gemm(args.family, args.data, args.max_nfev, args.time_weight, args.only)
    else:
        fam, stacks = fit(args.family, args.data, args.max_nfev, keys)
    sys.stdout.write(f"# calibration/{args.family}.toml [kernels]\n")
    for k, v in fam.items():
        sys.stdout.write(f"{k} = {v:.4g}\n")
    for s, vals in stacks.items():
        sys.stdout.write(f"# stacks/{s}.toml\n")
        for k, v in vals.items():
            sys.stdout.write(f"{k} = {v:.4g}\n")
    if args.score:
        for line in score(args.family, args.data, fam, stacks, args.only if args.gemm else ""):
            sys.stdout.write(line + "\n")


def score(family: str, data: Path, fam: dict[str, float], stacks: dict[str, dict[str, float]],
          only: str = "") -> list[str]:
    """``validate_ops`` of every file of the family under the fitted constants, one ``# file: wape / mape``
    line each beside the committed constants' figures, saying whether this fit used the file (a fitted file
    whose path contains ``only``) or held it out."""
    from hwmodels.validate_ops import validate_ops

    cal = dataclasses.replace(load_calibration(family), **fam)
    out = []
    for f in FIT_FILES:
        gpu = load_gpu(f.hardware)
        if gpu.architecture.value != family:
            continue
        m = load_shared(f, data)
        name = f.stack or stack_for(m.format)
        st = dataclasses.replace(load_stack(name), **stacks.get(name, {}))
        new, old = validate_ops(m, gpu, cal, st).overall, validate_ops(m, gpu, stack=name).overall
        out.append(f"# {f.path}: wape {old.wape:.4f} -> {new.wape:.4f}, mape {old.mape:.4f} -> {new.mape:.4f} "
                   f"({'fitted' if f.fitted and only in f.path else 'held out'})")
    return out


if __name__ == "__main__":
    main()
