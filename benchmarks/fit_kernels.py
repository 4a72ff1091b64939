"""Fit the kernel-model constants of one architecture family on its shared measured files.

``python benchmarks/fit_kernels.py ampere`` minimises, with scipy's bounded least squares, the log
ratio sim/meas over (file, op) groups weighted equally (so small ops count as much as big GEMMs),
on a stride-subsample of the files marked ``fitted`` in ``accuracy_ops.SHARED_FILES``, and prints the
``[kernels]`` table to paste into ``hwmodels/calibration/<family>.toml``. Tile shapes and the
communication constants are not fitted (no data here).
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

from accuracy_ops import DEFAULT_DATA, SHARED_FILES, load_shared

from hwmodels.gpu import load_gpu
from hwmodels.kernels import load_calibration
from hwmodels.validate_ops import simulate_measured
from workloads.measured import MeasuredFile
from workloads.ops import OpKind

# name: (low, high); log-spaced search for the latencies
PARAMS = {
    "launch_s": (0.5e-6, 8e-6), "host_sync_s": (0.0, 60e-6),
    "gemm_peak_eff": (0.5, 1.0), "gemm_feed_elems": (0.0, 64.0), "gemm_tile_s": (0.0, 20e-6),
    "mem_eff": (0.6, 1.0), "sm_bw_share": (0.5, 8.0), "l2_bw_mult": (1.0, 5.0),
    "norm_eff": (0.1, 1.2), "rope_eff": (0.1, 1.2), "act_eff": (0.1, 1.2), "add_eff": (0.3, 1.2),
    "emb_eff": (0.02, 2.0), "elementwise_eff": (0.3, 1.2),
    "attn_peak_eff": (0.3, 1.0), "attn_cta_s": (0.0, 20e-6), "attn_empty_cta_s": (0.0, 5e-6),
}
TARGET_PER_FILE = 1500


def _subsample(m: MeasuredFile) -> MeasuredFile:
    stride = max(1, math.ceil(len(m.records) / TARGET_PER_FILE))
    return dataclasses.replace(m, records=m.records[::stride])


def fit(family: str, data: Path, max_nfev: int = 60) -> dict[str, float]:
    files = []
    for f in SHARED_FILES:
        gpu = load_gpu(f.hardware)
        if f.fitted and gpu.architecture.value == family:
            files.append((_subsample(load_shared(f, data)), gpu))
    if not files:
        raise SystemExit(f"no shared files for family {family}")
    base = load_calibration(family)
    names = [n for n in PARAMS if any(_uses(n, m) for m, _ in files)]
    lo = np.array([PARAMS[n][0] for n in names])
    hi = np.array([PARAMS[n][1] for n in names])
    x0 = np.clip(np.array([getattr(base, n) for n in names], dtype=float), lo, hi)
    scale = np.where(hi > 0, hi - lo, 1.0)

    def residuals(u: np.ndarray) -> np.ndarray:
        cal = dataclasses.replace(base, **{n: float(v) for n, v in zip(names, lo + u * scale)})
        res = []
        for m, gpu in files:
            pts = simulate_measured(m, gpu, cal)
            groups: dict[str, list[float]] = {}
            for p in pts:
                groups.setdefault(p.op, []).append(math.log(max(p.simulated_s, 1e-12) / p.measured_s))
            for r in groups.values():
                res.extend(np.asarray(r) / math.sqrt(len(r)))
        return np.asarray(res)

    u0 = (x0 - lo) / scale
    sol = least_squares(residuals, u0, bounds=(0.0, 1.0), diff_step=1e-3, max_nfev=max_nfev, loss="soft_l1",
                        f_scale=0.1)
    return {n: float(v) for n, v in zip(names, lo + sol.x * scale)}


_KIND_PARAM = {"norm_eff": OpKind.NORM, "rope_eff": OpKind.ROPE, "act_eff": OpKind.ACTIVATION,
               "add_eff": OpKind.ADD, "emb_eff": OpKind.EMBEDDING, "elementwise_eff": OpKind.ELEMENTWISE}


def _uses(name: str, m: MeasuredFile) -> bool:
    """Fit a constant only where the data exercises it."""
    if name == "host_sync_s":
        return m.timing.value == "wall_clock"
    kinds = {op.kind for r in m.records for op in r.ops}
    if name in _KIND_PARAM:
        return _KIND_PARAM[name] in kinds
    if name.startswith("attn_"):
        return bool(kinds & {OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE})
    if name.startswith("gemm_"):
        return OpKind.GEMM in kinds
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("family")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-nfev", type=int, default=60)
    args = ap.parse_args()
    for k, v in fit(args.family, args.data, args.max_nfev).items():
        sys.stdout.write(f"{k} = {v:.4g}\n")


if __name__ == "__main__":
    main()
