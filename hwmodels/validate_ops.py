"""Per-kernel validation: simulate every measured (row, op) of a file and score it (n / WAPE / MAPE).

Each file format was measured under one software stack (:data:`FORMAT_STACK`); the file is simulated
with that stack's profile unless the caller names another."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import Calibration, GPUKernelModel, Stack
from workloads.accuracy import ErrorStats, grouped
from workloads.measured import MeasuredFile, Timing
from workloads.ops import Op

FORMAT_STACK = {
    "vidur-mlp": "vidur", "vidur-attention": "vidur",
    "lss-layers": "hf-eager",
    "lss-dense": "vllm", "lss-attention": "vllm",
    "llmcompass-matmul": "cublas",
    # xpusim's own kit (benchmarks/collect_cuda.py): PyTorch eager; its attention file forces SDPA's
    # flash backend (FlashAttention-2 kernels), the module's steps take PyTorch's default backend
    "xpusim-gemm": "torch", "xpusim-memory-ops": "torch", "xpusim-steps": "torch",
    "xpusim-attention": "torch-flash",
    "xpusim-kernel-times": "torch-step",   # the profiler's device time of each call (each SDPA row names its kernel)
}


def stack_for(fmt: str) -> str:
    """The software stack a measured format was profiled under (vLLM when the format is unknown)."""
    return FORMAT_STACK.get(fmt, "vllm")


@dataclass(frozen=True)
class OpsPoint:
    op: str
    line: int
    simulated_s: float
    measured_s: float


@dataclass(frozen=True)
class OpsValidation:
    format: str
    hardware: str
    stack: str
    overall: ErrorStats
    per_op: dict[str, ErrorStats]
    points: tuple[OpsPoint, ...] = field(repr=False, default=())
    skipped: dict[str, int] = field(default_factory=dict)   # rows of layers the model does not have

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": self.format, "hardware": self.hardware, "stack": self.stack}
        d.update(self.overall.to_dict())
        d["ops"] = {k: v.to_dict() for k, v in self.per_op.items()}
        if self.skipped:
            d["skipped"] = dict(self.skipped)
        return d


def simulate_measured(measured: MeasuredFile, gpu: GPUSpec, calibration: Calibration | None = None,
                      stack: Stack | str | None = None) -> list[OpsPoint]:
    model = GPUKernelModel(gpu, calibration, stack if stack is not None else stack_for(measured.format))
    extra = model.stack.host_overhead_s if measured.timing is Timing.WALL_CLOCK else 0.0
    cache: dict[Op, float] = {}

    def t(op: Op) -> float:
        if op not in cache:
            cache[op] = model.time(op)
        return cache[op]

    return [OpsPoint(r.op, r.line, sum(t(op) for op in r.ops) + extra, r.seconds) for r in measured.records]


def validate_ops(measured: MeasuredFile, gpu: GPUSpec, calibration: Calibration | None = None,
                 stack: Stack | str | None = None) -> OpsValidation:
    """Simulate each record of ``measured`` on ``gpu`` under ``stack`` (default: the format's own) and
    return overall and per-op error stats."""
    name = stack if isinstance(stack, str) else stack.name if stack is not None else stack_for(measured.format)
    points = simulate_measured(measured, gpu, calibration, stack if stack is not None else name)
    overall, per = grouped((p.op, p.simulated_s, p.measured_s) for p in points)
    return OpsValidation(measured.format, gpu.id, name, overall, per, tuple(points), dict(measured.skipped))
