"""Memory traffic: DRAM and L2 bandwidth as seen by a kernel with a given parallelism.

A kernel with few CTAs cannot saturate DRAM: each SM keeps a bounded number of requests in flight,
so one busy SM draws at most ``sm_bw_share x bandwidth / sm_count``. Traffic whose working set fits
in L2 (a small activation the previous kernel just wrote, weights re-read by a warm benchmark loop)
is served at ``l2_bw_mult`` x DRAM bandwidth; the hit fraction falls linearly from 1 at half the L2
to 0 at the full L2 (streaming beyond the L2 evicts before reuse).

Memory-bound ops (norms, rope, activations, adds, embedding gathers) take the launch geometry of
the software stack's kernel (:mod:`.stack`). A per-token ("row") kernel pays, per round of co-resident
CTAs, its loop steps' dependent latencies AND the round's bytes through the SM's share of bandwidth
(no overlap: one scalar load per thread in flight), so idle lanes of a row that is not a multiple of
the block and latency show even at many tokens; a grid-stride kernel is one latency, then bandwidth.
"""

from __future__ import annotations

import math

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from hwmodels.kernels.stack import Geometry, KernelImpl, Stack
from workloads.ops import MemoryOp, OpKind


def l2_hit_fraction(gpu: GPUSpec, working_set: float) -> float:
    """Share of traffic served by L2: 1 up to half the L2, falling linearly to 0 at the full L2; a
    ``working_set`` of ``inf`` never hits (a stack without the L2 credit, :attr:`Stack.l2_credit`)."""
    l2 = gpu.l2_cache_bytes
    if l2 <= 0:
        return 0.0
    return min(1.0, max(0.0, (l2 - working_set) / (0.5 * l2)))


def stream_time(gpu: GPUSpec, cal: Calibration, nbytes: float, ctas: float, eff: float = 1.0,
                working_set: float | None = None) -> float:
    """Seconds to move ``nbytes`` with ``ctas`` CTAs working in parallel (no launch overhead)."""
    if nbytes <= 0:
        return 0.0
    sms = gpu.sm_count
    dram = gpu.memory_bandwidth * cal.mem_eff * eff
    cap = gpu.memory_bandwidth * cal.sm_bw_share * min(max(ctas, 1.0), sms) / sms
    hit = l2_hit_fraction(gpu, nbytes if working_set is None else working_set)
    rate_dram = min(dram, cap)
    rate_l2 = min(dram, cap) * cal.l2_bw_mult
    return nbytes * (hit / rate_l2 + (1.0 - hit) / rate_dram)


ROW_BYTES_PER_CTA = 16 * 1024  # a grid-stride elementwise kernel gives each CTA a few KiB


def _row_time(tokens: int, width: float, cta_bytes: float, impl: KernelImpl, gpu: GPUSpec, cal: Calibration,
              working_set: float) -> tuple[float, float]:
    """One CTA per token looping over a row of ``width`` elements: ``(chain, transfer)`` seconds.

    The CTA has ``min(block_threads, width / vec)`` threads (rounded to warps); each loop step is a
    dependent round trip to memory, so a CTA takes ``passes x ceil(width / (threads x vec))`` memory
    latencies (the last step of a row that is not a multiple of the block runs with idle lanes but
    costs a full latency). ``threads_per_sm // threads`` CTAs share an SM; the busiest SM runs
    ``ceil(tokens / sms)`` CTAs in rounds of those. Each round's loads wait their latency AND the
    round's bytes through the SM's share of bandwidth (its share of DRAM, ``mem_eff x bw_eff``, with
    every active SM drawing; at most its L2 port, ``gemm_l2_bytes_per_clk_sm``): a loop with one
    scalar load per thread in flight cannot hide one behind the other. Traffic whose working set fits
    in L2 (the profiler re-runs the op on the tensors the previous kernel just wrote) is served at
    ``l2_bw_mult`` x the DRAM rate."""
    sms = gpu.sm_count
    threads = min(impl.block_threads, max(32, 32 * math.ceil(width / impl.vec / 32)))
    iters = math.ceil(width / (threads * impl.vec))
    per_round = max(1, cal.threads_per_sm // threads)
    per_sm = math.ceil(tokens / sms)                 # CTAs on the busiest SM
    rounds = math.ceil(per_sm / per_round)
    active = min(tokens, sms)
    port = cal.gemm_l2_bytes_per_clk_sm * (gpu.boost_clock_hz or 1.5e9)
    dram = gpu.memory_bandwidth * cal.mem_eff * impl.bw_eff / active
    hit = l2_hit_fraction(gpu, working_set)
    rate_dram = min(dram, port)
    rate_l2 = min(dram * cal.l2_bw_mult, port)
    transfer = per_sm * cta_bytes * (hit / rate_l2 + (1.0 - hit) / rate_dram)
    chain = rounds * impl.passes * iters * cal.mem_latency_s
    return chain, transfer


def gather_cost(op: MemoryOp, gpu: GPUSpec, cal: Calibration, stack: Stack) -> tuple[float, dict[str, float]]:
    """Embedding lookup as torch ``index_select``: up to ``gather_small_max`` indices, one small grid
    over the row whose threads loop over the indices (a serial chain of dependent loads per index);
    beyond, one thread per output element, bound by per-element index arithmetic
    (``gather_elems_per_sm_cycle``) or by bandwidth."""
    t = op.tokens
    if t <= stack.gather_small_max:
        body = t * stack.gather_index_latencies * cal.mem_latency_s
        return cal.launch_s + body, {"chain_s": body, "launch_s": cal.launch_s, "kernels": 1.0}
    elems = op.bytes_written / 2.0
    clock = gpu.boost_clock_hz or 1.5e9
    issue = elems / (gpu.sm_count * clock * stack.gather_elems_per_sm_cycle)
    mem = stream_time(gpu, cal, op.bytes, gpu.sm_count)
    body = cal.mem_latency_s + max(issue, mem)
    return cal.launch_s + body, {"issue_s": issue, "memory_s": mem, "launch_s": cal.launch_s, "kernels": 1.0}


def grid_eff(impl: KernelImpl, gpu: GPUSpec, cal: Calibration) -> float:
    """The fraction of the family's streaming rate a grid kernel reaches: ``bw_eff``, or less where the
    kernel's own issue rate (``sm_bytes_per_clk`` x SMs x clock) is below the DRAM rate."""
    if impl.sm_bytes_per_clk <= 0.0:
        return impl.bw_eff
    issue = gpu.sm_count * (gpu.boost_clock_hz or 1.5e9) * impl.sm_bytes_per_clk
    return min(impl.bw_eff, issue / (gpu.memory_bandwidth * cal.mem_eff))


def memory_op_cost(op: MemoryOp, gpu: GPUSpec, cal: Calibration, stack: Stack) -> tuple[float, dict[str, float]]:
    """``kernels`` launches (the op's own count, times the stack's): a row kernel's latency chain plus
    its transfer (:func:`_row_time`); a grid kernel's one latency or its bytes at the bandwidth the
    stack's kernel reaches, whichever is longer. A stack without the L2 credit (``l2_credit = false``)
    moves the bytes at the DRAM-side rate wherever they sit.

    :func:`hwmodels.step.memory_times` is this arithmetic vectorised over token counts, for the serving
    simulation's tables: a change here must be made there too (``tests/test_step_tables.py`` holds the two
    equal bit for bit; the table falls back to this function, with a warning, where they differ)."""
    if op.tokens <= 0:
        return 0.0, {}
    if op.kind is OpKind.EMBEDDING:
        return gather_cost(op, gpu, cal, stack)
    impl = stack.impl(op.kind)
    kernels = max(1, op.kernels) * impl.kernels
    per_kernel = op.bytes / kernels
    if impl.geometry is Geometry.ROW:
        width = op.bytes_written / (kernels * op.tokens * 2.0)  # 16-bit elements per row
        ws = per_kernel if stack.l2_credit else math.inf
        chain, mem = _row_time(op.tokens, width, per_kernel / op.tokens, impl, gpu, cal, ws)
        body = kernels * (chain + mem)
    else:
        chain = impl.passes * cal.mem_latency_s
        ctas = max(float(op.tokens), per_kernel / ROW_BYTES_PER_CTA)
        mem = stream_time(gpu, cal, per_kernel, ctas, grid_eff(impl, gpu, cal),
                          None if stack.l2_credit else math.inf)
        body = kernels * max(chain, mem)
    launch = kernels * cal.launch_s
    return launch + body, {"memory_s": kernels * mem, "chain_s": kernels * chain, "launch_s": launch,
                           "kernels": float(kernels)}
