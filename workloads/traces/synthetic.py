"""Synthetic request generators: arrivals (Poisson or Gamma renewal) and lengths from a fitted profile.

Everything is vectorised numpy. Randomness comes only from ``seed``: one ``SeedSequence`` is split
into independent streams for arrivals, prompt lengths and output lengths, so the same seed gives the
same lengths whatever the arrival process (handy for comparing Poisson against Gamma arrivals).
"""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np

from workloads.errors import ConfigError
from workloads.requests import Request
from workloads.traces.fit import QUANTILE_PROBS, Profile
from workloads.traces.profiles import PROFILES


class Arrival(StrEnum):
    """Arrival process of a synthetic workload."""

    POISSON = "poisson"  # exponential gaps, cv = 1
    GAMMA = "gamma"  # Gamma gaps with shape k = 1/cv^2 (cv > 1: bursty, cv < 1: regular)

    @classmethod
    def parse(cls, value: Arrival | str) -> Arrival:
        if isinstance(value, Arrival):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(a.value for a in cls)
            raise ConfigError(f"must be one of {choices}; got {value!r}", field="arrival", value=value) from None


def _positive(value: float, field: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"must be a finite number > 0, got {value!r}", field=field, value=value)
    return v


def arrival_times(rate: float, duration_s: float, rng: np.random.Generator, *,
                  arrival: Arrival | str = Arrival.POISSON, cv: float | None = None) -> np.ndarray:
    """Arrival times (s) in ``[0, duration_s)`` of a renewal process with mean rate ``rate`` (req/s).

    Poisson: exponential gaps. Gamma: gaps ~ Gamma(k = 1/cv^2, scale = cv^2 / rate), mean 1/rate, so
    cv = 1 is Poisson. The first arrival comes one gap after 0.
    """
    rate = _positive(rate, "rate")
    duration_s = _positive(duration_s, "duration_s")
    kind = Arrival.parse(arrival)
    spread = 1.0  # cv of the gaps
    if kind is Arrival.GAMMA:
        if cv is None:
            raise ConfigError("gamma arrivals need a cv", field="cv")
        spread = _positive(cv, "cv")
    elif cv is not None and not math.isclose(float(cv), 1.0):
        raise ConfigError(f"poisson arrivals have cv = 1; got cv={cv!r} (use arrival=gamma)", field="cv", value=cv)
    mean_n = rate * duration_s
    k = 1.0 / (spread * spread)
    chunk = int(mean_n + 6.0 * spread * math.sqrt(mean_n) + 16)
    parts: list[np.ndarray] = []
    t_end = 0.0
    while t_end < duration_s:  # almost always one pass; more when a very bursty draw falls short
        if kind is Arrival.POISSON:
            gaps = rng.exponential(1.0 / rate, size=chunk)
        else:
            gaps = rng.gamma(k, 1.0 / (k * rate), size=chunk)
        t = t_end + np.cumsum(gaps)
        parts.append(t)
        t_end = float(t[-1])
    times = np.concatenate(parts)
    return times[times < duration_s]


def sample_lengths(quantiles: tuple[int, ...] | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` token counts drawn from a quantile table at :data:`QUANTILE_PROBS`.

    Inverse-CDF sampling with log-linear interpolation between the tabulated quantiles (lengths are
    roughly log-normal, so this follows the body and the tail closely), rounded to integers >= 1.
    """
    logq = np.log(np.asarray(quantiles, dtype=np.float64))
    u = rng.random(n)
    x = np.exp(np.interp(u, QUANTILE_PROBS, logq))
    return np.maximum(np.rint(x), 1).astype(np.int64)


def synthetic(name: str, rate: float, duration_s: float, seed: int, arrival: Arrival | str | None = None,
              cv: float | None = None) -> list[Request]:
    """Requests of a synthetic workload fitted to a real trace (``'azure-code'``, ``'azure-conv'``).

    ``rate`` is the mean arrival rate (req/s) and ``duration_s`` the length of the arrival window.
    By default arrivals are Gamma with the profile's fitted cv; ``arrival='poisson'`` gives Poisson
    arrivals, ``cv=`` overrides the burstiness of Gamma arrivals. Prompt and output lengths are drawn
    independently from the profile's quantile tables (their measured correlation is ~0, see the profile).
    """
    profile = get_profile(name)
    kind = Arrival.GAMMA if arrival is None else Arrival.parse(arrival)
    if kind is Arrival.GAMMA and cv is None:
        cv = profile.cv
    arr_rng, prompt_rng, out_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    times = arrival_times(rate, duration_s, arr_rng, arrival=kind, cv=cv)
    n = len(times)
    prompts = sample_lengths(profile.prompt_quantiles, n, prompt_rng).tolist()
    outputs = sample_lengths(profile.output_quantiles, n, out_rng).tolist()
    t = times.tolist()
    return [Request(i, t[i], prompts[i], outputs[i]) for i in range(n)]


def get_profile(name: str) -> Profile:
    """The shipped profile called ``name``; ConfigError listing the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown synthetic workload; choices: {', '.join(sorted(PROFILES))}",
                          field="trace", value=name) from None
