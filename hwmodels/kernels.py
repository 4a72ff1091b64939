"""Per-kernel time on one GPU: ``GPUKernelModel(gpu).cost(op) -> (seconds, breakdown)``.

PROVISIONAL plain roofline (to be replaced by the calibrated, tile/wave-quantised model).
"""

from __future__ import annotations

from hwmodels.gpu import GPUSpec
from workloads.ops import AllReduce, DecodeAttention, Gemm, MemoryOp, Op, PrefillAttention

LAUNCH_S = 5e-6


class GPUKernelModel:
    def __init__(self, gpu: GPUSpec) -> None:
        self.gpu = gpu

    def cost(self, op: Op) -> tuple[float, dict[str, float]]:
        g = self.gpu
        if isinstance(op, AllReduce):
            if op.group <= 1:
                return 0.0, {}
            t = 2 * (op.group - 1) / op.group * op.bytes / g.interconnect_bandwidth + 10e-6
            return t, {"comm_s": t}
        if isinstance(op, (Gemm, PrefillAttention, DecodeAttention)):
            compute = op.flops / g.peak_flops(op.dtype)
        elif isinstance(op, MemoryOp):
            compute = op.flops / g.fp32_flops
        else:  # pragma: no cover
            raise TypeError(f"no cost model for {type(op).__name__}")
        memory = op.bytes / g.memory_bandwidth
        t = max(compute, memory) + LAUNCH_S
        return t, {"compute_s": compute, "memory_s": memory, "launch_s": LAUNCH_S}

    def time(self, op: Op) -> float:
        return self.cost(op)[0]
