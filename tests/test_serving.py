"""Serving simulation: scheduler invariants, preemption, determinism, load response, fast-forward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmodels.gpu import load_gpu
from hwmodels.memory import memory_breakdown
from sim.config import RouterKind, ServeConfig
from sim.metrics import summarize
from sim.scheduler import VLLMV1Scheduler
from sim.serving import simulate_serving
from workloads.catalog import load_model
from workloads.errors import CapacityError
from workloads.requests import Request
from workloads.traces import synthetic

M8 = load_model("llama-3.1-8b")
H100 = load_gpu("h100-sxm-80gb")


def _requests(n: int, rate: float, seed: int = 0, prompt=(50, 1500), output=(5, 300)) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    return [Request(i, float(t[i]), int(rng.integers(*prompt)), int(rng.integers(*output))) for i in range(n)]


def _small_kv_cfg(blocks: int, **kw) -> ServeConfig:
    """A config whose KV cache holds exactly ``blocks`` blocks (device memory set to fit)."""
    base = memory_breakdown(M8, H100, gpu_memory_utilization=1.0, device_bytes=1e12)
    dev = base.weights_bytes + base.activation_bytes + base.non_torch_bytes + blocks * base.block_bytes + 1
    return ServeConfig(gpu_memory_utilization=1.0, device_memory_bytes=dev, **kw)


def test_scheduler_invariants_and_preemption_by_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _small_kv_cfg(300, max_num_seqs=16, max_num_batched_tokens=512, fast_forward=False)
    reqs = _requests(60, rate=50.0, prompt=(100, 900), output=(50, 400))
    seen = {"steps": 0, "tokens": 0, "admitted": []}
    orig = VLLMV1Scheduler.schedule

    def checked(self):  # type: ignore[no-untyped-def]
        waiting_before = [r.id for r in self.waiting]
        plan = orig(self)
        assert sum(plan.tokens) <= cfg.max_num_batched_tokens
        assert len(self.running) <= cfg.max_num_seqs
        assert 0 <= self.free_blocks <= self.num_blocks
        assert sum(r.blocks for r in self.running) == self.num_blocks - self.free_blocks
        for r in self.running:
            assert r.blocks * cfg.block_size >= r.num_computed
        admitted = [r.id for r in plan.reqs if r.id in waiting_before]
        assert admitted == waiting_before[:len(admitted)]      # FCFS: a prefix of the queue
        seen["steps"] += 1
        seen["tokens"] += sum(plan.tokens)
        return plan

    monkeypatch.setattr(VLLMV1Scheduler, "schedule", checked)
    res = simulate_serving(M8, H100, reqs, cfg)
    assert seen["steps"] == res.iterations
    assert res.preemptions.sum() > 0
    # every prompt token and every generated token but the last is computed once, plus the recompute
    minimum = sum(r.prompt_tokens + r.output_tokens - 1 for r in reqs)
    assert seen["tokens"] > minimum
    assert np.all(res.last_ns >= res.first_ns) and np.all(res.first_ns > res.arrival_ns)


def test_fast_forward_gives_identical_per_request_metrics() -> None:
    reqs = _requests(150, rate=6.0, seed=3)
    for cfg in (ServeConfig(replicas=2, router=RouterKind.LEAST_OUTSTANDING_TOKENS),
                _small_kv_cfg(250, max_num_seqs=32)):
        a = simulate_serving(M8, H100, reqs, cfg)
        b = simulate_serving(M8, H100, reqs, dataclasses.replace(cfg, fast_forward=False))
        for f in ("first_ns", "last_ns", "admitted_ns", "replica", "preemptions"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        assert a.iterations == b.iterations
        assert a.events < b.events
        sa, sb = summarize(a), summarize(b)
        assert sa["itl_s"] == sb["itl_s"]


def test_same_seed_same_result() -> None:
    reqs1 = synthetic("azure-conv", 3.0, 60.0, seed=11)
    reqs2 = synthetic("azure-conv", 3.0, 60.0, seed=11)
    cfg = ServeConfig(replicas=2)
    s1, s2 = summarize(simulate_serving(M8, H100, reqs1, cfg)), summarize(simulate_serving(M8, H100, reqs2, cfg))
    assert s1 == s2


def test_throughput_saturates_and_ttft_grows_under_overload() -> None:
    cfg = _small_kv_cfg(1500, max_num_seqs=64)
    out = []
    for rate in (1.0, 8.0, 40.0, 80.0):
        reqs = _requests(200, rate=rate, seed=5, prompt=(200, 1200), output=(100, 300))
        out.append(summarize(simulate_serving(M8, H100, reqs, cfg)))
    tput = [s["throughput"]["output_tokens_per_s"] for s in out]
    ttft = [s["ttft_s"]["mean"] for s in out]
    assert tput[1] > 3 * tput[0]                 # light load: throughput follows the rate
    assert tput[3] < 1.3 * tput[2]               # heavy load: saturated
    assert ttft[3] > 5 * ttft[0] and ttft[3] > ttft[2] > ttft[1]


def test_router_spreads_load() -> None:
    reqs = _requests(200, rate=20.0, seed=9)
    for router in RouterKind:
        res = simulate_serving(M8, H100, reqs, ServeConfig(replicas=4, router=router))
        counts = np.bincount(res.replica, minlength=4)
        assert counts.min() > 20, (router, counts)


def test_70b_on_one_rtx4090_raises_capacity_error() -> None:
    with pytest.raises(CapacityError) as exc:
        simulate_serving(load_model("llama-2-70b"), load_gpu("rtx-4090"), _requests(3, 1.0), ServeConfig())
    assert {"weights", "activation", "kv_cache"} <= set(exc.value.breakdown)


def test_request_larger_than_kv_cache_is_capacity_error() -> None:
    with pytest.raises(CapacityError):
        simulate_serving(M8, H100, [Request(0, 0.0, 4000, 200)], _small_kv_cfg(100))


def test_metrics_shape() -> None:
    s = summarize(simulate_serving(M8, H100, _requests(50, 5.0), ServeConfig()))
    for k in ("ttft_s", "tpot_s", "itl_s", "latency_s"):
        assert set(s[k]) == {"mean", "p50", "p90", "p99"}
        assert s[k]["p50"] <= s[k]["p90"] <= s[k]["p99"]
    assert 0 < s["mfu"] < 1 and 0 < s["mbu"] < 1
    assert 0 < s["kv_cache"]["mean_utilisation"] < 1


def test_one_sequence_stretch_length_closed_form() -> None:
    """A lone sequence's stretch length (closed form) equals the general bisection over KV blocks."""
    from sim.replica import Replica
    from sim.scheduler import Plan, SimRequest

    class _Sched:
        free_blocks = 0

    rep = Replica.__new__(Replica)
    rep.block_size = 16
    rep.sched = _Sched()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        r = SimRequest(0, 0, int(rng.integers(1, 3000)), int(rng.integers(1, 600)))
        r.generated = int(rng.integers(0, r.output))
        r.num_tokens = r.prompt + r.generated
        r.num_computed = r.num_tokens - 1
        r.blocks = -(-(r.num_computed + 1) // 16) + int(rng.integers(0, 3))
        rep.sched.free_blocks = int(rng.integers(0, 40))
        plan = Plan()
        plan.reqs = [r]
        twin = SimRequest(1, 0, r.prompt, r.output)   # a second, identical request forces the general path
        for a in ("generated", "num_tokens", "num_computed", "blocks"):
            setattr(twin, a, getattr(r, a))
        both = Plan()
        both.reqs = [r, twin]
        got = rep._stretch_len(plan)
        # two identical sequences need twice the blocks of one: the same length with twice the free blocks
        rep.sched.free_blocks *= 2
        assert got == rep._stretch_len(both)
