"""Per-kernel time on one GPU: ``GPUKernelModel(gpu).cost(op) -> (seconds, breakdown)``.

A tile- and wave-quantised roofline per kernel type (:mod:`.gemm`, :mod:`.attention`,
:mod:`.memory`, :mod:`.comm`), driven by the GPU's spec and by a handful of efficiency constants
per architecture family (:mod:`.calibration`, ``hwmodels/calibration/<family>.toml``), and by the
software stack that implements each op (:mod:`.stack`, ``hwmodels/stacks/<stack>.toml``: vLLM's fused
kernels, eager HuggingFace, a tuned cuBLAS call...).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.attention import decode_attention_cost, decode_attention_times, prefill_attention_cost
from hwmodels.kernels.attention_calibration import AttentionCalibration, load_attention_calibration
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
            return self._timed(prefill_attention_cost(op, g, c, self._attn(op)))
        if isinstance(op, DecodeAttention):
            return self._timed(decode_attention_cost(op, g, c, self._attn(op)))
        if isinstance(op, MemoryOp):
            return memory_op_cost(op, g, c, self.stack)
        if isinstance(op, AllReduce):
            return all_reduce_cost(op, g, c)
        raise TypeError(f"no cost model for {type(op).__name__}")

    def _attn(self, op: PrefillAttention | DecodeAttention) -> AttentionCalibration:
        """The constants of the kernel the op names (a measured row knows which SDPA backend ran), else
        the stack's choice for the family."""
        if op.kernel is None:
            return self.attn
        return load_attention_calibration(self.gpu.architecture.value, op.kernel)

    def _timed(self, cost: tuple[float, dict[str, float]]) -> tuple[float, dict[str, float]]:
        """An attention call as the stack's measurements time it: the kernels' device time plus, for a
        stack timed by CUDA events around each call, ``attention_event_s`` and ``attention_gap_s`` per
        further kernel (the split-KV combine). Both are 0 for the profiler's device time."""
        ev = self.stack.attention_event_s
        if ev <= 0.0 or cost[0] <= 0.0:
            return cost
        t, bd = cost
        ev += self.stack.attention_gap_s if bd.get("combine_s", 0.0) > 0.0 else 0.0
        return t + ev, {**bd, "event_s": ev}

    def time(self, op: Op) -> float:
        return self.cost(op)[0]

    def decode_stretch_times(self, op: DecodeAttention, steps: int):  # type: ignore[no-untyped-def]
        """Times of ``steps`` decode calls, call j over ``op.kv_lens + j`` (numpy array); each equals
        ``time()`` of that call."""
        if self.stack.attention_event_s > 0.0:   # event-timed stacks (benchmark files, not serving): per call
            return np.array([self.time(replace(op, kv_lens=tuple(k + j for k in op.kv_lens))) if op.kv_lens else 0.0
                             for j in range(steps)])
        return decode_attention_times(op, steps, self.gpu, self._attn(op))
