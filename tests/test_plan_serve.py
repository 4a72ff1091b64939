"""The serving planner (planners/serve.py, planners/capacity.py) and ``xpusim plan serve``.

The ILP is held to an exhaustive grid over machine counts with the same capacities, constraints and
objective (its answers must be equal, not close); the verified plan is re-simulated independently.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from hwmodels.machines import load_machine
from planners.capacity import Capacity, Mix, capacities, erlang_c, prefill_pool_min, ttft_miss_fraction
from planners.serve import (
    Candidate,
    Layout,
    Objective,
    _ilp,
    burst_minimums,
    grid,
    plan_serve,
    planning_mix,
    simulate_candidate,
    solve,
    solve_max_rate,
)
from sim.split import Pool, SplitConfig, simulate_split
from sim.split_metrics import SPLITWISE_SLO, summarize_split
from workloads.catalog import load_model
from workloads.errors import Infeasible
from workloads.traces import load_workload
from xpusim.cli import cli

MODEL = load_model("llama-2-70b")
MACHINES = [load_machine(m) for m in ("dgx-a100", "dgx-h100", "dgx-h100-pcap")]


@pytest.fixture(scope="module")
def mix() -> Mix:
    return Mix.of(load_workload("azure-conv", rate=20, duration_s=30, seed=0))


@pytest.fixture(scope="module")
def caps(mix: Mix) -> list[Capacity]:
    return capacities(MODEL, MACHINES, (2, 4, 8), mix, tbt_slowdown=SPLITWISE_SLO["tbt"][0])


def test_capacities_are_physical(caps: list[Capacity]) -> None:
    """Llama-2-70B fits TP2 and up on 80 GB GPUs (140 GB of weights); H100 prefills faster than A100 at
    every TP (compute-bound), the 70 % cap slows prefill by at most 1 / 0.7^(1/3) = 1.126x
    (hwmodels/machines.py) and decode by < 2 % (memory-bound), and the decode batch never exceeds the KV."""
    by = {c.key: c for c in caps}
    assert {c.tp for c in caps} == {2, 4, 8}
    for tp in (2, 4, 8):
        a, h, hc = by[f"dgx-a100/tp{tp}"], by[f"dgx-h100/tp{tp}"], by[f"dgx-h100-pcap/tp{tp}"]
        assert h.prefill_tokens_s > a.prefill_tokens_s
        assert 1.0 <= h.prefill_tokens_s / hc.prefill_tokens_s <= 0.7 ** (-1 / 3) + 1e-9
        assert hc.decode_tokens_s / h.decode_tokens_s > 0.98
    for c in caps:
        assert c.decode_batch >= 1


@pytest.mark.parametrize("objective", list(Objective))
@pytest.mark.parametrize("rate,budget", [(5.0, None), (20.0, None), (20.0, 300.0)])
def test_ilp_equals_exhaustive_grid(caps: list[Capacity], mix: Mix, objective: Objective, rate: float,
                                    budget: float | None) -> None:
    """The k best distinct type choices: the same objective values, best first, as every machine count
    of every type choice enumerated (budget, when given, in the objective's unit: $/h, or W for power)."""
    if objective is Objective.POWER and budget is not None:
        budget *= 200.0        # 300 $/h -> 60 kW: a cap that binds for some type choices at 20 req/s
    kw = dict(objective=objective, k=6, max_count=24, budget=budget)
    got = solve(caps, mix, rate, **kw)   # type: ignore[arg-type]
    ref = grid(caps, mix, rate, **kw)    # type: ignore[arg-type]
    assert [c.objective for c in got] == pytest.approx([c.objective for c in ref], rel=1e-12)
    assert len({c.types for c in got}) == len(got)             # distinct type choices
    dp, dd = 1.2 * rate * mix.mean_prompt, 1.2 * rate * mix.mean_decode
    for c in got:                                              # every candidate meets the demand it claims
        roles = {r: (cp, n) for r, cp, n in c.pools}
        if c.layout is Layout.SPLIT:
            assert roles["prefill"][0].prefill_tokens_s * roles["prefill"][1] >= dp
            assert roles["decode"][0].decode_tokens_s * roles["decode"][1] >= dd
        else:
            assert roles["colocated"][0].colocated_rps * roles["colocated"][1] >= 1.2 * rate


def test_erlang_c_textbook_values() -> None:
    """M/M/c probability of waiting: c = 1 gives rho; c = 2 at offered load 1 gives (1/2 * 2) / (1 + 1 + 1) = 1/3
    (Erlang C formula by hand); saturated gives 1."""
    assert erlang_c(1, 0.7) == pytest.approx(0.7, rel=1e-12)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)
    assert erlang_c(4, 4.0) == 1.0


def test_burst_bound_is_monotone_and_minimal(caps: list[Capacity], mix: Mix) -> None:
    """The G/G/c TTFT bound: more machines miss less, burstier arrivals (larger cv) miss more, and
    prefill_pool_min is the fewest machines meeting all three percentiles (one fewer does not)."""
    ttft = SPLITWISE_SLO["ttft"]
    for cp in caps[:3]:
        n = prefill_pool_min(cp, mix, 20.0, 1.0, ttft, 64)
        assert 1 <= n <= 64
        miss = [ttft_miss_fraction(cp, mix, 20.0, n, 1.0, k) for k in ttft]
        assert all(f <= a for f, a in zip(miss, (0.5, 0.1, 0.01)))
        if n > 1:
            assert any(ttft_miss_fraction(cp, mix, 20.0, n - 1, 1.0, k) > a for k, a in zip(ttft, (0.5, 0.1, 0.01)))
        assert ttft_miss_fraction(cp, mix, 20.0, n + 1, 1.0, 6.0) <= miss[2]
        assert ttft_miss_fraction(cp, mix, 20.0, n, 2.0, 6.0) >= miss[2]
        assert prefill_pool_min(cp, mix, 20.0, 2.0, ttft, 64) >= n


@pytest.mark.parametrize("objective", list(Objective))
def test_ilp_with_burst_minimums_equals_grid(caps: list[Capacity], mix: Mix, objective: Objective) -> None:
    """With the burst allowance (prefill pools at least burst_minimums machines, here at cv 2: bursty) the
    ILP's k best still equal the exhaustive grid's under the same lower bounds."""
    pmin = burst_minimums(caps, mix, 20.0, 2.0, SPLITWISE_SLO, 24)
    kw = dict(objective=objective, k=6, max_count=24, prefill_min=pmin)
    got = solve(caps, mix, 20.0, **kw)   # type: ignore[arg-type]
    ref = grid(caps, mix, 20.0, **kw)    # type: ignore[arg-type]
    assert [c.objective for c in got] == pytest.approx([c.objective for c in ref], rel=1e-12)
    for c in got:
        for role, cp, cnt in c.pools:
            if role == "prefill":
                assert cnt >= pmin[caps.index(cp)]


@pytest.mark.parametrize("rate,budget", [(20.0, None), (None, 300.0)])
def test_cbc_fallback_equals_highs(caps: list[Capacity], mix: Mix, rate: float | None, budget: float | None) -> None:
    """The pulp + CBC path (used when highspy is missing) gives the HiGHS path's k best, rate and max-rate modes."""
    args = (caps, mix, rate, Objective.COST, 1.2, 4, 24, budget, list(Layout), None)
    hi, cbc = _ilp(*args, backend="highs"), _ilp(*args, backend="cbc")
    assert [c.objective for c in hi] == pytest.approx([c.objective for c in cbc], rel=1e-9)
    assert [c.rate for c in hi] == pytest.approx([c.rate for c in cbc], rel=1e-6)


def test_max_rate_equals_grid(caps: list[Capacity], mix: Mix) -> None:
    """--max-rate: the ILP's best rate within $300/h equals the best over every count pair within it."""
    budget, h, u = 300.0, 1.2, 24
    best = 0.0
    for p in caps:
        for d in caps:
            for nx in range(1, u + 1):
                for ny in range(1, u + 1):
                    if nx * p.objective("cost") + ny * d.objective("cost") <= budget:
                        best = max(best, min(nx * p.prefill_tokens_s / mix.mean_prompt,
                                             ny * d.decode_tokens_s / mix.mean_decode) / h)
        nz = min(u, math.floor(budget / p.objective("cost")))
        best = max(best, nz * p.colocated_rps / h)
    got = solve_max_rate(caps, mix, budget, k=2, max_count=u, headroom=h)
    assert got[0].rate == pytest.approx(best, rel=1e-6)
    assert got[0].cost_per_hour <= budget + 1e-9
    assert got[1].rate <= got[0].rate + 1e-9


def test_infeasible_demands_raise(caps: list[Capacity], mix: Mix) -> None:
    with pytest.raises(Infeasible, match=r"at most 4 machines per pool .* serves 1000 req/s"):
        solve(caps, mix, 1000.0, max_count=4)
    with pytest.raises(Infeasible, match=r"within a budget of 10"):
        solve_max_rate(caps, mix, 10.0)          # cheaper than one machine
    # Llama-2-70B at TP1: 140 GB of weights on one 80 GB GPU -> no option left
    assert capacities(MODEL, MACHINES, (1,), mix) == []
    with pytest.raises(Infeasible, match="no machine x TP option"):
        solve([], mix, 1.0)


def test_verified_plan_meets_slos_in_simulation() -> None:
    """A small plan (2 req/s for 12 s of arrivals) verified by simulation; the chosen cluster re-simulated
    here, independently of the planner, meets the Splitwise SLOs."""
    def workload(r: float):  # type: ignore[no-untyped-def]
        return load_workload("azure-conv", rate=r, duration_s=12, seed=3)

    plan = plan_serve(MODEL, workload, MACHINES[:2], rate=2.0, tps=(4, 8), slo=SPLITWISE_SLO, k=2, rounds=2,
                      bisect_steps=1, layouts=(Layout.SPLIT,))
    assert plan.chosen is not None and plan.chosen.met
    cd = plan.chosen.candidate
    roles = {r: (c, n) for r, c, n in cd.pools}
    (pc, pn), (dc, dn) = roles["prefill"], roles["decode"]
    res = simulate_split(MODEL, workload(2.0), SplitConfig(Pool(pc.machine, pn, pc.tp), Pool(dc.machine, dn, dc.tp)))
    assert summarize_split(res, SPLITWISE_SLO)["slo"]["met"]
    assert all(v.candidate.objective >= cd.objective or not v.met for v in plan.runner_ups)


def test_max_rate_brackets_the_limit_by_simulation() -> None:
    """``--max-rate`` on a small budget (two DGX-A100, $35.36/h: one prefill and one decode machine at TP8) returns
    a positive rate at which the simulated cluster meets the Splitwise SLOs, and a rate at most 12.5 % higher
    (a factor-2 bracket after 3 bisections) at which it does not; both re-simulated here independently of the
    planner. (The old search took the mix from 30 requests and looked only in [rate / 4, 2 rate]: 0 req/s on
    azure-conv.)"""
    def workload(r: float):  # type: ignore[no-untyped-def]
        return load_workload("azure-conv", rate=r, duration_s=10, seed=1)

    a100 = load_machine("dgx-a100")
    assert a100.cost_per_hour is not None
    plan = plan_serve(MODEL, workload, [a100], budget=2 * a100.cost_per_hour, tps=(8,), slo=SPLITWISE_SLO, k=1,
                      bisect_steps=3, layouts=(Layout.SPLIT,))
    v = plan.chosen
    assert v is not None and v.sustained_rps is not None and v.failed_rps is not None
    assert v.sustained_rps > 0 and 1.0 < v.failed_rps / v.sustained_rps <= 1.125 + 1e-9
    assert simulate_candidate(MODEL, v.candidate, workload(v.sustained_rps), SPLITWISE_SLO)["slo"]["met"]
    assert not simulate_candidate(MODEL, v.candidate, workload(v.failed_rps), SPLITWISE_SLO)["slo"]["met"]


def test_planning_mix_takes_a_large_sample() -> None:
    """At 1 req/s, 30 s of azure-conv is ~30 requests; the planning mix raises the sampling rate until it holds
    at least 2,000 (the tail of the length distribution sets the prefill capacity)."""
    seen: list[int] = []

    def workload(r: float):  # type: ignore[no-untyped-def]
        reqs = load_workload("azure-conv", rate=r, duration_s=30, seed=0)
        seen.append(len(reqs))
        return reqs

    mix = planning_mix(workload, None)
    assert seen[0] < 100 and seen[-1] >= 2000
    assert sum(mix.weights) == seen[-1]


def test_cli_errors_exit_2() -> None:
    r = CliRunner()
    base = ["plan", "serve", "--model", "llama-2-70b", "--trace", "azure-conv"]
    out = r.invoke(cli, [*base, "--rate", "2", "--machines", "dgx-a1000"])
    assert out.exit_code == 2 and "dgx-a1000" in out.output
    out = r.invoke(cli, [*base, "--rate", "2", "--max-rate", "--budget", "100", "--machines", "dgx-a100"])
    assert out.exit_code == 2 and "--max-rate" in out.output
    out = r.invoke(cli, [*base, "--rate", "1e6", "--duration", "1", "--max-count", "2", "--machines", "dgx-a100"])
    assert out.exit_code == 2 and "serves 1e+06 req/s" in out.output
    out = r.invoke(cli, [*base, "--rate", "2", "--compare", "iso-cost", "--budget", "100", "--machines", "dgx-a100"])
    assert out.exit_code == 2 and "--compare" in out.output


def test_cli_json() -> None:
    out = CliRunner().invoke(cli, ["plan", "serve", "--model", "llama-2-70b", "--trace", "azure-conv", "--rate", "1",
                                   "--duration", "8", "--machines", "dgx-a100", "--tp", "8", "--slo", "none",
                                   "--k", "2", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["chosen"]["candidate"]["pools"] and d["chosen"]["metrics"]["requests"] > 0
    assert len(d["runner_ups"]) == 1 and d["capacities"][0]["option"] == "dgx-a100/tp8"


@pytest.mark.parametrize("layout", ["split", "colocated"])
def test_rerun_command_reproduces_the_plan(layout: str) -> None:
    """``plan serve`` prints the ``simulate split`` command of its chosen plan (per-pool TP included: the planner
    may pick prefill TP 4 and decode TP 8); running it gives the metrics the plan was verified with, exactly
    (same workload, pools, engine limits, KV transfer and SLO)."""
    import shlex

    out = CliRunner().invoke(cli, ["plan", "serve", "--model", "llama-2-7b", "--trace", "azure-conv", "--rate", "3",
                                   "--duration", "6", "--machines", "dgx-a100,dgx-h100", "--tp", "4,8",
                                   "--layouts", layout, "--k", "1", "--rounds", "1", "--bisect", "1", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    cmd = shlex.split(d["rerun_command"])
    assert cmd[:3] == ["xpusim", "simulate", "split"]
    re = CliRunner().invoke(cli, [*cmd[1:], "--json"])
    assert re.exit_code == 0, re.output
    assert json.loads(re.output)[layout] == d["chosen"]["metrics"]


def test_reference_slo_is_one_limit_for_every_option(mix: Mix) -> None:
    """With a reference machine the TBT slowdown becomes one limit in seconds (1.25 x the reference's single-sequence
    step at the mix's context) held by every option: an option whose own single sequence is slower gets decode
    capacity 0, the others the largest batch within the limit. DGX-A100 TP2's single step is slower than TP8's
    (a quarter of the GPUs read the weights), so against an A100 TP8 reference TP2 cannot decode within 1.25x."""
    from planners.capacity import DEFAULT_SERVE, decode_context, single_decode_step_s
    from planners.capacity import step_model as cstep
    from planners.serve import slo_limits
    from sim.split_metrics import parse_slo

    slo = parse_slo("splitwise", "dgx-a100")
    own_k, limit, ref_times = slo_limits(MODEL, mix, slo, DEFAULT_SERVE, None)
    a100 = load_machine("dgx-a100")
    ovh = DEFAULT_SERVE.iteration_overhead_s
    assert own_k is None and limit == pytest.approx(1.25 * single_decode_step_s(cstep(MODEL, a100, 8, DEFAULT_SERVE,
                                                                                      None), mix, ovh))
    assert ref_times is not None and len(ref_times) == len(mix.prompts)
    caps = capacities(MODEL, MACHINES, (2, 4, 8), mix, tbt_limit_s=limit)
    ctx = decode_context(mix)
    for c in caps:
        step = cstep(MODEL, c.machine, c.tp, DEFAULT_SERVE, None)
        if c.decode_batch == 0:
            assert c.decode_tokens_s == 0 and single_decode_step_s(step, mix, ovh) > limit
        else:
            assert float(step.decode_times([ctx] * c.decode_batch, 1)[0]) + ovh <= limit
    assert {c.key: c.decode_batch for c in caps}["dgx-a100/tp2"] == 0
    pmin = burst_minimums(caps, mix, 20.0, 1.0, slo, 24, ref_times=ref_times)
    got = solve(caps, mix, 20.0, k=4, max_count=24, prefill_min=pmin)
    ref = grid(caps, mix, 20.0, k=4, max_count=24, prefill_min=pmin)
    assert [c.objective for c in got] == pytest.approx([c.objective for c in ref], rel=1e-12)


def test_cli_text_output_is_readable_when_piped() -> None:
    """Not a terminal (CliRunner, a pipe): one block per candidate instead of a rich table, so nothing is cut at 80
    columns (rich marks a cut with an ellipsis): the full cluster label, the SLO verdict and the three slowdown
    percentiles of each metric, every line but the label and the re-run command under 80 characters."""
    out = CliRunner().invoke(cli, ["plan", "serve", "--model", "llama-2-70b", "--trace", "azure-conv", "--rate", "1",
                                   "--duration", "8", "--machines", "dgx-a100", "--tp", "4,8", "--k", "2",
                                   "--rounds", "1", "--bisect", "1", "--layouts", "split"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "…" not in out.output
    assert any(ln.startswith("chosen: prefill dgx-a100:") and "decode dgx-a100:" in ln for ln in lines)
    assert sum(ln.startswith("  slowdown TTFT ") and " TBT " in ln and " E2E " in ln for ln in lines) == 2
    assert all(len(ln) < 80 for ln in lines if not ln.startswith(("chosen:", "runner-up:", "xpusim simulate")))


@pytest.mark.parametrize("mode,budget,unit", [("iso-cost", 80.0, "cost_per_hour_usd"), ("iso-power", 27.0, "power_kw")])
def test_compare_iso_cost_and_power(mode: str, budget: float, unit: str) -> None:
    """``--compare``: each design family of DGX-A100 / DGX-H100 at TP8 (2 colocated, 4 split) gets a cluster within
    the budget ($80/h, or 27 kW) and the highest rate the simulation sustains within the Splitwise SLOs; the ratio is
    that rate over the colocated DGX-H100 family's. The baseline's bracket is re-simulated here: its sustained rate
    meets the SLOs and its failing rate (at most 1.5x above, one bisection of a factor-2 bracket) misses them."""
    from sim.split_metrics import parse_slo

    args = ["plan", "serve", "--model", "llama-2-70b", "--trace", "azure-conv", "--duration", "6", "--machines",
            "dgx-a100,dgx-h100", "--tp", "8", "--compare", mode, "--budget", str(budget), "--bisect", "1", "--json"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["mode"] == mode and d["baseline"] == "colocated dgx-h100"
    fams = {x["family"]: x for x in d["designs"]}
    assert set(fams) == {"colocated dgx-a100", "colocated dgx-h100", "split dgx-a100 -> dgx-a100",
                         "split dgx-a100 -> dgx-h100", "split dgx-h100 -> dgx-a100", "split dgx-h100 -> dgx-h100"}
    base = fams["colocated dgx-h100"]
    assert base["ratio_to_baseline"] == 1.0 and base["sustained_rps"] > 0
    for x in fams.values():
        if x["cluster"] is None:
            continue
        assert x["cluster"][unit] <= budget + 1e-9
        assert x["ratio_to_baseline"] == pytest.approx(x["sustained_rps"] / base["sustained_rps"], rel=1e-12)
        roles = [p["machine"] for p in x["cluster"]["pools"]]
        assert " -> ".join(roles) == x["family"].split(" ", 1)[1]
    h100 = load_machine("dgx-h100")
    cand = Candidate(Layout.COLOCATED, (("colocated", capacities(MODEL, [h100], (8,), Mix.of(
        load_workload("azure-conv", rate=20, duration_s=6, seed=0)))[0], base["cluster"]["pools"][0]["count"]),),
        0.0, 1.0)
    slo = parse_slo("splitwise")

    def wl(r: float):  # type: ignore[no-untyped-def]
        return load_workload("azure-conv", rate=r, duration_s=6, seed=0)
    assert simulate_candidate(MODEL, cand, wl(base["sustained_rps"]), slo)["slo"]["met"]
    assert not simulate_candidate(MODEL, cand, wl(base["failed_rps"]), slo)["slo"]["met"]
    assert base["failed_rps"] / base["sustained_rps"] <= 1.5 + 1e-9


def test_ttft_floor_drops_options_that_miss_ttft_alone(mix: Mix) -> None:
    """Against an A100 TP8 reference the p50 TTFT limit is 2x the prompt alone on it; a DGX-A100 at TP2 prefills
    every prompt group alone more than 2x slower (a quarter of the GPUs), so no queue-free pool of it meets the SLO:
    its prefill and colocated capacities drop to 0, and the options that meet it alone keep theirs unchanged."""
    from planners.capacity import DEFAULT_SERVE
    from planners.serve import slo_limits, ttft_floor
    from sim.split_metrics import parse_slo

    slo = parse_slo("splitwise", "dgx-a100")
    _, limit, ref_times = slo_limits(MODEL, mix, slo, DEFAULT_SERVE, None)
    caps = capacities(MODEL, MACHINES, (2, 4, 8), mix, tbt_limit_s=limit)
    floored = {c.key: c for c in ttft_floor(caps, mix, slo, ref_times)}
    a2 = floored["dgx-a100/tp2"]
    assert ref_times is not None
    slow = sum(w for t, r, w in zip(a2.prefill_times, ref_times, mix.weights) if t > 2 * r)
    assert slow / sum(mix.weights) > 0.5
    assert a2.prefill_tokens_s == 0 and a2.colocated_rps == 0
    assert floored["dgx-a100/tp8"] == {c.key: c for c in caps}["dgx-a100/tp8"]
