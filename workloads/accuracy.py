"""Accuracy of simulated against measured values: the figures every validation in xpusim reports.

``wape`` (weighted absolute percentage error) = sum|sim - meas| / sum meas: dominated by the large
values, it says how far off a total (an iteration, a run) would be. ``mape`` = mean |sim - meas| / meas:
every pair counts the same, so it exposes errors on the small ops a WAPE hides.

>>> s = ErrorStats.from_pairs([1.1, 2.0], [1.0, 2.0])
>>> (s.n, round(s.wape, 4), round(s.mape, 4))
(2, 0.0333, 0.05)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorStats:
    """Error of ``n`` (simulated, measured) pairs. Ratios, not percent (0.05 = 5 %)."""

    n: int
    wape: float
    mape: float
    sum_abs_error: float = 0.0
    sum_measured: float = 0.0
    max_ape: float = 0.0

    @classmethod
    def from_pairs(cls, simulated: Iterable[float], measured: Iterable[float]) -> ErrorStats:
        sim, meas = list(simulated), list(measured)
        if len(sim) != len(meas):
            raise ValueError(f"{len(sim)} simulated values but {len(meas)} measured")
        for m in meas:
            if not (m > 0 and math.isfinite(m)):
                raise ValueError(f"measured values must be finite and > 0, got {m!r}")
        if not sim:
            return cls(n=0, wape=math.nan, mape=math.nan)
        abs_err = [abs(s - m) for s, m in zip(sim, meas)]
        apes = [e / m for e, m in zip(abs_err, meas)]
        total = sum(meas)
        return cls(n=len(sim), wape=sum(abs_err) / total, mape=sum(apes) / len(apes),
                   sum_abs_error=sum(abs_err), sum_measured=total, max_ape=max(apes))

    @classmethod
    def merge(cls, parts: Iterable[ErrorStats]) -> ErrorStats:
        """Stats of the union of the pairs behind ``parts`` (exact: WAPE and MAPE are sums)."""
        parts = [p for p in parts if p.n]
        if not parts:
            return cls(n=0, wape=math.nan, mape=math.nan)
        n = sum(p.n for p in parts)
        err = sum(p.sum_abs_error for p in parts)
        meas = sum(p.sum_measured for p in parts)
        return cls(n=n, wape=err / meas, mape=sum(p.mape * p.n for p in parts) / n,
                   sum_abs_error=err, sum_measured=meas, max_ape=max(p.max_ape for p in parts))

    def meets(self, wape: float, mape: float) -> bool:
        return self.wape <= wape and self.mape <= mape

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "wape": self.wape, "mape": self.mape}


def grouped(pairs: Iterable[tuple[str, float, float]]) -> tuple[ErrorStats, dict[str, ErrorStats]]:
    """(overall, per-key) stats of ``(key, simulated, measured)`` triples."""
    by: dict[str, tuple[list[float], list[float]]] = {}
    for key, s, m in pairs:
        sims, meas = by.setdefault(key, ([], []))
        sims.append(s)
        meas.append(m)
    per = {k: ErrorStats.from_pairs(s, m) for k, (s, m) in by.items()}
    return ErrorStats.merge(per.values()), per


def stats_table(per: Mapping[str, ErrorStats]) -> list[tuple[str, int, float, float]]:
    return [(k, v.n, v.wape, v.mape) for k, v in per.items()]
