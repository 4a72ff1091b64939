"""Memory traffic: DRAM and L2 bandwidth as seen by a kernel with a given parallelism.

A kernel with few CTAs cannot saturate DRAM: each SM keeps a bounded number of requests in flight,
so one busy SM draws at most ``sm_bw_share x bandwidth / sm_count``. Traffic whose working set fits
in L2 (a small activation the previous kernel just wrote, weights re-read by a warm benchmark loop)
is served at ``l2_bw_mult`` x DRAM bandwidth; the hit fraction falls linearly from 1 at half the L2
to 0 at the full L2 (streaming beyond the L2 evicts before reuse).
"""

from __future__ import annotations

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from workloads.ops import MemoryOp, OpKind


def l2_hit_fraction(gpu: GPUSpec, working_set: float) -> float:
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


def kind_efficiency(cal: Calibration, kind: OpKind) -> float:
    return {
        OpKind.NORM: cal.norm_eff,
        OpKind.ROPE: cal.rope_eff,
        OpKind.ACTIVATION: cal.act_eff,
        OpKind.ADD: cal.add_eff,
        OpKind.EMBEDDING: cal.emb_eff,
        OpKind.ELEMENTWISE: cal.elementwise_eff,
    }.get(kind, cal.elementwise_eff)


ROW_BYTES_PER_CTA = 16 * 1024  # elementwise kernels give each CTA a few KiB; norms one row per CTA


def memory_op_cost(op: MemoryOp, gpu: GPUSpec, cal: Calibration) -> tuple[float, dict[str, float]]:
    """``kernels`` launches, each moving its share of the bytes at the kind's achieved bandwidth."""
    kernels = max(1, op.kernels)
    per_kernel = op.bytes / kernels
    if op.kind in (OpKind.NORM, OpKind.EMBEDDING, OpKind.ROPE):
        ctas = float(op.tokens)
    else:
        ctas = max(float(op.tokens), per_kernel / ROW_BYTES_PER_CTA)
    mem = kernels * stream_time(gpu, cal, per_kernel, ctas, kind_efficiency(cal, op.kind))
    launch = kernels * cal.launch_s
    return launch + mem, {"memory_s": mem, "launch_s": launch, "kernels": float(kernels)}
