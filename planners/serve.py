"""Serving planner: the cheapest (or lowest-power) cluster that serves a request rate within the SLOs.

Layouts: phase-split (a prefill pool of one machine type x TP and a decode pool of one, as
:func:`sim.split.simulate_split` runs them) or colocated (replicas of one machine type x TP). Capacities per
machine come from the hardware model (:mod:`planners.capacity`). The ILP (pulp; HiGHS through highspy when
available, else CBC), for capacity options i (machine x TP) with per-machine prefill tokens/s ``P_i``,
decode tokens/s ``D_i``, colocated requests/s ``C_i`` and cost (or power) ``w_i``, demand at rate ``r``:
prompt tokens/s ``r p``, decode tokens/s ``r d`` (``p``, ``d`` the trace's means), headroom ``h`` >= 1::

    min  sum_i w_i (x_i + y_i + z_i)
    s.t. sum_i P_i x_i >= h r p s          x_i <= U a_i,  x_i >= a_i,  sum_i a_i = s   (prefill pool: one type)
         sum_i D_i y_i >= h r d s          y_i <= U b_i,  y_i >= b_i,  sum_i b_i = s   (decode pool: one type)
         sum_i C_i z_i >= h r (1 - s)      z_i <= U c_i,  z_i >= c_i,  sum_i c_i = 1 - s (colocated: one type)
         [sum_i w_i (x_i + y_i + z_i) <= budget]     x, y, z integer in 0..U; a, b, c, s binary

K best distinct candidates: after each solve a no-good cut on the binaries (the chosen types) excludes that
combination of types, so each candidate is the optimum of a different type choice. ``--max-rate``: ``r`` is
a variable, maximised under the budget (big-M on ``s``). Each candidate is then simulated at the rate
(:func:`verify`); one that misses the SLOs is bisected on load to the highest rate it sustains, and when no
candidate passes, the headroom is raised by the worst shortfall (target / sustained) and the ILP solved
again (``rounds``). :func:`grid` is the exhaustive reference over machine counts (same constraints, same
objective) the tests hold the ILP to.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hwmodels.engine import EngineProfile
from hwmodels.machines import Machine
from planners.capacity import DEFAULT_SERVE, Capacity, Mix, capacities, iteration_overhead, step_model
from sim.config import RouterKind, ServeConfig
from sim.serving import simulate_serving
from sim.split import Pool, SplitConfig, TransferMode, simulate_split
from sim.split_metrics import summarize_colocated, summarize_split
from workloads.errors import ConfigError, Infeasible
from workloads.model_spec import ModelSpec
from workloads.requests import Request

log = logging.getLogger(__name__)

Slo = dict[str, tuple[float, float, float]]
Workload = Callable[[float], Sequence[Request]]     # rate (req/s) -> requests


class Objective(enum.Enum):
    COST = "cost"
    POWER = "power"


class Layout(enum.Enum):
    SPLIT = "split"
    COLOCATED = "colocated"


@dataclass(frozen=True)
class Candidate:
    """One cluster: split (prefill and decode pools) or colocated. Counts are machines."""

    layout: Layout
    pools: tuple[tuple[str, Capacity, int], ...]     # (role, capacity option, count)
    objective: float                                 # $/hour or watts
    rate: float                                      # req/s it was sized for

    @property
    def cost_per_hour(self) -> float | None:
        total = 0.0
        for _, c, n in self.pools:
            if c.machine.cost_per_hour is None:
                return None
            total += c.machine.cost_per_hour * n
        return total

    @property
    def power_w(self) -> float:
        return sum(c.machine.power_w * n for _, c, n in self.pools)

    @property
    def types(self) -> tuple[tuple[str, str], ...]:
        return tuple((role, c.key) for role, c, _ in self.pools)

    def label(self) -> str:
        return " + ".join(f"{role} {c.machine.id}:{n} tp{c.tp}" for role, c, n in self.pools)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout.value, "label": self.label(), "rate_rps": self.rate,
                "objective": self.objective, "cost_per_hour_usd": self.cost_per_hour, "power_kw": self.power_w / 1e3,
                "pools": [{"role": role, "machine": c.machine.id, "tp": c.tp, "count": n,
                           "instances": n * c.instances, "decode_batch": c.decode_batch,
                           "prefill_tokens_s_per_machine": c.prefill_tokens_s,
                           "decode_tokens_s_per_machine": c.decode_tokens_s,
                           "colocated_rps_per_machine": c.colocated_rps} for role, c, n in self.pools]}


# ---- the ILP -------------------------------------------------------------------------------------
@functools.cache
def _silence_highs_banner() -> None:
    """highspy writes its banner to the C-level stdout when the first ``Highs`` object of the process is made,
    whatever ``output_flag`` says, which would corrupt JSON output: make that first object with file
    descriptor 1 pointed at /dev/null (once; later objects print nothing)."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@functools.cache
def _have_highs() -> bool:
    """Whether pulp finds HiGHS; asked once per process (``listSolvers`` probes every solver pulp knows, on the
    PATH and by import: ~15 ms, a quarter of a K = 3 plan's solver time, spent again on every call before)."""
    import pulp

    return "HiGHS" in pulp.listSolvers(onlyAvailable=True)


def _solver(msg: bool = False) -> Any:
    import pulp

    if _have_highs():
        _silence_highs_banner()
        return pulp.HiGHS(msg=msg)
    return pulp.PULP_CBC_CMD(msg=msg)      # pragma: no cover - highspy is a dependency; CBC ships with pulp


def _demand(mix: Mix, rate: float, headroom: float) -> tuple[float, float, float]:
    return headroom * rate * mix.mean_prompt, headroom * rate * mix.mean_decode, headroom * rate


def _check(caps: Sequence[Capacity], rate: float | None, headroom: float, k: int, max_count: int) -> None:
    if not caps:
        raise Infeasible("no machine x TP option fits the model and the workload's longest request")
    if rate is not None and (not math.isfinite(rate) or rate <= 0):
        raise ConfigError(f"rate must be a finite number > 0, got {rate!r}", field="rate", value=rate)
    if headroom < 1.0:
        raise ConfigError(f"headroom must be >= 1, got {headroom}", field="headroom", value=headroom)
    if k < 1 or max_count < 1:
        raise ConfigError(f"k and max_count must be >= 1, got {k} and {max_count}", field="k", value=k)


def solve(caps: Sequence[Capacity], mix: Mix, rate: float, *, objective: Objective = Objective.COST,
          headroom: float = 1.2, k: int = 3, max_count: int = 64, budget: float | None = None,
          layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED)) -> list[Candidate]:
    """The ``k`` best distinct candidates (module docstring), best first. ``Infeasible`` when none exists."""
    return _ilp(caps, mix, rate, objective, headroom, k, max_count, budget, layouts)


def solve_max_rate(caps: Sequence[Capacity], mix: Mix, budget: float, *, objective: Objective = Objective.COST,
                   headroom: float = 1.2, k: int = 3, max_count: int = 64,
                   layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED)) -> list[Candidate]:
    """The ``k`` best distinct candidates by the rate they sustain within ``budget`` ($/hour or watts)."""
    if not math.isfinite(budget) or budget <= 0:
        raise ConfigError(f"budget must be a finite number > 0, got {budget!r}", field="budget", value=budget)
    return _ilp(caps, mix, None, objective, headroom, k, max_count, budget, layouts)


def _ilp(caps: Sequence[Capacity], mix: Mix, rate: float | None, objective: Objective, headroom: float, k: int,
         max_count: int, budget: float | None, layouts: Sequence[Layout]) -> list[Candidate]:
    import pulp

    _check(caps, rate, headroom, k, max_count)
    n, u = len(caps), max_count
    w = [c.objective(objective.value) for c in caps]
    prob = pulp.LpProblem("serve", pulp.LpMaximize if rate is None else pulp.LpMinimize)
    x = [prob.add_variable(f"x{i}", 0, u, cat="Integer") for i in range(n)]
    y = [prob.add_variable(f"y{i}", 0, u, cat="Integer") for i in range(n)]
    z = [prob.add_variable(f"z{i}", 0, u, cat="Integer") for i in range(n)]
    a = [prob.add_variable(f"a{i}", cat="Binary") for i in range(n)]
    b = [prob.add_variable(f"b{i}", cat="Binary") for i in range(n)]
    c = [prob.add_variable(f"c{i}", cat="Binary") for i in range(n)]
    s = prob.add_variable("split", cat="Binary")
    spend = pulp.lpSum(w[i] * (x[i] + y[i] + z[i]) for i in range(n))
    if Layout.SPLIT not in layouts:
        prob += s == 0
    if Layout.COLOCATED not in layouts:
        prob += s == 1
    # per-option count bounds, as tight as the answer allows (a weak big-M makes the branch and bound
    # slow): minimising, a pool never needs more than ceil(demand / capacity) machines of its one type;
    # maximising the rate, never more than the budget buys
    if rate is not None:
        dp, dd, dr = _demand(mix, rate, headroom)
        ub = [[_ceil(dp, cp.prefill_tokens_s, u), _ceil(dd, cp.decode_tokens_s, u), _ceil(dr, cp.colocated_rps, u)]
              for cp in caps]
    else:
        assert budget is not None
        ub = [[min(u, math.floor(budget / w[i] + 1e-9))] * 3 for i in range(n)]
    for r, (v, sel) in enumerate(((x, a), (y, b), (z, c))):
        for i in range(n):
            prob += v[i] <= ub[i][r] * sel[i]
            prob += v[i] >= sel[i]
    prob += pulp.lpSum(a) == s
    prob += pulp.lpSum(b) == s
    prob += pulp.lpSum(c) == 1 - s
    pre = pulp.lpSum(caps[i].prefill_tokens_s * x[i] for i in range(n))
    dec = pulp.lpSum(caps[i].decode_tokens_s * y[i] for i in range(n))
    col = pulp.lpSum(caps[i].colocated_rps * z[i] for i in range(n))
    if rate is not None:
        prob += pre >= dp * s
        prob += dec >= dd * s
        prob += col >= dr * (1 - s)
        prob += spend
        if budget is not None:
            prob += spend <= budget
    else:
        assert budget is not None
        r = prob.add_variable("rate", 0)
        # big-M: no cluster within the budget serves more than this
        big = budget / min(w) * max(max(cp.prefill_tokens_s / max(mix.mean_prompt, 1e-9),
                                        cp.decode_tokens_s / max(mix.mean_decode, 1e-9), cp.colocated_rps)
                                    for cp in caps) / headroom + 1.0
        prob += r <= big
        prob += pre >= headroom * mix.mean_prompt * (r - big * (1 - s))
        prob += dec >= headroom * mix.mean_decode * (r - big * (1 - s))
        prob += col >= headroom * (r - big * s)
        prob += spend <= budget
        prob += r - 1e-6 * spend / budget     # the most rate; among equal rates the cheaper
    out: list[Candidate] = []
    solver = _solver()
    binaries = a + b + c
    for _ in range(k):
        status = prob.solve(solver)
        if pulp.LpStatus[status] != "Optimal":
            break
        on = {v.name for v in binaries if (v.value() or 0) > 0.5}
        pools: list[tuple[str, Capacity, int]] = []
        for role, vs in (("prefill", x), ("decode", y), ("colocated", z)):
            for i, v in enumerate(vs):
                cnt = int(round(v.value() or 0))
                if cnt > 0:
                    pools.append((role, caps[i], cnt))
        split = (s.value() or 0) > 0.5
        cand_rate = rate if rate is not None else _sustained(caps, mix, pools, headroom)
        out.append(Candidate(Layout.SPLIT if split else Layout.COLOCATED, tuple(pools),
                             sum(cp.objective(objective.value) * cnt for _, cp, cnt in pools), cand_rate))
        prob += pulp.lpSum(1 - v if v.name in on else v for v in binaries) >= 1
    if not out:
        what = (f"{rate:g} req/s" if rate is not None else "any load") + \
            (f" within a budget of {budget:g}" if budget is not None else "")
        raise Infeasible(f"no cluster of at most {max_count} machines per pool of "
                         f"{', '.join(sorted({cp.machine.id for cp in caps}))} serves {what} "
                         f"(headroom {headroom:g}; mean prompt {mix.mean_prompt:.0f}, "
                         f"decode {mix.mean_decode:.0f} tokens)")
    return out


def _ceil(demand: float, per_machine: float, cap: int) -> int:
    """Machines of ``per_machine`` capacity that ``demand`` needs, at most ``cap`` (>= 1)."""
    return max(1, min(cap, math.ceil(demand / per_machine))) if per_machine > 0 else cap


def _sustained(caps: Sequence[Capacity], mix: Mix, pools: Sequence[tuple[str, Capacity, int]],
               headroom: float) -> float:
    """The rate a cluster's capacities carry at ``headroom`` (the planning model, not simulation)."""
    tot = {"prefill": 0.0, "decode": 0.0, "colocated": 0.0}
    for role, cp, cnt in pools:
        tot[role] += cnt * (cp.prefill_tokens_s if role == "prefill" else cp.decode_tokens_s if role == "decode"
                            else cp.colocated_rps)
    if tot["colocated"]:
        return tot["colocated"] / headroom
    return min(tot["prefill"] / max(mix.mean_prompt, 1e-9), tot["decode"] / max(mix.mean_decode, 1e-9)) / headroom


# ---- the exhaustive reference --------------------------------------------------------------------
def grid(caps: Sequence[Capacity], mix: Mix, rate: float, *, objective: Objective = Objective.COST,
         headroom: float = 1.2, k: int = 3, max_count: int = 64, budget: float | None = None,
         layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED)) -> list[Candidate]:
    """Every machine count of every type choice (prefill x decode counts 1..max_count for each pair of
    options, colocated counts 1..max_count per option), the same constraints and objective as
    :func:`solve`; the best of each type choice, the ``k`` best of those. A plain loop, no pruning."""
    _check(caps, rate, headroom, k, max_count)
    dp, dd, dr = _demand(mix, rate, headroom)
    w = [cp.objective(objective.value) for cp in caps]
    best: list[Candidate] = []
    rng = range(1, max_count + 1)
    if Layout.SPLIT in layouts:
        for i, pi in enumerate(caps):
            for j, dj in enumerate(caps):
                top: tuple[float, int, int] | None = None
                for nx in rng:
                    for ny in rng:
                        spend = w[i] * nx + w[j] * ny
                        if nx * pi.prefill_tokens_s >= dp and ny * dj.decode_tokens_s >= dd \
                                and (budget is None or spend <= budget) and (top is None or spend < top[0]):
                            top = (spend, nx, ny)
                if top is not None:
                    best.append(Candidate(Layout.SPLIT, (("prefill", pi, top[1]), ("decode", dj, top[2])), top[0],
                                          rate))
    if Layout.COLOCATED in layouts:
        for i, ci in enumerate(caps):
            for nz in rng:
                spend = w[i] * nz
                if nz * ci.colocated_rps >= dr and (budget is None or spend <= budget):
                    best.append(Candidate(Layout.COLOCATED, (("colocated", ci, nz),), spend, rate))
                    break
    if not best:
        raise Infeasible(f"no cluster of at most {max_count} machines per pool serves {rate:g} req/s")
    return sorted(best, key=lambda cd: cd.objective)[:k]


# ---- verification by simulation ------------------------------------------------------------------
@dataclass
class Verified:
    candidate: Candidate
    summary: dict[str, Any]              # the simulated metrics at the candidate's rate
    met: bool
    sustained_rps: float | None = None   # highest rate within the SLOs found by bisection (None: not searched)
    bisection: list[tuple[float, bool]] = field(default_factory=list)     # every rate simulated in the search
    failed_rps: float | None = None      # the lowest rate found to miss the SLOs (the bracket's top)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "slo_met": self.met, "sustained_rps": self.sustained_rps,
                "failed_rps": self.failed_rps,
                "bisection": [{"rate_rps": r, "slo_met": ok} for r, ok in self.bisection],
                "metrics": self.summary}


def simulate_candidate(model: ModelSpec, cand: Candidate, requests: Sequence[Request], slo: Slo | None, *,
                       serve: ServeConfig = DEFAULT_SERVE, engine: EngineProfile | None = None,
                       transfer: TransferMode = TransferMode.LAYERWISE) -> dict[str, Any]:
    """Simulate the cluster on ``requests``; the split or colocated summary (:mod:`sim.split_metrics`)."""
    roles = {role: (cp, n) for role, cp, n in cand.pools}
    if cand.layout is Layout.SPLIT:
        (pc, pn), (dc, dn) = roles["prefill"], roles["decode"]
        cfg = SplitConfig(Pool(pc.machine, pn, pc.tp), Pool(dc.machine, dn, dc.tp), transfer, serve=serve,
                          engine=engine)
        return summarize_split(simulate_split(model, requests, cfg), slo)
    cc, cn = roles["colocated"]
    m: Machine = cc.machine
    ccfg = dataclasses.replace(serve, tp=cc.tp, replicas=cn * cc.instances, router=RouterKind.LEAST_OUTSTANDING_TOKENS,
                               iteration_overhead_s=iteration_overhead(serve, engine))
    step = step_model(model, m, cc.tp, serve, engine)
    res = simulate_serving(model, m.effective_gpu, requests, ccfg, step_model=step)
    return summarize_colocated(res, m, cn, slo, step)


def verify(model: ModelSpec, cand: Candidate, workload: Workload, slo: Slo | None, *, bisect_steps: int = 3,
           search_up: bool = False, max_doublings: int = 6, max_halvings: int = 8, **kw: Any) -> Verified:
    """Simulate ``cand`` at its rate. If it misses the SLOs (or ``search_up``), search the load for the highest
    rate within them: first a bracket [a rate that meets them, one that misses them] by doubling from the rate
    while it passes (at most ``max_doublings`` times; ``search_up`` only) or halving while it fails (at most
    ``max_halvings`` times; 0.0 sustained below that), then ``bisect_steps`` halvings of the bracket. A factor-2
    bracket bisected 3 times leaves the failing rate within 12.5 % above the sustained one
    (``sustained_rps``, ``failed_rps``; every rate in ``bisection`` was simulated)."""
    summ = simulate_candidate(model, cand, workload(cand.rate), slo, **kw)
    met = slo is None or bool(summ["slo"]["met"])
    v = Verified(cand, summ, met)
    if slo is None or bisect_steps <= 0 or (met and not search_up):
        return v

    def ok(r: float) -> bool:
        good = bool(simulate_candidate(model, cand, workload(r), slo, **kw)["slo"]["met"])
        v.bisection.append((r, good))
        return good

    lo: float | None
    if met:
        lo, hi = cand.rate, 2 * cand.rate
        for i in range(max_doublings):
            if not ok(hi):
                break
            lo, hi = hi, 2 * hi
            if i == max_doublings - 1:      # still passing: the ceiling is above the searched range
                v.sustained_rps, v.failed_rps = lo, None
                return v
    else:
        lo, hi = cand.rate / 2, cand.rate
        for _ in range(max_halvings):
            if ok(lo):
                break
            hi, lo = lo, lo / 2
        else:
            lo = None
    if lo is None:
        v.sustained_rps, v.failed_rps = 0.0, hi
        return v
    for _ in range(max(0, bisect_steps)):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    v.sustained_rps, v.failed_rps = lo, hi
    return v


# ---- the planner -----------------------------------------------------------------------------------
MIX_MIN_REQUESTS = 2000      # requests the planning length mix is taken from, at least (see planning_mix)


def planning_mix(workload: Workload, rate: float | None, min_requests: int = MIX_MIN_REQUESTS) -> Mix:
    """The length mix the capacities are computed at: from ``workload`` at ``rate`` (1 req/s without one), and
    when that gives fewer than ``min_requests`` requests, at a rate raised in proportion (up to 6 times) until
    it does or stops growing. A few dozen requests (``--max-rate`` used to take the mix at 1 req/s: 30 requests
    of 30 s) miss the length distribution's tail, which sets the prefill capacity (long prompts cost the most
    per token); with 2,000 the 48 equal-count groups of :meth:`Mix.of` hold ~42 requests each. Only the sample
    grows: the workload, its lengths' distribution and the simulations are unchanged."""
    r = rate if rate is not None else 1.0
    reqs = workload(r)
    for _ in range(6):
        if len(reqs) >= min_requests:
            break
        r *= min(64.0, max(2.0, 1.1 * min_requests / max(1, len(reqs))))
        more = workload(r)
        if len(more) <= len(reqs):
            break
        reqs = more
    return Mix.of(reqs)


@dataclass
class ServePlan:
    chosen: Verified | None                  # None: no candidate met the SLOs in simulation
    runner_ups: list[Verified]
    capacities: list[Capacity]
    mix: Mix
    rounds: list[dict[str, Any]]             # per ILP round: headroom and candidates' verdicts
    mode: str = "min-objective"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "chosen": None if self.chosen is None else self.chosen.to_dict(),
                "runner_ups": [v.to_dict() for v in self.runner_ups],
                "mix": {"mean_prompt": self.mix.mean_prompt, "mean_decode": self.mix.mean_decode,
                        "max_tokens": self.mix.max_tokens},
                "capacities": [{"option": c.key, "prefill_tokens_s": c.prefill_tokens_s,
                                "decode_tokens_s": c.decode_tokens_s, "decode_batch": c.decode_batch,
                                "colocated_rps": c.colocated_rps, "kv_tokens_per_instance": c.kv_tokens}
                               for c in self.capacities],
                "rounds": self.rounds}


def plan_serve(model: ModelSpec, workload: Workload, machines: Sequence[Machine], *, rate: float | None = None,
               budget: float | None = None, tps: Sequence[int] = (2, 4, 8), slo: Slo | None = None,
               objective: Objective = Objective.COST, headroom: float = 1.2, k: int = 3, max_count: int = 64,
               rounds: int = 3, bisect_steps: int = 3, serve: ServeConfig = DEFAULT_SERVE,
               engine: EngineProfile | None = None, transfer: TransferMode = TransferMode.LAYERWISE,
               layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED)) -> ServePlan:
    """Plan a cluster for ``rate`` req/s (cheapest meeting the SLOs), or with ``rate`` None the highest rate
    ``budget`` sustains (``--max-rate``). ``workload(rate)`` gives the requests to simulate at a rate."""
    if rate is None and budget is None:
        raise ConfigError("give a rate, or a budget for the max-rate mode", field="rate")
    mix = planning_mix(workload, rate)
    caps = capacities(model, machines, tps, mix, serve=serve, engine=engine,
                      tbt_slowdown=None if slo is None else slo["tbt"][0])
    kw: dict[str, Any] = {"serve": serve, "engine": engine, "transfer": transfer}
    log_rounds: list[dict[str, Any]] = []
    if rate is None:
        assert budget is not None
        cands = solve_max_rate(caps, mix, budget, objective=objective, headroom=headroom, k=k, max_count=max_count,
                               layouts=layouts)
        ver = [verify(model, cd, workload, slo, bisect_steps=bisect_steps, search_up=True, **kw) for cd in cands]
        ver.sort(key=lambda v: -(v.sustained_rps if v.sustained_rps is not None
                                 else (v.candidate.rate if v.met else 0.0)))
        log_rounds.append({"headroom": headroom, "candidates": [{"label": v.candidate.label(), "objective":
                                                                 v.candidate.objective, "planned_rps": v.candidate.rate,
                                                                 "sustained_rps": v.sustained_rps,
                                                                 "failed_rps": v.failed_rps} for v in ver]})
        return ServePlan(ver[0], ver[1:], caps, mix, log_rounds, mode="max-rate")
    h = headroom
    ver = []
    for rnd in range(max(1, rounds)):
        cands = solve(caps, mix, rate, objective=objective, headroom=h, k=k, max_count=max_count, budget=budget,
                      layouts=layouts)
        ver = [verify(model, cd, workload, slo, bisect_steps=bisect_steps, **kw) for cd in cands]
        log_rounds.append({"headroom": h, "candidates": [{"label": v.candidate.label(), "objective":
                                                          v.candidate.objective, "slo_met": v.met,
                                                          "sustained_rps": v.sustained_rps} for v in ver]})
        passing = [v for v in ver if v.met]
        if passing:
            chosen = min(passing, key=lambda v: v.candidate.objective)
            return ServePlan(chosen, [v for v in ver if v is not chosen], caps, mix, log_rounds)
        best = max((v.sustained_rps or 0.0) for v in ver)
        factor = rate / best if best > 0 else 2.0
        h *= max(1.1, min(factor, 4.0))
        log.info("round %d: no candidate met the SLOs; headroom -> %.3g", rnd, h)
    return ServePlan(None, ver, caps, mix, log_rounds)
