"""Attention kernels: FlashAttention-2-style varlen prefill and paged decode.

Prefill: the grid is (query tiles of the longest sequence) x sequences x query heads; every live CTA
walks the key tiles its causal rows can see (prior KV plus its own chunk), doing padded tile FLOPs
at the per-SM tensor rate or streaming its K/V at the per-SM bandwidth, whichever is slower, plus a
fixed cost (load Q, write O, latency chain). CTAs with no rows (short sequences in a grid padded to
the longest) still launch and exit. The kernel takes the longest of: total CTA time spread over the
SMs, the longest CTA, and the whole traffic at DRAM/L2 bandwidth. A sequence of one query token in a
varlen call is one query tile per head (no GQA packing): its KV is read once per query head.

Decode: one query token per sequence. A GQA-packing kernel reads each KV head once for the query heads
that share it; a split-KV kernel (flash-decoding) splits a long KV across CTAs to fill the SMs and adds
a small combine kernel.
"""

from __future__ import annotations

import math
from collections import Counter

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from hwmodels.kernels.memory import l2_hit_fraction, stream_time
from workloads.ops import DecodeAttention, PrefillAttention

MMA_ROWS = 16  # the tensor-core MMA pads a decode tile to 16 query rows
MAX_SPLITS = 128


def _rates(gpu: GPUSpec, cal: Calibration, dtype) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    sms = gpu.sm_count
    flops_sm = gpu.peak_flops(dtype) * cal.attn_peak_eff / sms
    bw_sm = gpu.memory_bandwidth * cal.mem_eff * cal.sm_bw_share / sms
    return flops_sm, bw_sm


def _kv_traffic(gpu: GPUSpec, unique_kv: float, group: int, shared: bool) -> tuple[float, float]:
    """(DRAM bytes of K/V, L2 hit fraction of re-reads). The query heads of a GQA group re-read the
    same K/V; the re-read hits L2 when one head's pass over all sequences (the reuse distance in the
    grid's launch order) fits in L2. ``shared``: the kernel packs the group, no re-reads at all."""
    if shared or group <= 1:
        return unique_kv, l2_hit_fraction(gpu, unique_kv)
    hit = l2_hit_fraction(gpu, unique_kv / max(1, group) if group else unique_kv)
    return unique_kv * (1.0 + (group - 1) * (1.0 - hit)), hit


def _finish(gpu: GPUSpec, cal: Calibration, sum_t: float, max_t: float, nbytes: float, live: int,
            extra: float, compute: float) -> tuple[float, dict[str, float]]:
    sms = gpu.sm_count
    spread = sum_t / sms
    memory = stream_time(gpu, cal, nbytes, live, working_set=nbytes)
    body = max(spread, max_t, memory)
    t = cal.launch_s + body + extra
    return t, {"compute_s": compute, "memory_s": memory, "cta_s": spread, "launch_s": cal.launch_s,
               "overhead_s": extra, "ctas": float(live)}


def prefill_attention_cost(op: PrefillAttention, gpu: GPUSpec,
                           cal: Calibration) -> tuple[float, dict[str, float]]:
    if not op.seqs:
        return 0.0, {}
    bm, bn = cal.attn_block_m, cal.attn_block_n
    d, b = op.head_dim, op.dtype.bytes
    heads = op.num_q_heads
    group = max(1, heads // max(1, op.num_kv_heads))
    flops_sm, bw_sm = _rates(gpu, cal, op.dtype)
    unique_kv = sum(2.0 * kv * op.num_kv_heads * d * b for _, kv in op.seqs)
    dram_kv, hit = _kv_traffic(gpu, unique_kv, group, shared=False)
    bw_cta = bw_sm * (1.0 + (cal.l2_bw_mult - 1.0) * hit)
    sum_t = max_t = compute = 0.0
    nbytes = dram_kv + sum(4.0 * q * heads * d * b for q, _ in op.seqs)
    live = 0
    for (q, kv), count in Counter(op.seqs).items():
        if q <= 0:
            continue
        prior = max(0, kv - q)
        for i in range(math.ceil(q / bm)):
            nk = math.ceil((prior + min((i + 1) * bm, q)) / bn)
            fl = 4.0 * bm * bn * d * nk
            by = 2.0 * nk * bn * d * b + 2.0 * bm * d * b
            t = cal.attn_cta_s + max(fl / flops_sm, by / bw_cta)
            n = count * heads
            sum_t += t * n
            max_t = max(max_t, t)
            compute += fl * n / (flops_sm * gpu.sm_count)
            live += n
    max_q = max(q for q, _ in op.seqs)
    grid = heads * len(op.seqs) * math.ceil(max_q / bm)
    empty = max(0, grid - live) * cal.attn_empty_cta_s / gpu.sm_count
    return _finish(gpu, cal, sum_t, max_t, nbytes, live, empty, compute)


def _splits(kv: int, work_units: int, gpu: GPUSpec, bn: int) -> int:
    """Flash-decoding heuristic: split only when the grid fills less than ~80 % of the SMs."""
    if work_units >= 0.8 * gpu.sm_count:
        return 1
    return max(1, min(MAX_SPLITS, math.ceil(kv / bn), math.ceil(gpu.sm_count / work_units)))


def decode_attention_cost(op: DecodeAttention, gpu: GPUSpec,
                          cal: Calibration) -> tuple[float, dict[str, float]]:
    if not op.kv_lens:
        return 0.0, {}
    d, b = op.head_dim, op.dtype.bytes
    group = max(1, op.num_q_heads // max(1, op.num_kv_heads))
    units_per_seq = op.num_kv_heads if op.pack_gqa else op.num_q_heads
    rows = group if op.pack_gqa else 1
    flops_sm, bw_sm = _rates(gpu, cal, op.dtype)
    work_units = units_per_seq * len(op.kv_lens)
    unique_kv = sum(2.0 * kv * op.num_kv_heads * d * b for kv in op.kv_lens)
    dram_kv, hit = _kv_traffic(gpu, unique_kv, group, shared=op.pack_gqa)
    bw_cta = bw_sm * (1.0 + (cal.l2_bw_mult - 1.0) * hit)
    nbytes = dram_kv + 4.0 * len(op.kv_lens) * op.num_q_heads * d * b
    sum_t = max_t = compute = 0.0
    live = 0
    any_split = False
    for kv, count in Counter(op.kv_lens).items():
        splits = _splits(kv, work_units, gpu, cal.attn_block_n) if op.split_kv else 1
        any_split |= splits > 1
        kv_s = math.ceil(kv / splits)
        fl = 4.0 * max(rows, MMA_ROWS) * kv_s * d
        by = 2.0 * kv_s * d * b + 2.0 * rows * d * b
        t = cal.attn_cta_s + max(fl / flops_sm, by / bw_cta)
        n = count * units_per_seq * splits
        sum_t += t * n
        max_t = max(max_t, t)
        compute += fl * n / (flops_sm * gpu.sm_count)
        live += n
    extra = cal.launch_s if any_split else 0.0  # the combine kernel
    return _finish(gpu, cal, sum_t, max_t, nbytes, live, extra, compute)
