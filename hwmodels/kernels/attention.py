"""Attention kernels as FlashAttention runs them: varlen prefill (causal, prior KV for chunked
prefill, decodes mixed in) and paged decode (GQA-packed, split-KV).

The grid is the kernel's: FlashAttention-2 launches ``(query tiles of the longest sequence) x
sequences x heads`` CTAs (``x`` fastest); a CTA walks the key tiles its rows can see (all of them,
or up to the diagonal when causal), each tile a padded ``block_m x block_n x head_dim`` MMA pair at
``tile_eff`` of the per-SM tensor peak plus ``block_s`` of unhidden latency, after a fixed
``cta_s``. CTAs of a varlen grid with no rows (the decodes' extra query tiles) launch and exit
(``empty_cta_s``). One CTA per SM at a time (the 64 x 128 split-KV tile takes 80 KiB of shared
memory, the whole of a GA10x/AD10x SM), so the CTAs run in waves: the kernel takes the largest of
the work spread over the SMs, the longest CTA and the wave-quantised bound of the longest CTAs.

Tiles (FlashAttention-2 ``flash_fwd_launch_template.h``): with a paged KV cache vLLM's FA2 takes the
split-KV kernel, ``block_m = 64`` and ``block_n = 256 / 128 / 64`` for head_dim <= 64 / 128 / more;
with contiguous KV the forward kernel, head_dim 128: 128 x 64 on big-SM parts (sm80), 128 x 32 when
not causal and 64 x 64 when causal on GA10x/AD10x. FlashAttention-3 (Hopper): 128 x 128 causal,
128 x 176 otherwise at head_dim 128 (``tile_size_fwd_sm90``). cuDNN's fused SDPA kernels (PyTorch's
SDPA cuDNN backend; closed source): 64 x 128 warpgroup-MMA tiles for a prefill, and for a decode an
sm80-class kernel of 16 x 128 tiles with a split-KV reduction kernel (the names the profiler records,
:data:`CUDNN_PREFILL_TILE`); the grid and split heuristic are taken as FlashAttention-2's (cuDNN's are not
published), the constants are their own (``[attention_cudnn]``).

Decode (one query token per sequence): when every query is one token and heads are grouped, FA2
folds the ``group`` query heads of a KV head into the tile's rows (``seqlenq_ngroups_swapped``: K/V
read once per KV head) and splits the KV of each sequence over ``num_splits`` CTAs chosen by its
wave-efficiency heuristic (:func:`fa2_num_splits`), followed by a combine kernel; FA2's ``mha_fwd``
(PyTorch's SDPA flash backend) does the same over contiguous K/V (``split_kv`` without ``paged``:
the split-KV kernel and tiles too). Inside a varlen
call with a longer query (a mixed batch) a decode is a one-row query tile per query head, neither
packed nor split; the ``group`` heads sharing a KV head re-read it, from L2 when one head's pass
fits in it or when a head starts its CTA over a sequence soon enough after the previous head of its
group (start times from the launch-order list schedule) that the DRAM traffic in between has not
filled the reusable L2 (least recently used goes first; a linear ramp of ``STAGGER_RAMP`` refill
times around that point, not a step).

Memory: K/V and Q/O bytes at ``dram_eff`` of the spec bandwidth; a working set well inside the L2
stays resident across a benchmark loop's calls and streams ``l2_bw_mult`` faster (hit share
``1 - working set / (l2_reuse x L2)``, the same rule as the GQA re-reads). Tile work and memory
combine as a p-norm of exponent ``overlap_p`` (1: they add; large: the slower one alone).
"""

from __future__ import annotations

import functools
import heapq
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.attention_calibration import (
    AttentionCalibration,
    AttnKernel,
    load_attention_calibration,
)
from hwmodels.kernels.calibration import Calibration
from workloads.ops import DecodeAttention, DType, PrefillAttention

FA2_MAX_SPLITS = 128
# cuDNN's SDPA tiles on Hopper (PyTorch 2.11, cuDNN 9.19), from the kernel names the profiler recorded in
# our H200 run (validation/measured/h200/step_ops.csv), at head_dim 64 and 128 alike:
# prefill cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x{64,128}_4x1x1 (a 64-query
# x 128-key warpgroup-MMA tile); decode ..._sm80_flash_fprop_wmma_f16_knob_35_16x128x{64,128}_1x4x1 (an
# mma.sync kernel of 16 query rows x 128 keys, four warps) followed by cudnn::fusion::lean_reduction_kernel
# (the split-KV combine).
CUDNN_PREFILL_TILE = (64, 128)
CUDNN_DECODE_TILE = (16, 128)
BIG_SM_FLOPS_PER_CLOCK = 2048  # dense fp16 FLOP/clk/SM of GA100/GH100-class SMs (164-228 KiB smem)


def _big_sm(gpu: GPUSpec) -> bool:
    """sm80/sm90-class SM (A100, H100...): twice the tensor width and shared memory of GA10x/AD10x."""
    clock = gpu.boost_clock_hz
    if not clock:
        return gpu.architecture.value in ("hopper", "blackwell")
    return gpu.fp16_flops / (gpu.sm_count * clock) >= 0.9 * BIG_SM_FLOPS_PER_CLOCK


def tile_shape(head_dim: int, causal: bool, paged: bool, kernel: AttnKernel, gpu: GPUSpec,
               decode: bool = False) -> tuple[int, int]:
    """(block_m, block_n) of the kernel that runs (``decode``: a call of one-token queries); see the
    module docstring for the sources."""
    d = head_dim
    if kernel is AttnKernel.CUDNN:
        return CUDNN_DECODE_TILE if decode else CUDNN_PREFILL_TILE
    if kernel is AttnKernel.FA3:
        if d <= 64:
            return 192, 128 if causal else 192
        if d <= 128:
            return 128, 128 if causal else 176
        return 128, 80
    if paged:
        return 64, 256 if d <= 64 else 128 if d <= 128 else 64
    if d <= 64:
        return 128, 128 if _big_sm(gpu) or not causal else 64
    if d <= 128:
        if _big_sm(gpu):
            return 128, 64
        return (64, 64) if causal else (128, 32)
    return 64, 64


@functools.lru_cache(maxsize=65536)
def fa2_num_splits(work_units: int, num_sms: int, num_n_blocks: int, max_splits: int = FA2_MAX_SPLITS) -> int:
    """FlashAttention-2's ``num_splits_heuristic``: none when the grid nearly fills ``num_sms``;
    otherwise the fewest eligible splits whose wave efficiency is within 85 % of the best."""
    if work_units >= 0.8 * num_sms:
        return 1
    max_splits = min(max_splits, num_sms, num_n_blocks)
    if max_splits <= 1:
        return 1

    def eligible(s: int) -> bool:
        return s == 1 or math.ceil(num_n_blocks / s) != math.ceil(num_n_blocks / (s - 1))

    eff = []
    for s in range(1, max_splits + 1):
        if not eligible(s):
            eff.append(0.0)
            continue
        waves = work_units * s / num_sms
        eff.append(waves / math.ceil(waves))
    best = max(eff)
    for s in range(1, max_splits + 1):
        if eligible(s) and eff[s - 1] >= 0.85 * best:
            return s
    return 1


def _tile_time(gpu: GPUSpec, a: AttentionCalibration, dtype: DType, bm: int, bn: int, d: int) -> float:
    flops_sm = gpu.peak_flops(dtype) * a.tile_eff / gpu.sm_count
    return 4.0 * bm * bn * d / flops_sm + a.block_s


def _schedule(groups: Iterable[tuple[float, int]], slots: int) -> tuple[float, float, int]:
    """(makespan bound, summed CTA time, CTAs) of CTA groups ``(time, count)`` on ``slots`` SMs:
    the largest of the work spread evenly, and, for each time t, the waves the CTAs that take at
    least t need (``ceil(n / slots)`` rounds of at least t each)."""
    acc: Counter[float] = Counter()
    for t, n in groups:
        if n > 0:
            acc[t] += n
    total = 0.0
    count = 0
    bound = 0.0
    for t in sorted(acc, reverse=True):
        count += acc[t]
        total += t * acc[t]
        bound = max(bound, math.ceil(count / slots) * t)
    return max(bound, total / slots), total, count


STAGGER_RAMP = 0.5  # width of the L2 re-read ramp, in units of the time DRAM takes to fill the reusable L2
MAX_LISTED_CTAS = 20000  # beyond this many live CTAs the launch-order schedule is bounded, not listed


def _list_schedule(per_head: list[float], heads: int, slots: int) -> tuple[float, np.ndarray]:
    """(makespan, start times) of the live CTAs dispatched in launch order (query tile fastest, then
    sequence, then head) each to the SM that frees first: a long decode CTA launched after a head's
    prefill tiles starts late, which no even spread of the work captures. ``starts[h * P + k]`` is
    when head h's k-th live CTA starts."""
    order = per_head * heads
    if len(order) <= slots:
        return max(per_head), np.zeros(len(order))
    # the first ``slots`` CTAs start at 0 (0.0 + t is t); then each goes to the SM that frees first.
    # Only the multiset of free times matters, so equal times may sit on any SM.
    free = order[:slots]
    heapq.heapify(free)
    replace = heapq.heapreplace   # returns the time it replaces: the free SM's, the CTA's start
    starts = [0.0] * slots
    starts += [replace(free, free[0] + d) for d in order[slots:]]
    return max(free), np.fromiter(starts, float, len(starts))   # np.array's values, without its type discovery


def _stagger_reads(starts: np.ndarray, tiles: tuple[int, ...], heads: int, group: int, span: float) -> float:
    """K/V reads per KV head (1 .. ``group``) of the ``group`` query heads that share it, from when
    each starts its CTA over a sequence: a head that starts ``dt`` after the previous one of its group
    finds the data that head read still in L2 (least recently used goes first) unless the traffic
    since, ``dt / span`` of the reusable L2, has pushed it out: a ramp of width ``STAGGER_RAMP``
    around ``dt = span`` rather than a step (the L2 is not a perfect LRU, and the fit needs a slope).
    Weighted over the CTAs by the KV tiles they walk."""
    p = len(tiles)
    s = np.sort(starts.reshape(heads // group, group, p), axis=1)
    miss = s[:, 1:] - s[:, :-1]   # np.diff, np.clip, np.mean and the arithmetic in place: the same values
    miss /= span
    miss -= 1.0
    miss /= STAGGER_RAMP
    miss += 0.5
    np.maximum(miss, 0.0, out=miss)
    np.minimum(miss, 1.0, out=miss)
    reads = 1.0 + miss.sum(axis=1).sum(axis=0) / (heads // group)
    w = np.asarray(tiles, dtype=float)
    return float((reads * w).sum() / float(sum(tiles)))   # an integer sum: exact, as w.sum()


def _l2_hit(gpu: GPUSpec, working_set, a: AttentionCalibration):  # type: ignore[no-untyped-def]
    """Share of a re-read working set still in L2: all of it when small, none beyond ``l2_reuse``
    times the L2, linear between. Works on floats and on numpy arrays alike."""
    return _clip01(1.0 - working_set / (a.l2_reuse * gpu.l2_cache_bytes))


def _clip01(x):  # type: ignore[no-untyped-def]
    """Clip to [0, 1]; plain floats stay floats (the scalar path is hot and numpy is slow on scalars)."""
    if isinstance(x, float):
        return 0.0 if x < 0.0 else min(x, 1.0)
    return np.clip(x, 0.0, 1.0)


def _reread_factor(gpu: GPUSpec, a: AttentionCalibration, group: int, live_per_head,
                   per_kv_head_bytes):  # type: ignore[no-untyped-def]
    """DRAM reads of each K/V byte when the ``group`` query heads of a KV head each read it (not
    packed): heads whose CTAs are resident together share one read; later ones hit L2 when one head's
    pass over every sequence fits in it. Floats, or numpy arrays over the calls of a stretch."""
    if group <= 1:
        return 1.0 if isinstance(per_kv_head_bytes, float) else np.ones_like(per_kv_head_bytes)
    if isinstance(live_per_head, (int, float)):
        together = min(float(group), max(1.0, gpu.sm_count / max(1.0, live_per_head)))
    else:
        together = np.minimum(float(group), np.maximum(1.0, gpu.sm_count / np.maximum(1.0, live_per_head)))
    hit = _l2_hit(gpu, per_kv_head_bytes, a)
    return 1.0 + (group / together - 1.0) * (1.0 - hit)


def decode_overlap_p(gpu: GPUSpec, a: AttentionCalibration, live):  # type: ignore[no-untyped-def]
    """The overlap exponent of a decode call whose grid runs ``live`` CTAs (a float, or a numpy array over
    the calls of a stretch). cuDNN's decode kernel is a four-warp mma.sync CTA, one per SM while the grid
    holds fewer CTAs than SMs: such an SM has no other warps to run while its CTA waits on its K/V loads,
    so the loads and the MMAs serialise and the memory time adds to the CTA time (p = 1); other CTAs'
    warps hide it as the grid fills the SMs, ``overlap_p`` from ``live >= sm_count`` on, linear in the
    SMs' share that hold a CTA between (no constant fitted). Evidence (kernel_times.csv, batch 4 x 512
    keys of 8 KV heads of 128: 32 CTAs on 132 SMs): the H100 takes 0.88 us longer than the H200, the
    difference of their DRAM times for the 8.4 MB of K/V (2.52 vs 1.76 us); the p-norm at ``overlap_p``
    hid all but 0.47 us of it. Other kernels (FA2/FA3's own constants): ``overlap_p``."""
    p = a.overlap_p
    if a.kernel is not AttnKernel.CUDNN:
        return p
    if isinstance(live, (int, float)):
        return p if live >= gpu.sm_count else 1.0 + (p - 1.0) * max(0.0, float(live)) / gpu.sm_count
    return 1.0 + (p - 1.0) * np.clip(np.asarray(live, dtype=float) / gpu.sm_count, 0.0, 1.0)


def _finish_body(gpu: GPUSpec, a: AttentionCalibration, sched, empty, kv_unique, kv_dram, qo,
                 split, live=None, first=None, exposed=None):  # type: ignore[no-untyped-def]
    """(time, memory time) of a call. Plain floats, or numpy arrays over the calls of a decode stretch
    (every argument but ``qo`` may then be an array). ``live``: a decode call's live CTAs
    (:func:`decode_overlap_p`); None for a varlen call (``overlap_p``). ``first``, ``exposed``: an FA2
    split-KV call's serial first tile (:meth:`DecodeShape.exposure`): ``first`` seconds of CTA time and
    the ``exposed`` share of the memory time add, the rest combines as the p-norm; None: none."""
    dram = gpu.memory_bandwidth * a.dram_eff
    hit = _l2_hit(gpu, kv_unique + qo, a)  # resident from the previous call of a benchmark loop
    nbytes = kv_dram + qo
    memory = nbytes * ((1.0 - hit) / dram + hit / (dram * a.l2_bw_mult))
    p = a.overlap_p if live is None else decode_overlap_p(gpu, a, live)
    body: Any
    combine: Any
    if isinstance(memory, float):
        if exposed:
            head = min(sched, first)
            rest, hidden = sched - head, memory * (1.0 - exposed)
            body = head + memory * exposed + ((rest ** p + hidden ** p) ** (1.0 / p) if rest > 0 and hidden > 0
                                              else rest + hidden)
        else:
            body = (sched ** p + memory ** p) ** (1.0 / p) if sched > 0 and memory > 0 else sched + memory
        combine = a.combine_s if split else 0.0
    else:
        if exposed is not None:
            head = np.minimum(sched, first)
            sched, tail = sched - head, head + memory * exposed
            memory_hidden = memory * (1.0 - exposed)
        else:
            memory_hidden = memory
        both = (sched > 0) & (memory_hidden > 0)
        body = np.where(both, (sched ** p + memory_hidden ** p) ** (1.0 / p), sched + memory_hidden)
        if exposed is not None:
            body = tail + body
        combine = np.where(split, a.combine_s, 0.0)
    return a.launch_s + body + empty * a.empty_cta_s / gpu.sm_count + combine, memory


def _finish(gpu: GPUSpec, a: AttentionCalibration, sched: float, total: float, live: int, empty: int,
            kv_unique: float, kv_dram: float, qo: float, split: bool,
            decode: bool = False, first: float = 0.0, exposed: float = 0.0) -> tuple[float, dict[str, float]]:
    t, memory = _finish_body(gpu, a, sched, empty, kv_unique, kv_dram, qo, split, float(live) if decode else None,
                             first, exposed)
    return float(t), {"cta_s": sched, "memory_s": float(memory), "launch_s": a.launch_s,
                      "empty_s": empty * a.empty_cta_s / gpu.sm_count,
                      "combine_s": a.combine_s if split else 0.0, "ctas": float(live),
                      "bytes": float(kv_dram + qo),
                      "clock_s": _clock_share(gpu, a, sched, float(memory), float(live) if decode else None,
                                              first, exposed)}


def _clock_share(gpu: GPUSpec, a: AttentionCalibration, sched: float, memory: float, live: float | None,
                 first: float, exposed: float) -> float:
    """The seconds of a call's body that stretch as 1 / SM clock (its local sensitivity to the CTA
    schedule, as :func:`_finish_body` combines it): the serial first tile of an FA2 split call whole, and of
    the p-norm of CTA time ``s`` and memory time ``m`` the share ``s^p / (s^p + m^p)``."""
    p = a.overlap_p if live is None else decode_overlap_p(gpu, a, live)
    head = min(sched, first) if exposed else 0.0
    rest, hidden = sched - head, memory * (1.0 - exposed) if exposed else memory
    if rest > 0 and hidden > 0:
        rp, hp = rest ** p, hidden ** p
        return head + (rp + hp) ** (1.0 / p) * rp / (rp + hp)
    return head + rest


def attention_calibration_for(gpu: GPUSpec, attn: AttentionCalibration | None) -> AttentionCalibration:
    return attn if attn is not None else load_attention_calibration(gpu.architecture.value)


@functools.lru_cache(maxsize=65536)
def _tile_counts(q: int, kv: int, bm: int, bn: int, causal: bool) -> tuple[int, ...]:
    """KV tiles each query tile of one sequence walks (causal: up to its diagonal)."""
    prior = max(0, kv - q)
    if not causal:
        return (-(-kv // bn),) * -(-q // bm)
    return tuple(-(-(prior + min((i + 1) * bm, q)) // bn) for i in range(-(-q // bm)))


@functools.lru_cache(maxsize=65536)
def _varlen_schedule(tiles: tuple[int, ...], heads: int, slots: int, cta_s: float, t_tile: float, group: int,
                     span: float) -> tuple[float, float, float]:
    """(schedule bound, summed CTA time, K/V reads per KV head when one head's pass does not fit in
    L2) of a varlen grid whose live CTAs of one head walk ``tiles`` KV tiles each, in launch order.
    ``span``: the time the DRAM stream takes to fill the reusable L2. Depends on the lengths only
    through tile counts, so a mixed batch whose decodes grow by a token usually hits the cache."""
    per_head = [cta_s + n * t_tile for n in tiles]
    # _schedule over the distinct CTA times (heads CTAs per entry), inline
    count = 0
    total = bound = 0.0
    for t, c in sorted(Counter(per_head).items(), reverse=True):
        c *= heads
        count += c
        total += t * c
        bound = max(bound, math.ceil(count / slots) * t)
    sched = max(bound, total / slots)
    live = len(per_head) * heads
    if group <= 1 or heads % group:
        reads = 1.0
    elif live <= slots:
        reads = 1.0   # every head of a group starts at once
    elif live <= MAX_LISTED_CTAS:
        listed, starts = _list_schedule(per_head, heads, slots)
        sched = max(sched, listed)
        reads = _stagger_reads(starts, tiles, heads, group, span)
        return sched, total, reads   # the launch-order bound is already in
    else:   # too many to list: heads whose CTAs are resident together share one read
        reads = float(group) / min(float(group), max(1.0, slots / max(1.0, live / heads)))
    if reads == 1.0 and slots < live <= MAX_LISTED_CTAS and len(set(per_head)) > 1:
        sched = max(sched, _list_schedule(per_head, heads, slots)[0])
    return sched, total, reads


class VarlenShape:
    """What a varlen call's cost depends on besides its sequences, with the constants of the cost
    formula; one per (op shape, GPU, calibration), kept by :func:`varlen_shape`."""

    __slots__ = ("a", "bm", "bn", "causal", "cta_s", "dram", "dram_l2", "empty_cta_s", "extra_s", "gpu", "group",
                 "heads", "inv_p", "kv_heads", "kvb", "l2cap", "launch_s", "p", "qob", "scheds", "slots", "span",
                 "t_tile")

    def __init__(self, op: PrefillAttention, gpu: GPUSpec, a: AttentionCalibration) -> None:
        d, b = op.head_dim, op.dtype.bytes
        self.gpu, self.a = gpu, a
        self.heads = op.num_q_heads
        self.kv_heads = op.num_kv_heads
        self.group = max(1, self.heads // max(1, op.num_kv_heads))
        self.causal = op.causal
        self.bm, self.bn = tile_shape(d, op.causal, op.paged, a.kernel, gpu)
        self.t_tile = _tile_time(gpu, a, op.dtype, self.bm, self.bn, d)
        self.slots, self.cta_s = gpu.sm_count, a.cta_s
        # bytes per KV token / per query token: integers, so kvb * sum(kv) equals the sum over the
        # sequences of 2.0 * kv * kv_heads * d * b exactly (every partial sum an integer below 2**53)
        self.kvb = 2 * op.num_kv_heads * d * b
        self.qob = 2 * self.heads * d * b
        # the constants of _finish_body / _l2_hit / _reread_factor, each computed as they compute it
        self.dram = gpu.memory_bandwidth * a.dram_eff
        self.l2cap = a.l2_reuse * gpu.l2_cache_bytes
        self.dram_l2 = self.dram * a.l2_bw_mult
        self.p = a.overlap_p
        self.inv_p = 1.0 / a.overlap_p
        self.launch_s, self.empty_cta_s = a.launch_s, a.empty_cta_s
        self.extra_s = a.prefill_extra_s
        self.span = self.l2cap / self.dram if self.dram > 0 else math.inf   # DRAM time to refill the L2
        self.scheds: dict[tuple[int, ...], tuple[float, float, float]] = {}   # _varlen_schedule by tile counts

    def parts(self, seqs: tuple[tuple[int, int], ...], decode: tuple[int, ...] = ()
              ) -> tuple[float, float, int, int, float, float, float]:
        """(schedule bound, summed CTA time, live CTAs, empty CTAs, unique K/V bytes, K/V bytes read
        from DRAM, Q/O bytes) of the call over ``seqs`` followed by one-token queries over the KV
        lengths ``decode`` (a mixed batch's decodes, without building their ``(1, kv)`` pairs), at
        least one query token in all."""
        bm, bn = self.bm, self.bn
        tiles: list[int] = []
        skv = sq = mq = 0
        for q, kv in seqs:
            skv += kv
            sq += q
            if q > mq:
                mq = q
            if q == 1:
                tiles.append(-(-kv // bn))
            elif q > 1:
                tiles.extend(_tile_counts(q, kv, bm, bn, self.causal))
        if decode:   # what the loop above does for each (1, kv), at once (integer sums: exact in any order)
            tiles += [-(-kv // bn) for kv in decode]
            skv += sum(decode)
            sq += len(decode)
            if mq < 1:
                mq = 1
        heads = self.heads
        key = tuple(tiles)
        st = self.scheds.get(key)
        if st is None:
            st = _varlen_schedule(key, heads, self.slots, self.cta_s, self.t_tile, self.group, self.span)
            if len(self.scheds) >= 65536:
                self.scheds.clear()
            self.scheds[key] = st
        sched, total, reads = st
        live = len(tiles) * heads
        grid = heads * (len(seqs) + len(decode)) * math.ceil(mq / bm)
        kv_unique = float(self.kvb * skv)
        # K/V re-reads of the group's heads: those that start together share one read (``reads``,
        # from the launch-order schedule); the rest hit L2 when one head's pass fits in it
        if reads == 1.0:
            factor = 1.0
        else:
            hit = 1.0 - (kv_unique / max(1, self.kv_heads)) / self.l2cap
            hit = 0.0 if hit < 0.0 else min(hit, 1.0)
            factor = 1.0 + (reads - 1.0) * (1.0 - hit)
        return sched, total, live, max(0, grid - live), kv_unique, kv_unique * factor, float(self.qob * sq)

    def time(self, seqs: tuple[tuple[int, int], ...], decode: tuple[int, ...] = ()) -> float:
        """``prefill_attention_cost(op with these seqs)[0]``: _finish_body's arithmetic on floats.
        ``decode``: KV lengths of one-token queries after ``seqs`` (as ``parts``)."""
        if not decode:
            for q, _ in seqs:
                if q > 0:
                    break
            else:
                return 0.0
        sched, _, _, empty, kv_unique, kv_dram, qo = self.parts(seqs, decode)
        hit = 1.0 - (kv_unique + qo) / self.l2cap
        hit = 0.0 if hit < 0.0 else min(hit, 1.0)
        memory = (kv_dram + qo) * ((1.0 - hit) / self.dram + hit / self.dram_l2)
        p = self.p
        body = (sched ** p + memory ** p) ** self.inv_p if sched > 0 and memory > 0 else sched + memory
        return self.launch_s + body + empty * self.empty_cta_s / self.slots + self.extra_s


_S = TypeVar("_S", "VarlenShape", "DecodeShape")
MAX_SHARED_SHAPES = 4096


def _shared(cache: dict[tuple, _S], key: tuple, gpu: GPUSpec, a: AttentionCalibration,
            make: Callable[[], _S]) -> _S:
    """The cached shape object under ``key`` (ids of ``gpu`` and ``a`` in the key, checked by identity
    so a reused id cannot return a stale entry); the cache is emptied when it reaches its bound."""
    obj = cache.get(key)
    if obj is None or obj.gpu is not gpu or obj.a is not a:
        if len(cache) >= MAX_SHARED_SHAPES:
            cache.clear()
        obj = cache[key] = make()
    return obj


_VARLEN: dict[tuple, VarlenShape] = {}


def varlen_shape(op: PrefillAttention, gpu: GPUSpec, a: AttentionCalibration) -> VarlenShape:
    """The (shared) :class:`VarlenShape` of ``op`` on ``gpu`` with calibration ``a``."""
    key = (id(gpu), id(a), op.num_q_heads, op.num_kv_heads, op.head_dim, op.dtype, op.causal, op.paged)
    return _shared(_VARLEN, key, gpu, a, lambda: VarlenShape(op, gpu, a))


def prefill_attention_cost(op: PrefillAttention, gpu: GPUSpec, cal: Calibration | None = None,
                           attn: AttentionCalibration | None = None) -> tuple[float, dict[str, float]]:
    """One varlen FlashAttention call over ``op.seqs`` (decodes included as one-token queries)."""
    if not op.seqs or all(q <= 0 for q, _ in op.seqs):
        return 0.0, {}
    a = attention_calibration_for(gpu, attn)
    sched, total, live, empty, kv_unique, kv_dram, qo = varlen_shape(op, gpu, a).parts(op.seqs)
    t, bd = _finish(gpu, a, sched, total, live, empty, kv_unique, kv_dram, qo, False)
    if a.prefill_extra_s:
        t += a.prefill_extra_s
        bd["prefill_extra_s"] = a.prefill_extra_s
    return t, bd


def prefill_attention_time(op: PrefillAttention, gpu: GPUSpec, attn: AttentionCalibration | None = None) -> float:
    """``prefill_attention_cost(op, gpu)[0]`` without the breakdown."""
    return varlen_shape(op, gpu, attention_calibration_for(gpu, attn)).time(op.seqs)


class DecodeShape:
    """What a decode call's cost depends on besides the KV lengths themselves, with the constants of
    the cost formula that do not change between calls. One per (op shape, sequence count, GPU,
    calibration), kept by :func:`decode_shape`; ``segs`` memoises the per-tile-count structure."""

    __slots__ = (
        "a",
        "bn",
        "combine_s",
        "dram",
        "dram_l2",
        "empty_cta_s",
        "fast",
        "fwd",
        "gpu",
        "group",
        "heads",
        "inv_p",
        "kb",
        "kv_bytes_per_token",
        "kv_heads",
        "l2cap",
        "launch_s",
        "m_blocks",
        "mp",
        "n",
        "p",
        "packed",
        "qo",
        "r",
        "segs",
        "sm_slots",
        "split_ok",
        "t_tile",
        "t_whole",
        "units",
    )

    def __init__(self, op: DecodeAttention, gpu: GPUSpec, a: AttentionCalibration) -> None:
        d, b = op.head_dim, op.dtype.bytes
        self.gpu, self.a = gpu, a
        self.group = max(1, op.num_q_heads // max(1, op.num_kv_heads))
        self.packed = op.pack_gqa and self.group > 1
        rows, self.heads = (self.group, op.num_kv_heads) if self.packed else (1, op.num_q_heads)
        # FA2 runs a split decode through its split-KV kernel (and tiles), paged or not
        bm, self.bn = tile_shape(d, False, op.paged or op.split_kv, a.kernel, gpu, decode=True)
        self.t_tile = _tile_time(gpu, a, op.dtype, bm, self.bn, d)
        # a call FA2's heuristic does not split runs mha_fwd's forward kernel, not the split-KV one (the
        # profiler records flash_fwd_kernel alone then, flash_fwd_splitkv_kernel + combine when split:
        # kernel_times.csv): its own, taller tile (128 x 64 at head_dim 128 on sm80/sm90), whose padded rows
        # cost twice the split tile's MMA work per key. Sequence lengths are then counted in ``kb`` keys, the
        # forward tile's (a 128-key call at head_dim 64 walks one 128-key tile, not a 256-key split tile's
        # worth: kernel_times.csv's 128-key rows), ``r`` = bn / kb of them to a split tile (the heuristic
        # counts split tiles); ``t_whole`` is the time of one. A paged cache always takes the split-KV kernel.
        self.t_whole = self.t_tile
        self.kb, self.r = self.bn, 1
        kb = self.bn
        self.fwd = a.kernel is AttnKernel.FA2 and op.split_kv and not op.paged
        if self.fwd:
            bm_fwd, bn_fwd = tile_shape(d, False, False, a.kernel, gpu)
            if self.bn % bn_fwd == 0:
                self.kb, self.r = bn_fwd, self.bn // bn_fwd
                kb = bn_fwd
                self.t_whole = _tile_time(gpu, a, op.dtype, bm_fwd, bn_fwd, d)
            else:
                self.t_whole = self.bn / bn_fwd * _tile_time(gpu, a, op.dtype, bm_fwd, bn_fwd, d)
        if a.decode_cta_bw > 0.0:   # a decode CTA's K and V tile loads at the rate its loads in flight reach
            self.t_tile += 2.0 * self.bn * d * b / a.decode_cta_bw
            self.t_whole += 2.0 * kb * d * b / a.decode_cta_bw
        self.m_blocks = math.ceil(rows / bm)
        self.n = len(op.kv_lens)
        self.split_ok = op.split_kv
        # FA2 assumes 2 CTAs per SM; cuDNN's decode kernel is a four-warp mma.sync kernel of the same class
        self.sm_slots = gpu.sm_count * (2 if a.kernel in (AttnKernel.FA2, AttnKernel.CUDNN) else 1)
        self.kv_bytes_per_token = 2.0 * op.num_kv_heads * d * b   # K and V of one token, all KV heads
        self.qo = 2.0 * self.n * op.num_q_heads * d * b
        self.kv_heads = op.num_kv_heads
        self.units = self.heads * self.m_blocks
        # the constants of _finish_body / _l2_hit, each computed as they compute it
        self.dram = gpu.memory_bandwidth * a.dram_eff
        self.l2cap = a.l2_reuse * gpu.l2_cache_bytes
        self.dram_l2 = self.dram * a.l2_bw_mult
        self.p = a.overlap_p
        self.inv_p = 1.0 / a.overlap_p
        self.launch_s, self.empty_cta_s, self.combine_s = a.launch_s, a.empty_cta_s, a.combine_s
        # K/V read once (packed, or one query head per KV head) and every call's memory time > 0
        # (so _finish_body's p-norm applies wherever the CTA time is > 0): the lean stretch path
        self.fast = ((self.packed or self.group <= 1) and self.qo > 0 and self.kv_bytes_per_token >= 0
                     and 0 < self.dram < math.inf and 0 < self.dram_l2 < math.inf)
        self.segs: dict[tuple[int, ...],
                        tuple[float, float, float, float, float, int, int, int, float, float, float]] = {}
        self.mp: np.ndarray = np.zeros(0)

    def memory_pow(self, stop: int) -> np.ndarray:
        """``mp[S]``: the memory time to the power p of a call whose KV lengths sum to S, for S below
        ``stop`` (a table grown by doubling; the arithmetic is _finish_body's, elementwise)."""
        if stop > self.mp.size:
            x = self.kv_bytes_per_token * np.arange(max(stop, 2 * self.mp.size, 4096))
            x += self.qo                                      # bytes moved = L2 working set
            hit = 1.0 - x / self.l2cap
            np.maximum(hit, 0.0, out=hit)
            np.minimum(hit, 1.0, out=hit)
            memory = x * ((1.0 - hit) / self.dram + hit / self.dram_l2)
            self.mp = memory ** self.p
        return self.mp

    def exposure(self, max_blocks: int, splits: int) -> tuple[float, float]:
        """(first, exposed) of :func:`_finish_body` for a call of ``splits`` whose longest sequence spans
        ``max_blocks`` blocks of ``kb`` keys. FA2's split-KV kernel (contiguous K/V: SDPA's flash backend)
        issues a CTA's first K tile load with nothing to compute under it, and each later load under one
        tile's work: the first tile's CTA time (``cta_s`` + a tile) and its loads, 1 / (tiles per CTA) of the
        memory time, run serially; the rest overlaps (p-norm). Evidence (kernel_times.csv, split calls of
        batch 1-16 x 2-8k keys): the H100 runs 1.1-1.4x the H200's DRAM-time difference longer, the
        p-norm alone gave 0.6x of it (12-27 % fast on the H100). Other calls: (0, 0)."""
        if splits <= 1 or not self.fwd:
            return 0.0, 0.0
        tiles = -(-max_blocks // self.r)     # split tiles of the longest sequence
        per_cta = -(-tiles // splits)
        return self.a.cta_s + self.t_tile, 1.0 / per_cta

    def segment(self, tiles: tuple[int, ...]
                ) -> tuple[float, float, float, float, float, int, int, int, float, float, float]:
        """Structure of a call whose sequences span ``tiles`` blocks of ``kb`` keys (any order): (schedule
        bound, its p-th power (0 when the bound is not > 0), empty-CTA time, combine time, summed CTA time,
        live CTAs, grid size, splits, overlap exponent, first, exposed (:meth:`exposure`)). The lean stretch
        paths take calls whose exponent is ``self.p`` and exposed share 0 (:func:`decode_overlap_p`: a cuDNN
        grid of fewer CTAs than SMs has a lower one; an FA2 split-KV call a serial first tile: they go the
        general way). Memoised on the tile counts."""
        s = self.segs.get(tiles)
        if s is None:
            gpu, a = self.gpu, self.a
            sched, total, live, grid, splits = _decode_structure_of(
                self.units, self.n, self.split_ok, self.sm_slots, gpu.sm_count, a.cta_s, self.t_tile,
                tuple(sorted(Counter(tiles).items())), a.kernel is AttnKernel.CUDNN, self.t_whole, self.r)
            empty = max(0, grid - live)
            # the p-th power as numpy takes it (the whole-array arithmetic of _finish_body)
            sp = float((np.array([sched]) ** self.p)[0]) if sched > 0 else 0.0
            s = (sched, sp, float(empty) * a.empty_cta_s / gpu.sm_count, a.combine_s if splits > 1 else 0.0,
                 total, live, grid, splits, decode_overlap_p(gpu, a, float(live)), *self.exposure(max(tiles), splits))
            if len(self.segs) >= 65536:
                self.segs.clear()
            self.segs[tiles] = s
        return s


_SHAPES: dict[tuple, DecodeShape] = {}
MAX_MEMORY_TABLE = 1 << 20   # longest table of memory terms over summed KV lengths, per shape


def decode_shape(op: DecodeAttention, gpu: GPUSpec, a: AttentionCalibration) -> DecodeShape:
    """The (shared) :class:`DecodeShape` of ``op`` on ``gpu`` with calibration ``a``."""
    key = (id(gpu), id(a), op.num_q_heads, op.num_kv_heads, op.head_dim, op.dtype, op.pack_gqa, op.split_kv,
           op.paged, len(op.kv_lens))
    return _shared(_SHAPES, key, gpu, a, lambda: DecodeShape(op, gpu, a))


def _decode_structure(shape: DecodeShape, blocks_count: dict[int, int], gpu: GPUSpec,
                      a: AttentionCalibration) -> tuple[float, float, int, int, int]:
    """(schedule bound, summed CTA time, live CTAs, grid size, splits) of a decode call whose
    sequences span ``blocks_count`` = {KV tiles: sequences}; all that depends on the lengths only
    through their tile counts (memoised on them)."""
    return _decode_structure_of(shape.heads * shape.m_blocks, shape.n, shape.split_ok, shape.sm_slots,
                                gpu.sm_count, a.cta_s, shape.t_tile, tuple(sorted(blocks_count.items())),
                                a.kernel is AttnKernel.CUDNN, shape.t_whole, shape.r)


# cuDNN's decode (sm80 mma.sync fprop + ``lean_reduction_kernel`` combine) splits the KV far less often than
# FA2's heuristic: in validation/measured/h200/kernel_times.csv (and the H100's) the profiler shows the second,
# combine kernel only when the grid holds at most a quarter as many (sequence, KV head) tiles as SMs (batch 1
# and 4 of 8 KV heads: 8 and 32 tiles on 132 SMs; never at batch 16 = 128 tiles or 64) and the KV spans at
# least 8 tiles of 128 (2,048 tokens split, 512 did not; 1,024 was not measured). Then FA2's split count.
CUDNN_SPLIT_MAX_UNITS_PER_SM = 0.25
CUDNN_SPLIT_MIN_KV_TILES = 8


@functools.lru_cache(maxsize=65536)
def _decode_structure_of(units: int, n: int, split_ok: bool, sm_slots: int, sm_count: int, cta_s: float,
                         t_tile: float, blocks_count: tuple[tuple[int, int], ...],
                         cudnn: bool = False, t_whole: float | None = None,
                         r: int = 1) -> tuple[float, float, int, int, int]:
    """``blocks_count``: {blocks: sequences}, a block ``r`` to a KV tile of the split kernel; ``t_tile``: a
    CTA's time per KV tile in a split call; ``t_whole``: per block in a call left unsplit (FA2's forward
    kernel; default ``t_tile``)."""
    if r > 1:
        whole = blocks_count
        merged: Counter[int] = Counter()
        for nb, count in whole:
            merged[-(-nb // r)] += count
        blocks_count = tuple(sorted(merged.items()))
    max_blocks = blocks_count[-1][0]
    if cudnn and (n * units > CUDNN_SPLIT_MAX_UNITS_PER_SM * sm_count or max_blocks < CUDNN_SPLIT_MIN_KV_TILES):
        split_ok = False
    splits = fa2_num_splits(n * units, sm_slots, max_blocks) if split_ok else 1
    per_split = math.ceil(max_blocks / splits)
    if splits == 1 and t_whole is not None:
        t_tile = t_whole
        if r > 1:
            blocks_count, per_split = whole, whole[-1][0]
    groups: list[tuple[float, int]] = []
    live = 0
    for nb, count in blocks_count:
        for s in range(splits):
            blocks = min(per_split, nb - s * per_split)
            if blocks <= 0:
                continue  # a split past this sequence's end exits at once
            groups.append((cta_s + blocks * t_tile, count * units))
            live += count * units
    sched, total, _ = _schedule(groups, sm_count)
    return sched, total, live, n * units * splits, splits


def _blocks_count(kv: Iterable[int], bn: int) -> dict[int, int]:
    """{KV tiles: sequences} (ceil(kv / bn) per sequence)."""
    return Counter(-(-x // bn) for x in kv)


def decode_attention_cost(op: DecodeAttention, gpu: GPUSpec, cal: Calibration | None = None,
                          attn: AttentionCalibration | None = None) -> tuple[float, dict[str, float]]:
    """One decode call: a query token per sequence over ``op.kv_lens`` keys (new token included)."""
    if not op.kv_lens:
        return 0.0, {}
    a = attention_calibration_for(gpu, attn)
    sh = decode_shape(op, gpu, a)
    blocks = _blocks_count(op.kv_lens, sh.kb)
    sched, total, live, grid, splits = _decode_structure(sh, blocks, gpu, a)
    kv_unique = sh.kv_bytes_per_token * float(sum(op.kv_lens))
    factor = 1.0 if sh.packed else float(_reread_factor(gpu, a, sh.group, live / sh.heads,
                                                        kv_unique / max(1, op.num_kv_heads)))
    return _finish(gpu, a, sched, total, live, max(0, grid - live), kv_unique, kv_unique * factor, sh.qo,
                   splits > 1, True, *sh.exposure(max(blocks), splits))


def decode_attention_times(op: DecodeAttention, steps: int, gpu: GPUSpec,
                           attn: AttentionCalibration | None = None) -> np.ndarray:
    """Times of ``steps`` consecutive decode calls of the same sequences, each one token longer than
    the last: call j sees ``kv_lens + j``. Equal to ``decode_attention_cost`` of each call, computed
    at once: the CTA schedule changes only when a sequence crosses a KV tile boundary, so it is
    evaluated once per run of calls between crossings, and the memory term (linear in the lengths)
    is vectorised over the calls."""
    if steps <= 0:
        return np.zeros(0)
    if not op.kv_lens:
        return np.zeros(steps)
    return decode_stretch(decode_shape(op, gpu, attention_calibration_for(gpu, attn)), op.kv_lens, steps)


def _segment_starts(kv_lens: Iterable[int], bn: int, steps: int) -> list[int]:
    """First calls of the runs of equal tile counts: call j has ceil((kv + j) / bn) tiles, which
    changes at j >= 1 with (kv + j - 1) % bn == 0."""
    cuts = {0}
    for x in kv_lens:
        f = (1 - x) % bn or bn
        if f < steps:
            if f + bn < steps:
                cuts.update(range(f, steps, bn))
            else:
                cuts.add(f)
    return sorted(cuts)


MAX_RUN_TABLE_SEQS = 8       # decode_stretch_mapped keeps per-run tables up to this many sequences
MAX_RUN_TABLES = 8192        # tables kept per cache before it is cleared


def decode_stretch_mapped(sh: DecodeShape, kv_lens, steps: int, post, cache: dict) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``post(decode_stretch(sh, kv_lens, steps))`` for an elementwise ``post``, from tables memoised
    in ``cache`` (the caller's, one per ``post``): a run of calls with equal tile counts has every
    value of its summed KV length S within ``n * bn`` consecutive integers, so its mapped times are
    one table over S (built by the same arithmetic, elementwise) and a stretch is slices of them."""
    bn, n = sh.kb, sh.n
    if not sh.fast or n > MAX_RUN_TABLE_SEQS:
        return post(decode_stretch(sh, kv_lens, steps))
    starts = _segment_starts(kv_lens, bn, steps)
    s0 = sum(kv_lens)
    pieces = []
    last = len(starts) - 1
    for i, lo in enumerate(starts):
        key = tuple([-(-(x + lo) // bn) for x in kv_lens])
        tab = cache.get(key)
        if tab is None:
            seg = sh.segment(key)
            top = sum(key) * bn                 # S of the run: sum over sequences of (t - 1) * bn + 1 .. t * bn
            low = top - n * (bn - 1)
            if seg[0] <= 0 or seg[8] != sh.p or seg[10] or top >= MAX_MEMORY_TABLE:
                return post(decode_stretch(sh, kv_lens, steps))
            t = _finish_run(sh, sh.memory_pow(top + 1)[low:top + 1], seg)
            if len(cache) >= MAX_RUN_TABLES:
                cache.clear()
            tab = cache[key] = (low, post(t))
        a = s0 + n * lo - tab[0]
        hi = starts[i + 1] if i < last else steps
        pieces.append(tab[1][a:a + n * (hi - lo):n])
    return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces)


def _finish_run(sh: DecodeShape, mp: np.ndarray, seg) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Call times of a run of decode calls sharing one KV-tile segment ``seg``, from their memory terms
    ``mp`` (already raised to ``sh.p``): _finish_body's arithmetic, in its order (so equal to the per-call cost)."""
    t = mp + seg[1]
    t = t ** sh.inv_p
    t += sh.launch_s
    if seg[2] != 0.0:
        t += seg[2]
    if seg[3] != 0.0:
        t += seg[3]
    return t


def decode_stretch(sh: DecodeShape, kv_lens, steps: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """:func:`decode_attention_times` for a shape from :func:`decode_shape` (``sh.n`` sequences of KV
    lengths ``kv_lens``, ``steps`` >= 1 calls). The arithmetic of each call is _finish_body's, in its
    order, so every value equals the per-call cost."""
    bn = sh.kb
    starts = _segment_starts(kv_lens, bn, steps)
    segs = [sh.segment(tuple([-(-(x + lo) // bn) for x in kv_lens])) for lo in starts]
    if not sh.fast or not all(s[0] > 0 and s[8] == sh.p and not s[10] for s in segs):
        return _decode_stretch_general(sh, kv_lens, steps, starts, segs)
    n = sh.n
    s0 = sum(kv_lens)
    stop = s0 + n * steps
    if stop <= MAX_MEMORY_TABLE:
        mp = sh.memory_pow(stop)[s0:stop:n]
    else:
        x = sh.kv_bytes_per_token * np.arange(s0, stop, n)   # K/V bytes (exact integers scaled)
        x += sh.qo                                          # bytes moved = L2 working set
        hit = 1.0 - x / sh.l2cap
        np.maximum(hit, 0.0, out=hit)
        np.minimum(hit, 1.0, out=hit)
        memory = x * ((1.0 - hit) / sh.dram + hit / sh.dram_l2)
        mp = memory ** sh.p
    if len(segs) == 1:
        return _finish_run(sh, mp, segs[0])
    if len(segs) <= 8:   # a few runs: each run's constants added to its slice
        bounds = [*starts, steps]
        t = np.empty(steps)
        for i, s in enumerate(segs):
            np.add(mp[bounds[i]:bounds[i + 1]], s[1], out=t[bounds[i]:bounds[i + 1]])
        t = t ** sh.inv_p
        t += sh.launch_s
        for col in (2, 3):   # empty CTAs, then the combine: one add when every run has the same
            c = segs[0][col]
            if all(s[col] == c for s in segs):
                if c != 0.0:
                    t += c
                continue
            for i, s in enumerate(segs):
                if s[col] != 0.0:
                    t[bounds[i]:bounds[i + 1]] += s[col]
        return t
    lengths = np.diff(np.asarray(starts + [steps]))
    t = mp + np.repeat(np.array([s[1] for s in segs]), lengths)
    t = t ** sh.inv_p
    t += sh.launch_s
    if any(s[2] != 0.0 for s in segs):
        t += np.repeat(np.array([s[2] for s in segs]), lengths)
    if any(s[3] != 0.0 for s in segs):
        t += np.repeat(np.array([s[3] for s in segs]), lengths)
    return t


def _decode_stretch_general(sh: DecodeShape, kv_lens, steps: int, starts: list[int],  # type: ignore[no-untyped-def]
                            segs: list) -> np.ndarray:
    gpu, a = sh.gpu, sh.a
    j = np.arange(steps, dtype=np.float64)
    kv_unique = sh.kv_bytes_per_token * (float(sum(kv_lens)) + sh.n * j)
    lengths = np.diff(np.asarray(starts + [steps]))
    sched = np.repeat(np.array([x[0] for x in segs]), lengths)
    live = np.repeat(np.array([float(x[5]) for x in segs]), lengths)
    empty = np.repeat(np.array([float(max(0, x[6] - x[5])) for x in segs]), lengths)
    split = np.repeat(np.array([x[7] > 1 for x in segs]), lengths)
    dram = kv_unique if sh.packed else kv_unique * _reread_factor(gpu, a, sh.group, live / sh.heads,
                                                                  kv_unique / max(1, sh.kv_heads))
    if any(x[10] for x in segs):
        first = np.repeat(np.array([x[9] for x in segs]), lengths)
        exposed = np.repeat(np.array([x[10] for x in segs]), lengths)
        out, _ = _finish_body(gpu, a, sched, empty, kv_unique, dram, sh.qo, split, live, first, exposed)
    else:
        out, _ = _finish_body(gpu, a, sched, empty, kv_unique, dram, sh.qo, split, live)
    return out
