"""``sim.metrics.weighted_stats``: the bucketed path for integer samples (ITL gaps in ns, counted) gives the
same percentiles as sorting every sample, and the same mean.

The reference is the definition in the docstring, computed independently here with numpy's repeat and
sort: the 'lower' percentile, the smallest sample whose cumulative weight reaches p % of the total."""

from __future__ import annotations

import numpy as np
import pytest

from sim.metrics import PCTS, weighted_stats


def _reference(x: np.ndarray, w: np.ndarray) -> dict[str, float]:
    xs = np.sort(np.repeat(x, w))
    total = xs.size
    out = {"mean": float(xs.mean())}
    for p in PCTS:
        k = int(np.ceil(p / 100.0 * total))       # the k-th smallest sample, 1-based
        out[f"p{p}"] = float(xs[max(k, 1) - 1])
    return out


@pytest.mark.parametrize("seed", range(6))
def test_bucketed_percentiles_equal_the_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4000))
    # ns-scale gaps with a long tail (as ITLs: most near one decode step, a few preempted or queued)
    x = np.concatenate([rng.integers(8_000_000, 9_000_000, n),
                        rng.integers(0, 2_000_000_000, max(1, n // 50))]).astype(np.int64)
    w = rng.integers(1, 50, x.size).astype(np.int64)
    got = weighted_stats(x, w)
    want = _reference(x, w)
    for p in PCTS:
        assert got[f"p{p}"] == want[f"p{p}"], p
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)


def test_bucketed_edge_cases() -> None:
    """One sample; all equal; a value beyond 2**40 (the bucket shift); zeros; and float samples, which
    take the sorting path and must agree with the integer path on the same values."""
    for x, w in ((np.array([7]), np.array([3])), (np.full(100, 5), np.ones(100, dtype=np.int64)),
                 (np.array([0, 0, 1, 2**41]), np.array([5, 1, 1, 1])),
                 (np.arange(1000), np.arange(1000) % 3 + 1)):
        x = x.astype(np.int64)
        w = w.astype(np.int64)
        got = weighted_stats(x, w)
        want = _reference(x, w)
        assert all(got[f"p{p}"] == want[f"p{p}"] for p in PCTS)
        as_float = weighted_stats(x.astype(np.float64), w.astype(np.float64))
        assert all(got[f"p{p}"] == as_float[f"p{p}"] for p in PCTS)
