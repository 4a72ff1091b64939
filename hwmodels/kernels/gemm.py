"""GEMM time: CUTLASS/cuBLAS-like tiling, wave quantisation, split-K for small grids.

For each candidate CTA tile (bm x bn) the grid is ceil(m/bm) x ceil(n/bn) tiles; when that grid
cannot fill the SMs the K loop is split (split-K, as cuBLAS does for decode-shaped GEMMs).
Tiles run in waves of ``sm_count``; one tile's time is its padded FLOPs at the per-SM tensor rate,
discounted by the operand-feed cost of small tiles (each MMA needs (bm + bn) operands per bm x bn
outputs), plus a fixed prologue/epilogue. Memory time is the A, B and C traffic (B, the weight,
read once: L2 catches the re-reads of a wave, but not the next use: weights stream cold) at the bandwidth the grid can draw. A tile's compute
and memory overlap (multi-stage pipelines), so the kernel takes the larger of the two; the best
candidate wins, as a heuristic or autotuner would pick it.
"""

from __future__ import annotations

import math

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from hwmodels.kernels.memory import stream_time
from workloads.ops import Gemm

TILES: tuple[tuple[int, int], ...] = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128),
                                      (64, 64), (32, 128), (16, 128), (16, 64))
MIN_SPLIT_K = 256  # a split keeps at least this many K elements (a few pipeline stages)
MAX_SPLIT = 16


def _candidate(op: Gemm, gpu: GPUSpec, cal: Calibration, bm: int, bn: int) -> tuple[float, dict[str, float]]:
    sms = gpu.sm_count
    b = op.dtype.bytes
    m, n, k = op.m, op.n, op.k
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    split = 1
    while tiles * split * 2 <= sms and k / (split * 2) >= MIN_SPLIT_K and split < MAX_SPLIT:
        split *= 2
    ctas = tiles * split
    waves = math.ceil(ctas / sms)
    rate_sm = gpu.peak_flops(op.dtype) * cal.gemm_peak_eff / sms
    tile_eff = 1.0 / (1.0 + cal.gemm_feed_elems * (1.0 / bm + 1.0 / bn))
    t_tile = 2.0 * bm * bn * math.ceil(k / split) / (rate_sm * tile_eff)
    compute = waves * t_tile
    nbytes = b * (m * k + k * n + m * n)
    if split > 1:
        nbytes += 4.0 * m * n * split * 2  # fp32 partials written and reduced
    # Weights stream cold: in a forward pass every other layer's weights pass through L2 between two
    # uses of this one, so no L2 credit (working set taken as the whole cache).
    memory = stream_time(gpu, cal, nbytes, ctas, working_set=max(nbytes, gpu.l2_cache_bytes))
    fixed = waves * cal.gemm_tile_s
    t = fixed + max(compute, memory)
    return t, {"compute_s": compute, "memory_s": memory, "tile_overhead_s": fixed, "waves": float(waves),
               "tile_m": float(bm), "tile_n": float(bn), "split_k": float(split)}


def gemm_cost(op: Gemm, gpu: GPUSpec, cal: Calibration) -> tuple[float, dict[str, float]]:
    if min(op.m, op.n, op.k) <= 0:
        return 0.0, {}
    best: tuple[float, dict[str, float]] | None = None
    for bm, bn in TILES:
        cand = _candidate(op, gpu, cal, bm, bn)
        if best is None or cand[0] < best[0]:
            best = cand
    assert best is not None
    t, bd = best
    bd["launch_s"] = cal.launch_s
    return t + cal.launch_s, bd
