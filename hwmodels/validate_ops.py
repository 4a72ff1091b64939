"""Per-kernel validation: simulate every measured (row, op) of a file and score it (n / WAPE / MAPE)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import Calibration, GPUKernelModel
from workloads.accuracy import ErrorStats, grouped
from workloads.measured import MeasuredFile, Timing
from workloads.ops import Op


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
    overall: ErrorStats
    per_op: dict[str, ErrorStats]
    points: tuple[OpsPoint, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": self.format, "hardware": self.hardware}
        d.update(self.overall.to_dict())
        d["ops"] = {k: v.to_dict() for k, v in self.per_op.items()}
        return d


def simulate_measured(measured: MeasuredFile, gpu: GPUSpec,
                      calibration: Calibration | None = None) -> list[OpsPoint]:
    model = GPUKernelModel(gpu, calibration)
    extra = model.cal.host_sync_s if measured.timing is Timing.WALL_CLOCK else 0.0
    cache: dict[Op, float] = {}

    def t(op: Op) -> float:
        if op not in cache:
            cache[op] = model.time(op)
        return cache[op]

    return [OpsPoint(r.op, r.line, sum(t(op) for op in r.ops) + extra, r.seconds) for r in measured.records]


def validate_ops(measured: MeasuredFile, gpu: GPUSpec, calibration: Calibration | None = None) -> OpsValidation:
    """Simulate each record of ``measured`` on ``gpu`` and return overall and per-op error stats."""
    points = simulate_measured(measured, gpu, calibration)
    overall, per = grouped((p.op, p.simulated_s, p.measured_s) for p in points)
    return OpsValidation(measured.format, gpu.id, overall, per, tuple(points))
