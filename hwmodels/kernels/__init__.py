"""Per-kernel time on one GPU: ``GPUKernelModel(gpu).cost(op) -> (seconds, breakdown)``.

A tile- and wave-quantised roofline per kernel type (:mod:`.gemm`, :mod:`.attention`,
:mod:`.memory`, :mod:`.comm`), driven by the GPU's spec and by a handful of efficiency constants
per architecture family (:mod:`.calibration`, ``hwmodels/calibration/<family>.toml``), and by the
software stack that implements each op (:mod:`.stack`, ``hwmodels/stacks/<stack>.toml``: vLLM's fused
kernels, eager HuggingFace, a tuned cuBLAS call...).
"""

from __future__ import annotations

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.attention import decode_attention_cost, decode_attention_times, prefill_attention_cost
from hwmodels.kernels.attention_calibration import load_attention_calibration
from hwmodels.kernels.calibration import Calibration, load_calibration
from hwmodels.kernels.comm import all_reduce_cost
from hwmodels.kernels.gemm import gemm_cost
from hwmodels.kernels.memory import memory_op_cost
from hwmodels.kernels.stack import Stack, list_stacks, load_stack
from workloads.ops import AllReduce, DecodeAttention, Gemm, MemoryOp, Op, PrefillAttention

__all__ = ["Calibration", "GPUKernelModel", "Stack", "list_stacks", "load_calibration", "load_stack"]

DEFAULT_STACK = "vllm"  # what the serving simulation runs


class GPUKernelModel:
    """Kernel times of one GPU under one software stack. ``calibration`` defaults to the GPU family's
    fitted constants; ``stack`` is a profile name or :class:`Stack` (default vLLM)."""

    def __init__(self, gpu: GPUSpec, calibration: Calibration | None = None,
                 stack: Stack | str = DEFAULT_STACK) -> None:
        self.gpu = gpu
        self.cal = calibration if calibration is not None else load_calibration(gpu.architecture.value)
        self.stack = stack if isinstance(stack, Stack) else load_stack(stack)
        # the family's attention constants, or another kernel generation's when the stack runs one
        family = gpu.architecture.value
        self.attn = load_attention_calibration(family, self.stack.attention_kernel_for(family))

    def cost(self, op: Op) -> tuple[float, dict[str, float]]:
        g, c = self.gpu, self.cal
        if isinstance(op, Gemm):
            return gemm_cost(op, g, c, self.stack)
        if isinstance(op, PrefillAttention):
            return self._profiled(prefill_attention_cost(op, g, c, self.attn))
        if isinstance(op, DecodeAttention):
            return self._profiled(decode_attention_cost(op, g, c, self.attn))
        if isinstance(op, MemoryOp):
            return memory_op_cost(op, g, c, self.stack)
        if isinstance(op, AllReduce):
            return all_reduce_cost(op, g, c)
        raise TypeError(f"no cost model for {type(op).__name__}")

    def _profiled(self, cost: tuple[float, dict[str, float]]) -> tuple[float, dict[str, float]]:
        """An attention call less the stack's ``attention_event_s`` (0 for event- or wall-timed stacks)."""
        ev = self.stack.attention_event_s
        if ev <= 0.0 or cost[0] <= 0.0:
            return cost
        t, bd = cost
        return max(0.0, t - ev), {**bd, "event_s": -ev}

    def time(self, op: Op) -> float:
        return self.cost(op)[0]

    def decode_stretch_times(self, op: DecodeAttention, steps: int):  # type: ignore[no-untyped-def]
        """Times of ``steps`` decode calls, call j over ``op.kv_lens + j`` (numpy array); each equals
        ``time()`` of that call."""
        times = decode_attention_times(op, steps, self.gpu, self.attn)
        ev = self.stack.attention_event_s
        return times if ev <= 0.0 else np.where(times > 0.0, np.maximum(times - ev, 0.0), times)
