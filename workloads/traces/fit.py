"""Fitting a synthetic workload profile to a request trace.

A profile is what the synthetic generators need: the mean arrival rate, the burstiness of arrivals
(coefficient of variation of inter-arrival times, Gamma shape k = 1/cv^2) and the prompt / output
length distributions as quantile tables sampled by log-linear interpolation of the inverse CDF.

``benchmarks/fit_azure.py`` runs :func:`fit_profile` on the Azure 2023 traces and prints the constants
shipped in :mod:`workloads.traces.profiles`; a test re-derives them when the data folder is present.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workloads.errors import WorkloadError
from workloads.requests import Request

# Probabilities of the shipped quantile tables: every percentile plus a denser upper tail, where the
# mean of a long-tailed length distribution is decided (104 points).
QUANTILE_PROBS: tuple[float, ...] = (
    (0.0, 0.005) + tuple(i / 100 for i in range(1, 100)) + (0.995, 0.999, 1.0)
)


@dataclass(frozen=True)
class Profile:
    """A fitted synthetic workload. Lengths are tokens; quantiles are at :data:`QUANTILE_PROBS`.

    ``cv`` is the default burstiness used by the generator (see ``cv_moment`` / ``cv_mle`` for the two
    estimates and the profile's ``note`` for which one was chosen and why).
    """

    name: str
    source: str
    requests: int
    duration_s: float
    rate_rps: float
    cv: float
    cv_moment: float
    cv_mle: float
    prompt_quantiles: tuple[int, ...]
    output_quantiles: tuple[int, ...]
    log_length_correlation: float
    note: str = ""

    def __post_init__(self) -> None:
        for field in ("prompt_quantiles", "output_quantiles"):
            q = getattr(self, field)
            if len(q) != len(QUANTILE_PROBS):
                raise ValueError(f"{self.name}: {field} has {len(q)} points, expected {len(QUANTILE_PROBS)}")
            if min(q) < 1 or any(b < a for a, b in itertools.pairwise(q)):
                raise ValueError(f"{self.name}: {field} must be >= 1 and non-decreasing")

    @property
    def gamma_shape(self) -> float:
        """Gamma shape k = 1/cv^2 of the inter-arrival times."""
        return 1.0 / self.cv**2


def gamma_shape_mle(x: np.ndarray) -> float:
    """Maximum-likelihood Gamma shape of positive samples: solves log k - digamma(k) = log(mean) - mean(log)."""
    from scipy.optimize import brentq  # type: ignore[import-untyped]
    from scipy.special import digamma  # type: ignore[import-untyped]

    x = np.asarray(x, dtype=np.float64)
    x = x[x > 0]
    s = math.log(x.mean()) - float(np.log(x).mean())
    if s <= 0:
        return math.inf
    return float(brentq(lambda k: math.log(k) - float(digamma(k)) - s, 1e-6, 1e6))


def inter_arrival_cv(requests: Sequence[Request]) -> float:
    """Coefficient of variation (std / mean) of the gaps between consecutive arrivals."""
    gaps = np.diff(np.array([r.arrival_s for r in requests], dtype=np.float64))
    if len(gaps) < 2 or gaps.mean() <= 0:
        raise WorkloadError(f"need at least 3 requests spread in time to measure burstiness, got {len(requests)}")
    return float(gaps.std() / gaps.mean())


def fit_profile(name: str, requests: Sequence[Request], *, source: str, cv_choice: str = "mle",
                note: str = "") -> Profile:
    """Fit a :class:`Profile` to ``requests`` (sorted by arrival).

    ``cv_choice`` picks the default burstiness: ``"moment"`` (std/mean of all gaps) or ``"mle"`` (the
    Gamma distribution fitted to the gaps by maximum likelihood, cv = 1/sqrt(k)); the moment estimate
    is dominated by the longest idle gaps, the likelihood one by the bulk of the gaps.
    """
    if cv_choice not in ("moment", "mle"):
        raise ValueError(f"cv_choice must be 'moment' or 'mle', got {cv_choice!r}")
    t = np.array([r.arrival_s for r in requests], dtype=np.float64)
    prompt = np.array([r.prompt_tokens for r in requests], dtype=np.float64)
    output = np.array([r.output_tokens for r in requests], dtype=np.float64)
    duration = float(t[-1] - t[0])
    cv_moment = inter_arrival_cv(requests)
    cv_mle = 1.0 / math.sqrt(gamma_shape_mle(np.diff(t)))
    probs = np.array(QUANTILE_PROBS)
    return Profile(
        name=name,
        source=source,
        requests=len(requests),
        duration_s=round(duration, 3),
        rate_rps=round((len(requests) - 1) / duration, 4),
        cv=round(cv_mle if cv_choice == "mle" else cv_moment, 4),
        cv_moment=round(cv_moment, 4),
        cv_mle=round(cv_mle, 4),
        prompt_quantiles=tuple(int(v) for v in np.rint(np.quantile(prompt, probs))),
        output_quantiles=tuple(int(v) for v in np.rint(np.quantile(output, probs))),
        log_length_correlation=round(float(np.corrcoef(np.log(prompt), np.log(output))[0, 1]), 4),
        note=note,
    )
