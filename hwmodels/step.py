"""Time of one forward iteration of a model replica (TP within a node, PP stages).

``StepTimeModel(model, gpu, tp, pp).iteration_time(batch)`` is what the serving simulation calls.
PROVISIONAL: sums the kernel model over the ops of one layer; the fast path is to come.
"""

from __future__ import annotations

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import GPUKernelModel
from workloads.llm_ops import Batch, check_tp, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DType


class StepTimeModel:
    def __init__(self, model: ModelSpec, gpu: GPUSpec, tp: int = 1, pp: int = 1,
                 dtype: DType = DType.BF16) -> None:
        check_tp(model, tp)
        self.model, self.gpu, self.tp, self.pp, self.dtype = model, gpu, tp, pp, dtype
        self.kernels = GPUKernelModel(gpu)

    def iteration_time(self, batch: Batch) -> float:
        """Seconds for one iteration of ``batch`` through all layers (all PP stages in sequence)."""
        layer = sum(self.kernels.time(op) for op in layer_ops(self.model, batch, self.tp, self.dtype))
        head = sum(self.kernels.time(op) for op in head_ops(self.model, batch, self.tp, self.dtype))
        return self.model.num_layers * layer + head
