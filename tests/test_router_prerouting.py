"""Round-robin pre-routing (``sim.serving``: a router that reads no replica state assigns every request in
advance, ``Replica.assign``, and each replica takes its arrivals in at iteration boundaries) gives the results
of routing each request when it arrives (``Replica.add`` from the arrival callback).

Two references, each simulated on the same trace and config:
* the same round-robin router with ``reads_state`` forced on, which sends the run down the per-arrival path;
* an independent one: the trace split round-robin by hand (the j-th request in arrival order, ties by id, to
  replica j mod R) and each share simulated alone on one replica whose router reads state (least outstanding
  tokens: with one replica it always answers 0, through the per-arrival path).
Per-request admission, first and last token times (so TTFT and E2E), preemptions and replica must match
exactly, as must the ITL samples and each replica's busy time. A different split (pairs of consecutive requests
to the same replica) gives most requests other batch neighbours and so other TTFTs: the comparison can fail.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmodels.gpu import load_gpu
from hwmodels.memory import memory_breakdown
from sim.config import RouterKind, ServeConfig
from sim.replica import Replica
from sim.router import RoundRobinRouter
from sim.serving import ServeResult, simulate_serving
from workloads.catalog import load_model
from workloads.requests import Request

M8 = load_model("llama-3.1-8b")
H100 = load_gpu("h100-sxm-80gb")


def _trace(n: int, rate: float, seed: int) -> list[Request]:
    """Poisson arrivals at ``rate``/s, prompts 50-1500 and outputs 5-300 tokens, listed out of arrival order;
    every 7th request arrives at the same instant as the one before it (ties broken by id)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    t[7::7] = t[6:-1:7]
    reqs = [Request(i, float(t[i]), int(rng.integers(50, 1500)), int(rng.integers(5, 300))) for i in range(n)]
    return reqs[::-1]


def _small_kv_cfg(blocks: int, **kw) -> ServeConfig:  # type: ignore[no-untyped-def]
    """A config whose KV cache holds exactly ``blocks`` blocks per replica (device memory set to fit), so
    that requests are preempted."""
    base = memory_breakdown(M8, H100, gpu_memory_utilization=1.0, device_bytes=1e12)
    dev = base.weights_bytes + base.activation_bytes + base.non_torch_bytes + blocks * base.block_bytes + 1
    return ServeConfig(gpu_memory_utilization=1.0, device_memory_bytes=dev, **kw)


CASES = {
    "3 replicas": (ServeConfig(replicas=3), _trace(90, rate=9.0, seed=5)),
    "3 replicas, stepping": (ServeConfig(replicas=3, fast_forward=False), _trace(90, rate=9.0, seed=5)),
    "2 replicas, preempting": (_small_kv_cfg(250, replicas=2, max_num_seqs=16), _trace(80, rate=12.0, seed=2)),
}
FIELDS = ("admitted_ns", "first_ns", "last_ns", "preemptions")


def _per_id(res: ServeResult) -> dict[int, tuple[int, ...]]:
    cols = [res.replica, *(getattr(res, f) for f in FIELDS)]
    return {int(i): tuple(int(c[k]) for c in cols) for k, i in enumerate(res.ids)}


def _itl(results: list[ServeResult]) -> np.ndarray:
    """The ITL samples of ``results`` pooled, each repeated by its weight, sorted (a multiset)."""
    return np.sort(np.concatenate([np.repeat(r.itl_ns, r.itl_weight) for r in results]))


def _by_hand(reqs: list[Request], cfg: ServeConfig, replica_of) -> tuple[dict[int, tuple[int, ...]], list[ServeResult]]:  # type: ignore[no-untyped-def]
    """Each replica's share (``replica_of(j)`` for the j-th arrival) simulated alone; per request: the replica
    and FIELDS."""
    order = sorted(reqs, key=lambda r: (r.arrival_s, r.id))
    one = dataclasses.replace(cfg, replicas=1, router=RouterKind.LEAST_OUTSTANDING_TOKENS)
    got: dict[int, tuple[int, ...]] = {}
    alone = []
    for i in range(cfg.replicas):
        res = simulate_serving(M8, H100, [r for j, r in enumerate(order) if replica_of(j) == i], one)
        alone.append(res)
        got.update({rid: (i, *v[1:]) for rid, v in _per_id(res).items()})
    return got, alone


@pytest.mark.parametrize("case", list(CASES))
def test_round_robin_prerouting_matches_routing_at_arrival(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, reqs = CASES[case]
    adds = {"n": 0}
    add = Replica.add

    def counted(self, req):  # type: ignore[no-untyped-def]
        adds["n"] += 1
        add(self, req)

    monkeypatch.setattr(Replica, "add", counted)
    pre = simulate_serving(M8, H100, reqs, cfg)
    assert adds["n"] == 0                                   # routed in advance: no replica took an arrival
    monkeypatch.setattr(RoundRobinRouter, "reads_state", True)
    live = simulate_serving(M8, H100, reqs, cfg)
    assert adds["n"] == len(reqs)                           # routed at each arrival
    monkeypatch.undo()

    if case.endswith("preempting"):
        assert pre.preemptions.sum() > 0
    assert np.array_equal(pre.ids, live.ids)
    for f in ("replica", *FIELDS):
        assert np.array_equal(getattr(pre, f), getattr(live, f)), f
    assert np.array_equal(_itl([pre]), _itl([live]))
    assert pre.busy_ns == live.busy_ns and pre.iterations == live.iterations

    want = _per_id(pre)
    assert sorted({v[0] for v in want.values()}) == list(range(cfg.replicas))
    hand, alone = _by_hand(reqs, cfg, lambda j: j % cfg.replicas)
    assert hand == want
    assert pre.busy_ns == [r.busy_ns[0] for r in alone]
    assert np.array_equal(_itl([pre]), _itl(alone))

    other, _ = _by_hand(reqs, cfg, lambda j: (j // 2) % cfg.replicas)
    ttft = {rid: v[2] for rid, v in want.items()}
    assert sum(ttft[rid] != v[2] for rid, v in other.items()) > len(reqs) // 2
