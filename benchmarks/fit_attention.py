"""Fit the attention constants of one architecture family on its shared measured attention files.

``python benchmarks/fit_attention.py ada`` minimises, with scipy's bounded least squares (soft-L1),
the log ratio sim/meas of every attention row of the family's shared files (``accuracy_ops``), each
regime (file x pure prefill / pure decode / mixed) weighted equally, and prints the ``[attention]``
values to paste into ``hwmodels/calibration/<family>.toml``, with n / WAPE / MAPE per regime.
``--kernel fa2`` fits the family's ``[attention_fa2]`` table instead, on the files whose software stack
runs that generation (PyTorch's SDPA flash backend on Hopper: ``validation/measured/h200/attention.csv``);
``--kernel cudnn`` the ``[attention_cudnn]`` table, on the SDPA grid run with cuDNN's backend first
(``validation/measured/h200/attention_cudnn.csv``, PyTorch's default dispatch on Hopper: the torch stack).
``--fit-on attn_prefill,attn_decode`` fits on those regimes only and reports the rest as held out;
``--fit-kv-max 4096`` fits on the rows whose decodes hold at most that many cached tokens and reports
the rows beyond it (held out) apart.
The kernel shapes (tiles, split heuristic, grid) are FlashAttention's, not fitted.
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

from accuracy_ops import DEFAULT_DATA, FIT_FILES, SharedFile, load_shared

from hwmodels.gpu import GPUSpec, load_gpu
from hwmodels.kernels import load_stack
from hwmodels.kernels.attention import decode_attention_cost, prefill_attention_cost
from hwmodels.kernels.attention_calibration import AttentionCalibration, load_attention_calibration
from hwmodels.validate_ops import stack_for
from workloads.accuracy import ErrorStats
from workloads.measured import MeasuredOp
from workloads.ops import DecodeAttention, Op, OpKind, PrefillAttention

# name: (low, high)
PARAMS = {
    "tile_eff": (0.2, 1.0), "cta_s": (0.0, 10e-6), "block_s": (0.0, 5e-6), "empty_cta_s": (0.0, 2e-6),
    "launch_s": (0.5e-6, 8e-6), "combine_s": (0.0, 10e-6), "dram_eff": (0.5, 1.0), "prefill_extra_s": (0.0, 5e-6),
    "decode_cta_bw": (5e9, 400e9),
    "l2_reuse": (0.5, 3.0), "l2_bw_mult": (1.0, 5.0), "overlap_p": (1.0, 8.0),
}
_ATTN = {OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE}
TARGET_PER_REGIME = 1500  # stride-subsample larger regimes (speed; the report scores every row)
# per-kernel attention files
ATTENTION_FORMATS = ("vidur-attention", "lss-attention", "xpusim-attention", "xpusim-kernel-times")


def op_time(op: Op, gpu: GPUSpec, a: AttentionCalibration, event: tuple[float, float] = (0.0, 0.0)) -> float:
    """The kernels' device time under constants ``a``, plus ``event`` = (the stack's attention_event_s,
    attention_gap_s) for a file timed between CUDA events (the gap when the call's combine is a second kernel)."""
    if isinstance(op, PrefillAttention):
        t, bd = prefill_attention_cost(op, gpu, attn=a)
    elif isinstance(op, DecodeAttention):
        t, bd = decode_attention_cost(op, gpu, attn=a)
    else:
        raise TypeError(type(op).__name__)
    if event[0] > 0.0 and t > 0.0:
        t += event[0] + (event[1] if bd.get("combine_s", 0.0) > 0.0 else 0.0)
    return t


def _event(f: SharedFile) -> tuple[float, float]:
    st = load_stack(f.stack or stack_for(f.format))
    return st.attention_event_s, st.attention_gap_s


def file_kernel(fmt: str, family: str, stack: str | None = None) -> str:
    """The attention kernel a file's stack (default: its format's) runs on the family (its own, or the
    stack's pick)."""
    chosen = load_stack(stack or stack_for(fmt)).attention_kernel_for(family)
    return chosen if chosen is not None else load_attention_calibration(family).kernel.value


Row = tuple[str, GPUSpec, MeasuredOp, tuple[float, float]]


def family_rows(family: str, data: Path, kernel: str | None = None) -> list[Row]:
    """(regime label, gpu, record, event overhead) of every attention record of the family's measured files
    (shared and xpusim's own) that ran the ``kernel`` generation (default: the family's own): the file's
    stack's kernel, or the record's own where its ops name one (``xpusim-kernel-times``)."""
    out = []
    kernel = kernel or load_attention_calibration(family).kernel.value
    for f in FIT_FILES:  # a file measured under another stack than its format's names it (SharedFile.stack)
        stack = f.stack
        gpu = load_gpu(f.hardware)
        if not f.fitted or gpu.architecture.value != family or f.format not in ATTENTION_FORMATS:
            continue  # held-out files (the H100's) never enter a fit
        own = file_kernel(f.format, family, stack)
        ev = _event(f)
        m = load_shared(f, data)
        for r in m.records:
            if not r.ops or not all(op.kind in _ATTN for op in r.ops):
                continue
            ran = {getattr(op, "kernel", None) or own for op in r.ops}
            if ran == {kernel}:
                tag = "" if f.format == "xpusim-attention" else f"{f.format}:"
                out.append((f"{Path(f.path).parent.name}:{tag}{r.op.split('.')[0]}", gpu, r, ev))
    return out


def decode_kv(r: MeasuredOp) -> int:
    """Cached tokens of the longest decode of a record (the new token not counted); 0 without decodes."""
    kv = 0
    for op in r.ops:
        if isinstance(op, DecodeAttention):
            kv = max(kv, *(n - 1 for n in op.kv_lens))
        elif isinstance(op, PrefillAttention):
            kv = max(kv, 0, *(k - 1 for q, k in op.seqs if q == 1))
    return kv


def evaluate(rows: list[Row], a: AttentionCalibration) -> dict[str, ErrorStats]:
    sims: dict[str, list[float]] = {}
    meas: dict[str, list[float]] = {}
    for label, gpu, r, ev in rows:
        sims.setdefault(label, []).append(sum(op_time(op, gpu, a, ev) for op in r.ops))
        meas.setdefault(label, []).append(r.seconds)
    return {k: ErrorStats.from_pairs(sims[k], meas[k]) for k in sorted(sims)}


def fit(family: str, data: Path, fit_on: set[str] | None = None, max_nfev: int = 40,
        params: tuple[str, ...] = tuple(PARAMS), kv_max: int | None = None,
        kernel: str | None = None) -> AttentionCalibration:
    rows = family_rows(family, data, kernel)
    if not rows:
        raise SystemExit(f"no shared attention files for family {family}")
    train = [x for x in rows if (fit_on is None or x[0].split(":")[-1] in fit_on)
             and (kv_max is None or decode_kv(x[2]) <= kv_max)]
    by_label: dict[str, list[Row]] = {}
    for x in train:
        by_label.setdefault(x[0], []).append(x)
    train = [x for xs in by_label.values() for x in xs[::max(1, math.ceil(len(xs) / TARGET_PER_REGIME))]]
    base = load_attention_calibration(family, kernel)
    names = list(params)
    lo = np.array([PARAMS[n][0] for n in names])
    hi = np.array([PARAMS[n][1] for n in names])
    x0 = np.clip(np.array([getattr(base, n) for n in names], dtype=float), lo, hi)
    scale = hi - lo
    counts: dict[str, int] = {}
    for label, _, _, _ in train:
        counts[label] = counts.get(label, 0) + 1

    def cal(u: np.ndarray) -> AttentionCalibration:
        return dataclasses.replace(base, **{n: float(v) for n, v in zip(names, lo + u * scale)})

    mean_s: dict[str, float] = {}
    for label, _, r, _ in train:
        mean_s[label] = mean_s.get(label, 0.0) + r.seconds / counts[label]
    # each row's log error, weighted up with its time so that WAPE (time-weighted) counts as much as MAPE
    weight = np.array([math.sqrt((0.5 + 0.5 * r.seconds / mean_s[label]) / counts[label])
                       for label, _, r, _ in train])

    def residuals(u: np.ndarray) -> np.ndarray:
        a = cal(u)
        return weight * np.array([math.log(max(sum(op_time(op, gpu, a, ev) for op in r.ops), 1e-12) / r.seconds)
                                  for label, gpu, r, ev in train])

    sol = least_squares(residuals, (x0 - lo) / scale, bounds=(0.0, 1.0), diff_step=1e-3, max_nfev=max_nfev,
                        loss="soft_l1", f_scale=0.05)
    return cal(sol.x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("family")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-nfev", type=int, default=40)
    ap.add_argument("--fit-on", default="", help="comma-separated regimes (attn_prefill, attn_decode, attn_mixed)")
    ap.add_argument("--fit-kv-max", type=int, default=None,
                    help="fit on rows whose decodes hold at most this many cached tokens; report the rest apart")
    ap.add_argument("--params", default="", help="comma-separated constants to fit (default: all)")
    ap.add_argument("--report-only", action="store_true", help="score the stored constants, fit nothing")
    ap.add_argument("--kernel", default=None,
                    help="the kernel generation's table to fit (fa2, fa3; default: the family's [attention])")
    args = ap.parse_args()
    fit_on = set(args.fit_on.split(",")) if args.fit_on else None
    a = (load_attention_calibration(args.family, args.kernel) if args.report_only
         else fit(args.family, args.data, fit_on, args.max_nfev,
                  tuple(args.params.split(",")) if args.params else tuple(PARAMS), args.fit_kv_max, args.kernel))
    if not args.report_only:
        for n in PARAMS:
            sys.stdout.write(f"{n} = {getattr(a, n):.4g}\n")
    rows = family_rows(args.family, args.data, args.kernel)
    if args.fit_kv_max is not None:
        rows = [(f"{label}{'' if decode_kv(r) <= args.fit_kv_max else ':held_out'}", gpu, r, ev)
                for label, gpu, r, ev in rows]
    for label, s in evaluate(rows, a).items():
        held = "" if (fit_on is None or label.split(":")[-1] in fit_on) and not label.endswith(":held_out") \
            else "  (held out)"
        sys.stdout.write(f"# {label:32s} n={s.n:6d} wape={s.wape:.4f} mape={s.mape:.4f}{held}\n")


if __name__ == "__main__":
    main()
