"""Per-kernel time on one GPU: ``GPUKernelModel(gpu).cost(op) -> (seconds, breakdown)``.

A tile- and wave-quantised roofline per kernel type (:mod:`.gemm`, :mod:`.attention`,
:mod:`.memory`, :mod:`.comm`), driven by the GPU's spec and by a handful of efficiency constants
per architecture family (:mod:`.calibration`, ``hwmodels/calibration/<family>.toml``).
"""

from __future__ import annotations

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.attention import decode_attention_cost, prefill_attention_cost
from hwmodels.kernels.calibration import Calibration, load_calibration
from hwmodels.kernels.comm import all_reduce_cost
from hwmodels.kernels.gemm import gemm_cost
from hwmodels.kernels.memory import memory_op_cost
from workloads.ops import AllReduce, DecodeAttention, Gemm, MemoryOp, Op, PrefillAttention

__all__ = ["Calibration", "GPUKernelModel", "load_calibration"]


class GPUKernelModel:
    """Kernel times of one GPU. ``calibration`` defaults to the GPU family's fitted constants."""

    def __init__(self, gpu: GPUSpec, calibration: Calibration | None = None) -> None:
        self.gpu = gpu
        self.cal = calibration if calibration is not None else load_calibration(gpu.architecture.value)

    def cost(self, op: Op) -> tuple[float, dict[str, float]]:
        g, c = self.gpu, self.cal
        if isinstance(op, Gemm):
            return gemm_cost(op, g, c)
        if isinstance(op, PrefillAttention):
            return prefill_attention_cost(op, g, c)
        if isinstance(op, DecodeAttention):
            return decode_attention_cost(op, g, c)
        if isinstance(op, MemoryOp):
            return memory_op_cost(op, g, c)
        if isinstance(op, AllReduce):
            return all_reduce_cost(op, g, c)
        raise TypeError(f"no cost model for {type(op).__name__}")

    def time(self, op: Op) -> float:
        return self.cost(op)[0]
