"""The flow-level engine (sim/fabric.py) on small hand-made graphs.

Every expected number is derived in the test's docstring from the definition of max-min fairness
(Bertsekas & Gallager, *Data Networks*, 2nd ed., section 6.5.2: a rate vector is max-min fair when
no flow can be raised without lowering a flow whose rate is no larger; equivalently every flow
crosses a saturated link on which it has the largest rate, or sits at its own cap) and from the
fluid timing rule: a flow is complete ``latency + overhead_s`` after its last byte.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import simpy

from hwmodels.network.flows import Flow, FlowSchedule
from sim.fabric import Fabric, max_min_rates, simulate_flows
from workloads.errors import ConfigError


def _graph(*links: tuple[str, str, float, float]) -> nx.DiGraph:
    """Directed links (u, v, capacity bytes/s, latency s)."""
    g = nx.DiGraph()
    for u, v, c, lat in links:
        g.add_edge(u, v, capacity=c, latency=lat)
    return g


def _path(*nodes: str) -> tuple[tuple[str, str], ...]:
    return tuple(zip(nodes[:-1], nodes[1:]))


def _one_step(*flows: Flow, name: str = "", start_s: float = 0.0) -> FlowSchedule:
    return FlowSchedule((tuple(flows),), name=name, start_s=start_s)


# -- rates: max-min fairness --------------------------------------------------------------------

def _csr(routes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.r_[0, np.cumsum([len(r) for r in routes])].astype(np.int64)
    indices = np.asarray([i for r in routes for i in r], dtype=np.int64)
    return indptr, indices


def test_two_flows_on_one_link_get_half_each() -> None:
    """One link of capacity 10; two flows cross it and nothing else: 10 / 2 = 5 each."""
    rates = max_min_rates(*_csr([[0], [0]]), np.array([10.0]))
    assert rates == pytest.approx([5.0, 5.0], rel=1e-12)


def test_bottleneck_elsewhere_frees_bandwidth() -> None:
    """Link 0 (capacity 10) carries flows a and b; b also crosses link 1 (capacity 2).
    b's fair share on link 1 is 2 < 10 / 2, so b = 2 and a takes the rest of link 0: 10 - 2 = 8."""
    rates = max_min_rates(*_csr([[0], [0, 1]]), np.array([10.0, 2.0]))
    assert rates == pytest.approx([8.0, 2.0], rel=1e-12)


def test_parking_lot() -> None:
    """Two links of capacity 1 in a row; flow 0 crosses both, flow 1 only the first, flow 2 only the
    second. Each link is shared by two flows: 1/2 each (the classic 'parking lot' of max-min)."""
    rates = max_min_rates(*_csr([[0, 1], [0], [1]]), np.array([1.0, 1.0]))
    assert rates == pytest.approx([0.5, 0.5, 0.5], rel=1e-12)


def test_three_levels() -> None:
    """Link A (cap 1): flows a, b, c; link B (cap 2): c, d; link C (cap 10): d, e.
    Progressive filling: A saturates first at 1/3 (a, b, c = 1/3); B has 2 - 1/3 = 5/3 left for d
    alone (d = 5/3); C has 10 - 5/3 = 25/3 left for e."""
    rates = max_min_rates(*_csr([[0], [0], [0, 1], [1, 2], [2]]), np.array([1.0, 2.0, 10.0]))
    assert rates == pytest.approx([1 / 3, 1 / 3, 1 / 3, 5 / 3, 25 / 3], rel=1e-12)


def test_rate_cap_is_a_private_link() -> None:
    """Link of capacity 10 shared by a flow capped at 3 (an endpoint that cannot drive more) and an
    uncapped one: the capped flow gets 3, the other the remaining 7. A cap above the fair share
    changes nothing (cap 6 > 5: both 5)."""
    ip, ix = _csr([[0], [0]])
    assert max_min_rates(ip, ix, np.array([10.0]), np.array([3.0, np.inf])) == pytest.approx([3.0, 7.0])
    assert max_min_rates(ip, ix, np.array([10.0]), np.array([6.0, np.inf])) == pytest.approx([5.0, 5.0])


def test_flow_without_links() -> None:
    """A flow with no links is limited by its cap only (inf without one)."""
    ip, ix = _csr([[], [0], []])
    r = max_min_rates(ip, ix, np.array([4.0]), np.array([2.0, np.inf, np.inf]))
    assert r[0] == 2.0 and r[1] == 4.0 and np.isinf(r[2])


def _reference_max_min(routes: list[list[int]], cap: np.ndarray, fcap: np.ndarray) -> np.ndarray:
    """Textbook progressive filling, one link (or cap) at a time, in plain Python."""
    n = len(routes)
    rate = np.zeros(n)
    frozen = [False] * n
    resid = cap.astype(float).copy()
    while not all(frozen):
        best, kind, who = np.inf, "", -1
        for link in range(cap.size):
            users = [f for f in range(n) if not frozen[f] and link in routes[f]]
            if users and resid[link] / len(users) < best:
                best, kind, who = resid[link] / len(users), "link", link
        for f in range(n):
            if not frozen[f] and fcap[f] < best:
                best, kind, who = fcap[f], "cap", f
        hit = [who] if kind == "cap" else [f for f in range(n) if not frozen[f] and who in routes[f]]
        for f in hit:
            rate[f] = best
            frozen[f] = True
            for link in routes[f]:
                resid[link] -= best
    return rate


def test_matches_textbook_progressive_filling_on_random_instances() -> None:
    """The vectorised rounds equal one-link-at-a-time progressive filling on 200 random instances
    (12 links, 25 flows of 1-4 links, a third of them capped), and the result is max-min fair:
    feasible, and every flow is at its cap or crosses a saturated link where no flow is faster."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        n_l, n_f = 12, 25
        cap = rng.uniform(1.0, 10.0, n_l)
        routes = [sorted(rng.choice(n_l, size=rng.integers(1, 5), replace=False).tolist()) for _ in range(n_f)]
        fcap = np.where(rng.random(n_f) < 1 / 3, rng.uniform(0.1, 3.0, n_f), np.inf)
        got = max_min_rates(*_csr(routes), cap, fcap)
        assert got == pytest.approx(_reference_max_min(routes, cap, fcap), rel=1e-9)
        load = np.zeros(n_l)
        for f, r in enumerate(routes):
            load[r] += got[f]
        assert (load <= cap * (1 + 1e-9)).all()
        for f, r in enumerate(routes):
            at_cap = got[f] >= fcap[f] * (1 - 1e-9)
            bottleneck = any(load[link] >= cap[link] * (1 - 1e-9)
                             and all(got[g] <= got[f] * (1 + 1e-9) for g in range(n_f) if link in routes[g])
                             for link in r)
            assert at_cap or bottleneck


# -- time: events at starts and completions -------------------------------------------------------

def test_lone_flow_is_alpha_beta() -> None:
    """One flow of 1 MB over two links (10 GB/s then 5 GB/s; latencies 1 us and 2 us) with 4 us of
    overhead: 1e6 / 5e9 = 200 us at the tighter link, + 3 us latency + 4 us overhead = 207 us."""
    g = _graph(("a", "b", 10e9, 1e-6), ("b", "c", 5e9, 2e-6))
    f = Flow("a", "c", 1e6, _path("a", "b", "c"), overhead_s=4e-6)
    assert simulate_flows(g, [_one_step(f)]).time_s == pytest.approx(207e-6, rel=1e-12)


def test_bandwidth_is_reshared_when_a_flow_finishes() -> None:
    """Flows of 100 and 200 bytes on one link of 10 B/s: 5 B/s each until the small one is done at
    100 / 5 = 20 s; the large one has 200 - 100 = 100 bytes left, alone at 10 B/s: 10 s more, 30 s."""
    g = _graph(("a", "b", 10.0, 0.0))
    small = Flow("a", "b", 100.0, _path("a", "b"))
    big = Flow("a", "b", 200.0, _path("a", "b"))
    res = simulate_flows(g, [_one_step(small, name="s"), _one_step(big, name="b")])
    assert res.by_name() == pytest.approx({"s": 20.0, "b": 30.0}, rel=1e-12)
    assert res.rate_updates == 2


def test_late_arrival_takes_its_share() -> None:
    """A flow of 100 bytes alone on a 10 B/s link; a second one of 100 bytes starts at t = 4 s (the
    first has 60 left). Both at 5 B/s: the first is done 60 / 5 = 12 s later (t = 16 s), when the
    second has 40 left, alone at 10 B/s: t = 20 s, i.e. 16 s after its start."""
    g = _graph(("a", "b", 10.0, 0.0))
    f = Flow("a", "b", 100.0, _path("a", "b"))
    res = simulate_flows(g, [_one_step(f, name="first"), _one_step(f, name="late", start_s=4.0)])
    assert res.finish_s == pytest.approx((16.0, 20.0), rel=1e-12)
    assert res.duration_s == pytest.approx((16.0, 16.0), rel=1e-12)
    assert res.time_s == pytest.approx(20.0, rel=1e-12)


def test_steps_run_in_sequence() -> None:
    """Step 2 starts when every flow of step 1 is complete, latency included. Step 1: two flows of
    100 bytes on separate 10 B/s links with latencies 1 s and 3 s: done at 10 + 3 = 13 s. Step 2:
    one flow of 50 bytes on the first link: 13 + 5 + 1 = 19 s."""
    g = _graph(("a", "b", 10.0, 1.0), ("c", "d", 10.0, 3.0))
    s1 = (Flow("a", "b", 100.0, _path("a", "b")), Flow("c", "d", 100.0, _path("c", "d")))
    s2 = (Flow("a", "b", 50.0, _path("a", "b")),)
    res = simulate_flows(g, [FlowSchedule((s1, s2), name="two-steps")], record_flows=True)
    assert res.step_finish_s[0] == pytest.approx((13.0, 19.0), rel=1e-12)
    assert res.flow_finish_s[0][0] == pytest.approx([11.0, 13.0], rel=1e-12)


def test_concurrent_schedules_contend_and_separate_ones_do_not() -> None:
    """Two schedules of one 100-byte flow each: on the same 10 B/s link they take 100 / 5 = 20 s;
    on two different links 10 s each."""
    g = _graph(("a", "b", 10.0, 0.0), ("c", "d", 10.0, 0.0))
    ab = Flow("a", "b", 100.0, _path("a", "b"))
    cd = Flow("c", "d", 100.0, _path("c", "d"))
    assert simulate_flows(g, [_one_step(ab), _one_step(ab)]).time_s == pytest.approx(20.0)
    assert simulate_flows(g, [_one_step(ab), _one_step(cd)]).time_s == pytest.approx(10.0)


def test_equal_flows_finish_in_one_event() -> None:
    """64 equal flows on 8 identical disjoint paths (8 per path) finish at the same time: one rate
    computation at the start and one completion event, not 64."""
    g = _graph(*[(f"s{i}", f"d{i}", 8.0, 0.0) for i in range(8)])
    flows = [Flow(f"s{i}", f"d{i}", 10.0, _path(f"s{i}", f"d{i}")) for i in range(8) for _ in range(8)]
    res = simulate_flows(g, [_one_step(*flows)])
    assert res.time_s == pytest.approx(10.0, rel=1e-12)   # 8 flows per 8 B/s link: 1 B/s each
    assert res.rate_updates == 1


def test_link_bytes_and_utilisation() -> None:
    """A 100-byte flow a->b->c and a 100-byte flow b->c, links of 10 B/s: b->c carries 200 bytes in
    the 20 s the two take together (utilisation 1.0), a->b 100 bytes (0.5)."""
    g = _graph(("a", "b", 10.0, 0.0), ("b", "c", 10.0, 0.0))
    res = simulate_flows(g, [_one_step(Flow("a", "c", 100.0, _path("a", "b", "c")),
                                       Flow("b", "c", 100.0, _path("b", "c")))])
    assert res.time_s == pytest.approx(20.0)
    assert res.link_bytes == {("a", "b"): 100.0, ("b", "c"): 200.0}
    assert res.link_utilisation[("b", "c")] == pytest.approx(1.0)
    assert res.link_utilisation[("a", "b")] == pytest.approx(0.5)


def test_zero_byte_flow_and_empty_step() -> None:
    """A zero-byte flow costs its latency and overhead only (2 + 1 s); an empty step costs nothing."""
    g = _graph(("a", "b", 10.0, 2.0))
    f = Flow("a", "b", 0.0, _path("a", "b"), overhead_s=1.0)
    assert simulate_flows(g, [FlowSchedule(((), (f,), ()))]).time_s == pytest.approx(3.0)


def test_fabric_in_a_nanosecond_environment() -> None:
    """Inside an integer-nanosecond simulation (tick_s = 1e-9) a process yields fabric.transfer and
    resumes at the completion rounded up to the next ns: 1 MB at 3 GB/s = 333,333.33 ns -> 333,334."""
    env = simpy.Environment()
    g = _graph(("a", "b", 3e9, 0.0))
    fabric = Fabric(env, g, tick_s=1e-9)
    seen: list[int] = []

    def proc():
        yield env.timeout(1000)
        yield fabric.transfer([Flow("a", "b", 1e6, _path("a", "b"))])
        seen.append(env.now)

    env.process(proc())
    env.run()
    assert seen == [1000 + 333_334]


# -- bad input --------------------------------------------------------------------------------------

def test_zero_capacity_link_is_a_config_error_naming_it() -> None:
    g = _graph(("a", "b", 0.0, 0.0))
    with pytest.raises(ConfigError, match="a->b"):
        simulate_flows(g, [])


def test_route_through_a_missing_link_names_it() -> None:
    g = _graph(("a", "b", 1.0, 0.0))
    with pytest.raises(ConfigError, match="b->c"):
        simulate_flows(g, [_one_step(Flow("a", "c", 1.0, _path("a", "b", "c")))])
