"""GEMM time: CUTLASS/cuBLAS-like tiling, wave quantisation, split-K for small grids.

For each candidate CTA tile (bm x bn) the grid is ceil(m/bm) x ceil(n/bn) tiles; when that grid
cannot fill the SMs the K loop is split (split-K, as cuBLAS does for decode-shaped GEMMs).
Tiles run in waves of ``sm_count``; one tile's time is its padded FLOPs at the per-SM tensor rate,
discounted by the operand-feed cost of small tiles (each MMA needs (bm + bn) operands per bm x bn
outputs), plus a fixed prologue/epilogue. Memory time is the A, B and C traffic (B, the weight,
read once: L2 catches the re-reads of a wave, but not the next use: weights stream cold) at the bandwidth the grid can draw. A tile's compute
and memory overlap (multi-stage pipelines): the kernel takes the larger of the two plus the share
``gemm_overlap_loss`` of the smaller that the pipeline fails to hide; the best
candidate wins, as a heuristic or autotuner would pick it. The family's ``gemm_peak_eff`` is a tuned
library's (cuBLAS through ``torch.matmul``); the software stack scales it (``gemm_eff``) and the
bandwidth its weight streaming reaches (``gemm_bw_eff``).

One implementation, vectorised over m: :func:`gemm_times` costs a GEMM of fixed (n, k) for a whole
array of m at once (every candidate tile and split-K factor as one numpy array of shape
(tiles, splits, m), the best per m); :func:`gemm_cost` is the same code at one m, with the chosen
candidate's breakdown. The serving simulation's per-(n, k) tables (``hwmodels.step``) call
:func:`gemm_times`, so the two can never disagree.
"""

from __future__ import annotations

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from hwmodels.kernels.stack import Stack
from workloads.ops import DType, Gemm

TILES: tuple[tuple[int, int], ...] = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128),
                                      (64, 64), (32, 128), (16, 128), (16, 64))
MIN_SPLIT_K = 256  # a split keeps at least this many K elements (a few pipeline stages)
MAX_SPLIT = 16
FIXED_SPLITS = (1, 2, 4, 8, 16)  # split-K factors tried besides the one that fills the SMs

_BM = np.array([t[0] for t in TILES], dtype=np.int64)[:, None, None]
_BN = np.array([t[1] for t in TILES], dtype=np.int64)[:, None, None]
_SPLITS = np.array(FIXED_SPLITS, dtype=np.int64)[None, :, None]


def _candidates(gpu: GPUSpec, cal: Calibration, stack: Stack, n: int, k: int, ms: np.ndarray,
                dtype: DType) -> dict[str, np.ndarray]:
    """Every candidate (tile, split-K) for every m: arrays of shape (tiles, splits, m); ``t`` is inf
    where a candidate is not allowed."""
    sms = gpu.sm_count
    b = dtype.bytes
    m = np.asarray(ms, dtype=np.int64)[None, None, :]
    tiles = -(-m // _BM) * -(-n // _BN)                       # (T, 1, M)
    fill = sms // np.maximum(1, tiles)                         # the split that fills the SMs
    split = np.concatenate([np.broadcast_to(_SPLITS, (len(TILES), len(FIXED_SPLITS), m.shape[2])),
                            fill], axis=1)                     # (T, S, M)
    valid = (split == 1) | ((split > 1) & (split <= MAX_SPLIT) & (tiles * split <= sms)
                            & (k / np.maximum(split, 1) >= MIN_SPLIT_K))
    valid[:, len(FIXED_SPLITS):, :] &= split[:, len(FIXED_SPLITS):, :] > 1
    split = np.maximum(split, 1)
    ctas = tiles * split
    waves = -(-ctas // sms)
    rate_sm = gpu.peak_flops(dtype) * cal.gemm_peak_eff * stack.gemm_eff / sms
    tile_eff = 1.0 / (1.0 + cal.gemm_feed_elems * (1.0 / _BM + 1.0 / _BN))
    t_tile = 2.0 * _BM * _BN * -(-k // split) / (rate_sm * tile_eff)
    compute = waves * t_tile
    nbytes = (b * (m * k + k * n + m * n)).astype(np.float64)
    nbytes = np.where(split > 1, nbytes + 4.0 * m * n * split * 2, nbytes)  # fp32 partials written and reduced
    # Weights stream cold: in a forward pass every other layer's weights pass through L2 between two
    # uses of this one, so no L2 credit (working set taken as the whole cache). Same arithmetic as
    # memory.stream_time, elementwise.
    dram = gpu.memory_bandwidth * cal.mem_eff * stack.gemm_bw_eff
    cap = gpu.memory_bandwidth * cal.sm_bw_share * np.minimum(np.maximum(ctas, 1), sms) / sms
    l2 = gpu.l2_cache_bytes
    if l2 <= 0:
        hit = np.zeros_like(nbytes)
    else:
        ws = np.maximum(nbytes, l2)
        hit = np.minimum(1.0, np.maximum(0.0, (l2 - ws) / (0.5 * l2)))
    rate_dram = np.minimum(dram, cap)
    rate_l2 = rate_dram * cal.l2_bw_mult
    memory = nbytes * (hit / rate_l2 + (1.0 - hit) / rate_dram)
    fixed = waves * cal.gemm_tile_s
    # the mainloop overlaps loads with MMAs, but not perfectly: a share of the shorter one shows
    t = fixed + np.maximum(compute, memory) + cal.gemm_overlap_loss * np.minimum(compute, memory)
    t = np.where(valid, t, np.inf)
    return {"t": t, "compute_s": compute, "memory_s": memory, "tile_overhead_s": fixed, "waves": waves,
            "tile_m": np.broadcast_to(_BM, t.shape), "tile_n": np.broadcast_to(_BN, t.shape), "split_k": split}


def gemm_times(gpu: GPUSpec, cal: Calibration, stack: Stack, n: int, k: int, ms: np.ndarray,
               dtype: DType = DType.BF16) -> np.ndarray:
    """Seconds of the GEMM (m x k) @ (k x n) for every m of ``ms`` (the best candidate per m, launch
    included; 0 where m, n or k is 0)."""
    m = np.asarray(ms, dtype=np.int64)
    if m.ndim != 1:
        raise ValueError(f"ms must be one-dimensional, got shape {m.shape}")
    if n <= 0 or k <= 0 or m.size == 0:
        return np.zeros(m.shape, dtype=np.float64)
    best = _candidates(gpu, cal, stack, n, k, m, dtype)["t"].min(axis=(0, 1)) + cal.launch_s
    return np.where(m > 0, best, 0.0)


def gemm_cost(op: Gemm, gpu: GPUSpec, cal: Calibration, stack: Stack) -> tuple[float, dict[str, float]]:
    """One GEMM: :func:`gemm_times` at one m, with the breakdown of the candidate it chose."""
    if min(op.m, op.n, op.k) <= 0:
        return 0.0, {}
    c = _candidates(gpu, cal, stack, op.n, op.k, np.array([op.m]), op.dtype)
    t = c.pop("t")[:, :, 0]
    i = np.unravel_index(int(np.argmin(t)), t.shape)
    bd = {key: float(v[i[0], i[1], 0]) for key, v in c.items()}
    bd["launch_s"] = cal.launch_s
    return float(t[i]) + cal.launch_s, bd
