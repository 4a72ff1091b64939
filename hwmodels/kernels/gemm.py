"""GEMM time: CUTLASS/cuBLAS-like tiles, waves of co-resident CTAs, K-loop steps, split-K for small grids.

For each candidate CTA tile (bm x bn x bk, pipeline stages) the grid is ceil(m/bm) x ceil(n/bn) tiles;
when that grid cannot fill the SMs the K loop is split (split-K, as cuBLAS does for decode-shaped
GEMMs). CTAs per SM follow from the operand buffers in the GPU's shared memory per SM (its spec's
``smem_per_sm_kib``, else the family's), the fp32
accumulators in the register file and the thread limit. The busiest SM runs ceil(CTAs / SMs) tiles;
each K step of a tile takes the longer of its MMAs (the SM's share of the tensor peak,
``gemm_peak_eff`` x the stack's ``gemm_eff``) and its (bm + bn) x bk operands through the SM's L2
port (``gemm_l2_bytes_per_clk_sm``); the pipeline fill (stages K tiles), the epilogue (the C tile)
and a fixed latency (``gemm_tile_s``) are exposed once per round of co-resident CTAs, so they weigh
most at small K. Memory time is the A, B and C traffic (B, the weight, read once: L2 catches the
re-reads of a wave, but not the next use: weights stream cold) at the bandwidth the grid can draw
(the stack's ``gemm_bw_eff``). Compute and memory overlap, but not perfectly: the kernel takes the
larger plus ``gemm_overlap_loss`` of the smaller; the best candidate wins, as a heuristic or
autotuner would pick it. A family whose library runs persistent stream-K kernels (``gemm_stream_k``: Hopper's
cuBLASLt) spreads the grid's K iterations evenly over the SMs instead of running whole waves of tiles.

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

# CTA tile configurations of cuBLAS/CUTLASS tensor-core GEMMs (sm80 and later): (bm, bn, bk, pipeline
# stages, warps). The large ones are CUTLASS's sm80 defaults; the thin ones (bm 16/32) stand for the
# skinny kernels cuBLAS runs for decode-shaped GEMMs.
TILE_CONFIGS: tuple[tuple[int, int, int, int, int], ...] = (
    (256, 128, 32, 3, 8), (128, 256, 32, 3, 8), (128, 128, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
    (64, 64, 32, 5, 4), (32, 128, 64, 4, 4), (16, 128, 64, 4, 4), (16, 64, 64, 4, 4))
TILES: tuple[tuple[int, int], ...] = tuple((c[0], c[1]) for c in TILE_CONFIGS)
MIN_SPLIT_K = 256  # a split keeps at least this many K elements (a few pipeline stages)
MAX_SPLIT = 16
FIXED_SPLITS = (1, 2, 4, 8, 16)  # split-K factors tried besides the one that fills the SMs
REGS_PER_SM = 65536          # 32-bit registers per SM (sm80, sm86, sm89, sm90, sm100)
REGS_PER_THREAD_BASE = 64    # operand fragments, addresses, indices beside the fp32 accumulators
CTAS_PER_SM_MAX = 8

_CFG = np.array(TILE_CONFIGS, dtype=np.int64)
_BM, _BN, _BK, _STAGES, _WARPS = (_CFG[:, i][:, None, None] for i in range(5))
_SPLITS = np.array(FIXED_SPLITS, dtype=np.int64)[None, :, None]


def smem_per_sm(gpu: GPUSpec, cal: Calibration) -> int:
    """Shared memory per SM usable by CTAs (bytes): the GPU's own (``smem_per_sm_kib`` in its spec), else
    the family's (``[kernels] smem_per_sm_kib``)."""
    if gpu.smem_per_sm_bytes is not None:
        return int(gpu.smem_per_sm_bytes)
    return int(cal.smem_per_sm_kib * 1024)


def ctas_per_sm(cal: Calibration, dtype: DType, smem_bytes: int | None = None) -> np.ndarray:
    """Resident CTAs per SM of each tile configuration, shape (tiles, 1, 1): the multi-stage operand
    buffers ((bm + bn) x bk x stages elements) in the SM's shared memory (``smem_bytes``, default the
    family's), the fp32 accumulators (one register per output element) plus a base per thread in the
    register file, and the thread limit."""
    smem = (_BM + _BN) * _BK * dtype.bytes * _STAGES
    by_smem = (int(cal.smem_per_sm_kib * 1024) if smem_bytes is None else smem_bytes) // smem
    threads = _WARPS * 32
    by_regs = REGS_PER_SM // (_BM * _BN + REGS_PER_THREAD_BASE * threads)
    by_threads = cal.threads_per_sm // threads
    return np.clip(np.minimum(np.minimum(by_smem, by_regs), by_threads), 1, CTAS_PER_SM_MAX)


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
    per_sm = -(-ctas // sms)                                   # CTAs on the busiest SM
    cps = ctas_per_sm(cal, dtype, smem_per_sm(gpu, cal))
    rounds = -(-per_sm // cps)                                 # waves of co-resident CTAs
    # one K iteration: the MMAs of a bm x bn x bk step at the SM's tensor rate, or the operand tiles
    # ((bm + bn) x bk) through the SM's L2 port, whichever is longer (the stages hide the latency,
    # not the bandwidth)
    rate_sm = gpu.peak_flops(dtype) * cal.gemm_peak_eff * stack.gemm_eff / sms
    feed_sm = cal.gemm_l2_bytes_per_clk_sm * (gpu.boost_clock_hz or 1.5e9)
    mma = 2.0 * _BM * _BN * _BK / rate_sm
    load = (_BM + _BN) * _BK * b / feed_sm
    kiter = np.maximum(mma, load)
    k_split = -(-k // split)                                   # K elements per split
    kiters = -(-k_split // _BK)
    # per CTA, exposed once per round (co-resident CTAs overlap each other's): the pipeline fill
    # (stages K tiles in flight) and the epilogue (the bm x bn tile through shared memory to C)
    edges = cal.gemm_tile_s + _STAGES * load + _BM * _BN * b / feed_sm
    if cal.gemm_stream_k:
        # stream-K (Hopper cuBLAS's persistent kernels): the grid's K iterations are spread evenly over the
        # SMs, so a partial last wave costs its share, not a whole wave
        compute = -(-(ctas * kiters) // sms) * kiter + rounds * edges
    else:
        compute = per_sm * kiters * kiter + rounds * edges
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
    # the mainloop overlaps loads with MMAs, but not perfectly: a share of the shorter one shows
    t = np.maximum(compute, memory) + cal.gemm_overlap_loss * np.minimum(compute, memory)
    t = np.where(valid, t, np.inf)
    shape = t.shape
    return {"t": t, "compute_s": compute, "memory_s": memory,
            "tile_overhead_s": np.broadcast_to(rounds * edges, shape), "waves": np.broadcast_to(per_sm, shape),
            "ctas_per_sm": np.broadcast_to(cps, shape), "k_iters": np.broadcast_to(kiters, shape),
            "tile_m": np.broadcast_to(_BM, shape), "tile_n": np.broadcast_to(_BN, shape), "split_k": split}


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
    # the seconds that stretch as 1 / SM clock: of max(c, m) + loss x min(c, m), c when compute-bound, else loss x c
    c_s, m_s = bd["compute_s"], bd["memory_s"]
    bd["clock_s"] = c_s if c_s >= m_s else cal.gemm_overlap_loss * c_s
    return float(t[i]) + cal.launch_s, bd
