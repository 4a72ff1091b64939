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
"""

from __future__ import annotations

import math

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from hwmodels.kernels.memory import stream_time
from hwmodels.kernels.stack import Stack
from workloads.ops import Gemm

TILES: tuple[tuple[int, int], ...] = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128),
                                      (64, 64), (32, 128), (16, 128), (16, 64))
MIN_SPLIT_K = 256  # a split keeps at least this many K elements (a few pipeline stages)
MAX_SPLIT = 16


def split_options(tiles: int, k: int, sms: int) -> tuple[int, ...]:
    """Split-K factors a library would try for a grid of ``tiles``: none, powers of two, and the one that
    fills the SMs, each keeping at least ``MIN_SPLIT_K`` of K per split and the grid within one wave."""
    opts = {1}
    for s in (2, 4, 8, 16, sms // max(1, tiles)):
        if 1 < s <= MAX_SPLIT and tiles * s <= sms and k / s >= MIN_SPLIT_K:
            opts.add(s)
    return tuple(sorted(opts))


def _candidate(op: Gemm, gpu: GPUSpec, cal: Calibration, stack: Stack, bm: int, bn: int,
               split: int) -> tuple[float, dict[str, float]]:
    sms = gpu.sm_count
    b = op.dtype.bytes
    m, n, k = op.m, op.n, op.k
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    ctas = tiles * split
    waves = math.ceil(ctas / sms)
    rate_sm = gpu.peak_flops(op.dtype) * cal.gemm_peak_eff * stack.gemm_eff / sms
    tile_eff = 1.0 / (1.0 + cal.gemm_feed_elems * (1.0 / bm + 1.0 / bn))
    t_tile = 2.0 * bm * bn * math.ceil(k / split) / (rate_sm * tile_eff)
    compute = waves * t_tile
    nbytes = b * (m * k + k * n + m * n)
    if split > 1:
        nbytes += 4.0 * m * n * split * 2  # fp32 partials written and reduced
    # Weights stream cold: in a forward pass every other layer's weights pass through L2 between two
    # uses of this one, so no L2 credit (working set taken as the whole cache).
    memory = stream_time(gpu, cal, nbytes, ctas, stack.gemm_bw_eff, working_set=max(nbytes, gpu.l2_cache_bytes))
    fixed = waves * cal.gemm_tile_s
    # the mainloop overlaps loads with MMAs, but not perfectly: a share of the shorter one shows
    t = fixed + max(compute, memory) + cal.gemm_overlap_loss * min(compute, memory)
    return t, {"compute_s": compute, "memory_s": memory, "tile_overhead_s": fixed, "waves": float(waves),
               "tile_m": float(bm), "tile_n": float(bn), "split_k": float(split)}


def gemm_cost(op: Gemm, gpu: GPUSpec, cal: Calibration, stack: Stack) -> tuple[float, dict[str, float]]:
    if min(op.m, op.n, op.k) <= 0:
        return 0.0, {}
    best: tuple[float, dict[str, float]] | None = None
    for bm, bn in TILES:
        tiles = math.ceil(op.m / bm) * math.ceil(op.n / bn)
        for split in split_options(tiles, op.k, gpu.sm_count):
            cand = _candidate(op, gpu, cal, stack, bm, bn, split)
            if best is None or cand[0] < best[0]:
                best = cand
    assert best is not None
    t, bd = best
    bd["launch_s"] = cal.launch_s
    return t + cal.launch_s, bd
