"""Serving planner: the cheapest (or lowest-power) cluster that serves a request rate within the SLOs.

Layouts: phase-split (a prefill pool of one machine type x TP and a decode pool of one, as
:func:`sim.split.simulate_split` runs them) or colocated (replicas of one machine type x TP). Capacities per
machine come from the hardware model (:mod:`planners.capacity`). The ILP (HiGHS through highspy, the model
built once as arrays and each no-good cut added to it as a row; CBC through pulp when highspy is missing), for
capacity options i (machine x TP) with per-machine prefill tokens/s ``P_i``,
decode tokens/s ``D_i``, colocated requests/s ``C_i`` and cost (or power) ``w_i``, demand at rate ``r``:
prompt tokens/s ``r p``, decode tokens/s ``r d`` (``p``, ``d`` the trace's means), headroom ``h`` >= 1::

    min  sum_i w_i (x_i + y_i + z_i)
    s.t. sum_i P_i x_i >= h r p s          x_i <= U a_i,  x_i >= a_i,  sum_i a_i = s   (prefill pool: one type)
         sum_i D_i y_i >= h r d s          y_i <= U b_i,  y_i >= b_i,  sum_i b_i = s   (decode pool: one type)
         sum_i C_i z_i >= h r (1 - s)      z_i <= U c_i,  z_i >= c_i,  sum_i c_i = 1 - s (colocated: one type)
         [sum_i w_i (x_i + y_i + z_i) <= budget]     x, y, z integer in 0..U; a, b, c, s binary

In rate mode a chosen pool's count is fixed at its bound (``x_i = U_i a_i``, ``U_i = ceil(demand / P_i)``, or
the burst minimum of :func:`burst_minimums` when larger): the objective grows with the count and nothing else
bounds it from above but the budget, so no optimum is lost and only the binaries are left to branch on.
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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwmodels.engine import EngineProfile
from hwmodels.machines import Machine
from planners.capacity import (
    DEFAULT_SERVE,
    Capacity,
    Mix,
    capacities,
    iteration_overhead,
    prefill_pool_min,
    prefill_seconds,
    single_decode_step_s,
    step_model,
)
from sim.config import RouterKind, ServeConfig
from sim.serving import simulate_serving
from sim.split import Pool, SplitConfig, TransferMode, simulate_split
from sim.split_metrics import SloSpec, as_slo, summarize_colocated, summarize_split
from workloads.errors import ConfigError, Infeasible, WorkloadError
from workloads.model_spec import ModelSpec
from workloads.requests import Request
from workloads.traces import inter_arrival_cv

log = logging.getLogger(__name__)

Slo = SloSpec | dict[str, tuple[float, float, float]]     # a dict: slowdown limits on the default reference
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
    """Whether highspy imports (asked once per process)."""
    try:
        import highspy  # noqa: F401
    except ImportError:     # pragma: no cover - highspy is a dependency
        return False
    return True


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
          layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED),
          prefill_min: Sequence[int] | None = None) -> list[Candidate]:
    """The ``k`` best distinct candidates (module docstring), best first. ``Infeasible`` when none exists.
    ``prefill_min[i]``: the fewest machines a prefill pool of option i may have (the burst allowance,
    :func:`burst_minimums`), on top of the demand constraint."""
    return _ilp(caps, mix, rate, objective, headroom, k, max_count, budget, layouts, prefill_min)


def solve_max_rate(caps: Sequence[Capacity], mix: Mix, budget: float, *, objective: Objective = Objective.COST,
                   headroom: float = 1.2, k: int = 3, max_count: int = 64,
                   layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED)) -> list[Candidate]:
    """The ``k`` best distinct candidates by the rate they sustain within ``budget`` ($/hour or watts)."""
    if not math.isfinite(budget) or budget <= 0:
        raise ConfigError(f"budget must be a finite number > 0, got {budget!r}", field="budget", value=budget)
    return _ilp(caps, mix, None, objective, headroom, k, max_count, budget, layouts, None)


@dataclass
class _Model:
    """The ILP in matrix form (columns x, y, z, a, b, c per option, then s, then r in max-rate mode), built once
    and handed to a backend: HiGHS directly (highspy: the model passed once, each no-good cut added as a row and
    the model re-run) or pulp (CBC, when highspy is missing)."""

    cost: np.ndarray
    maximise: bool
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray              # bool per column
    rows: list[tuple[dict[int, float], float, float]]     # (coefficients, lower, upper)
    binaries: range                  # the type-choice columns (a, b, c) the no-good cuts are on


def _build(caps: Sequence[Capacity], mix: Mix, rate: float | None, objective: Objective, headroom: float,
           max_count: int, budget: float | None, layouts: Sequence[Layout],
           prefill_min: Sequence[int] | None) -> _Model:
    n, u = len(caps), max_count
    X, Y, Z, A, B, C = (range(j * n, (j + 1) * n) for j in range(6))
    S, R = 6 * n, 6 * n + 1
    ncol = 6 * n + (2 if rate is None else 1)
    w = [cp.objective(objective.value) for cp in caps]
    lo, hi = np.zeros(ncol), np.ones(ncol)
    integer = np.ones(ncol, dtype=bool)
    rows: list[tuple[dict[int, float], float, float]] = []
    inf = math.inf
    if Layout.SPLIT not in layouts:
        hi[S] = 0.0
    if Layout.COLOCATED not in layouts:
        lo[S] = 1.0
    # per-option count bounds, as tight as the answer allows (a weak big-M makes the branch and bound slow).
    # Minimising, a chosen pool's count is exactly ceil(demand / capacity) (or the burst minimum when larger):
    # the objective grows with the count and every other constraint bounds it from below or is the budget, so
    # fixing it (count = bound x binary) loses no optimum and leaves HiGHS only the binaries. Maximising the rate,
    # a count is at most what the budget buys.
    if rate is not None:
        dp, dd, dr = _demand(mix, rate, headroom)
        ub = [[_ceil(dp, cp.prefill_tokens_s, u), _ceil(dd, cp.decode_tokens_s, u), _ceil(dr, cp.colocated_rps, u)]
              for cp in caps]
        if prefill_min is not None:
            for i in range(n):
                if prefill_min[i] > u:           # the pool would need more machines than allowed
                    hi[A[i]] = 0.0
                else:
                    ub[i][0] = max(ub[i][0], prefill_min[i])
    else:
        assert budget is not None
        ub = [[min(u, math.floor(budget / w[i] + 1e-9))] * 3 for i in range(n)]
    for r, (v, sel) in enumerate(((X, A), (Y, B), (Z, C))):
        for i in range(n):
            hi[v[i]] = ub[i][r]
            rows.append(({v[i]: 1.0, sel[i]: -float(ub[i][r])}, -inf, 0.0))
            rows.append(({v[i]: 1.0, sel[i]: -float(ub[i][r] if rate is not None else 1)}, 0.0, inf))
    for sel, sign, rhs in ((A, -1.0, 0.0), (B, -1.0, 0.0), (C, 1.0, 1.0)):
        rows.append(({**{j: 1.0 for j in sel}, S: sign}, rhs, rhs))     # one type per pool
    spend = {j: w[i] for v in (X, Y, Z) for i, j in enumerate(v)}
    cost = np.zeros(ncol)
    if rate is not None:
        rows.append(({**{X[i]: caps[i].prefill_tokens_s for i in range(n)}, S: -dp}, 0.0, inf))
        rows.append(({**{Y[i]: caps[i].decode_tokens_s for i in range(n)}, S: -dd}, 0.0, inf))
        rows.append(({**{Z[i]: caps[i].colocated_rps for i in range(n)}, S: dr}, dr, inf))
        if budget is not None:
            rows.append((spend, -inf, budget))
        for j, wj in spend.items():
            cost[j] = wj
        return _Model(cost, False, lo, hi, integer, rows, range(3 * n, 6 * n))
    assert budget is not None
    # big-M: no cluster within the budget serves more than this
    big = budget / min(w) * max(max(cp.prefill_tokens_s / max(mix.mean_prompt, 1e-9),
                                    cp.decode_tokens_s / max(mix.mean_decode, 1e-9), cp.colocated_rps)
                                for cp in caps) / headroom + 1.0
    lo[R], hi[R], integer[R] = 0.0, big, False
    hp, hd = headroom * mix.mean_prompt, headroom * mix.mean_decode
    # pre >= hp (r - big (1 - s)), dec likewise, col >= h (r - big s)
    rows.append(({**{X[i]: caps[i].prefill_tokens_s for i in range(n)}, R: -hp, S: -hp * big}, -hp * big, inf))
    rows.append(({**{Y[i]: caps[i].decode_tokens_s for i in range(n)}, R: -hd, S: -hd * big}, -hd * big, inf))
    rows.append(({**{Z[i]: caps[i].colocated_rps for i in range(n)}, R: -headroom, S: headroom * big}, 0.0, inf))
    rows.append((spend, -inf, budget))
    cost[R] = 1.0                            # the most rate; among equal rates the cheaper
    for j, wj in spend.items():
        cost[j] = -1e-6 * wj / budget
    return _Model(cost, True, lo, hi, integer, rows, range(3 * n, 6 * n))


def _nogood(m: _Model, col: np.ndarray) -> tuple[dict[int, float], float, float]:
    """The cut excluding this choice of types: sum of the binaries that are on <= (their number - 1). With one
    type per pool (the rows sum a = s, sum b = s, sum c = 1 - s) a choice is fixed by which binaries are on, so
    this short row excludes exactly it, as the textbook cut over all binaries (those off counted as v, those on
    as 1 - v) does; its LP relaxation is much tighter (a_i + b_j <= 1 for a split, c_k <= 0 for a colocated
    choice), which keeps HiGHS at the root: a dense cut made each re-solve 15-60 ms instead of ~1 ms."""
    on = [j for j in m.binaries if col[j] > 0.5]
    return {j: 1.0 for j in on}, -math.inf, len(on) - 1.0


def _solve_highs(m: _Model, k: int) -> list[np.ndarray]:
    """Up to ``k`` optimal column vectors, each after a no-good cut on the previous: one HiGHS model, passed once."""
    import highspy

    _silence_highs_banner()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 1e-9)     # the tests hold the answers equal to an exhaustive grid
    h.setOptionValue("mip_abs_gap", 1e-12)    # the max-rate tie-break is ~1e-6 of the objective
    ncol = len(m.cost)
    h.addVars(ncol, m.col_lo, m.col_hi)
    kinds = [highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous for v in m.integer]
    h.changeColsIntegrality(ncol, np.arange(ncol, dtype=np.int32), np.array(kinds))
    h.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), m.cost)
    h.changeObjectiveSense(highspy.ObjSense.kMaximize if m.maximise else highspy.ObjSense.kMinimize)

    def add(rows: Sequence[tuple[dict[int, float], float, float]]) -> None:
        starts: list[int] = []
        idx: list[int] = []
        val: list[float] = []
        for coef, _, _ in rows:
            starts.append(len(idx))
            idx.extend(coef)
            val.extend(coef.values())
        inf = highspy.kHighsInf
        h.addRows(len(rows), np.array([max(lo, -inf) for _, lo, _ in rows]),
                  np.array([min(hi, inf) for _, _, hi in rows]), len(idx), np.array(starts, dtype=np.int32),
                  np.array(idx, dtype=np.int32), np.array(val, dtype=np.float64))

    add(m.rows)
    out: list[np.ndarray] = []
    for _ in range(k):
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            break
        col = np.array(h.getSolution().col_value)
        out.append(col)
        add([_nogood(m, col)])
    return out


def _solve_pulp(m: _Model, k: int) -> list[np.ndarray]:
    """As :func:`_solve_highs`, through pulp and CBC (the model re-sent per solve): the fallback without highspy."""
    import pulp

    prob = pulp.LpProblem("serve", pulp.LpMaximize if m.maximise else pulp.LpMinimize)
    v = [prob.add_variable(f"v{j}", m.col_lo[j], m.col_hi[j], cat="Integer" if m.integer[j] else "Continuous")
         for j in range(len(m.cost))]

    def row(coef: dict[int, float], lo: float, hi: float) -> None:
        e = pulp.lpSum(c * v[j] for j, c in coef.items())
        if lo == hi:
            prob.addConstraint(e == lo)
            return
        if math.isfinite(lo):
            prob.addConstraint(e >= lo)
        if math.isfinite(hi):
            prob.addConstraint(e <= hi)

    for r in m.rows:
        row(*r)
    prob.setObjective(pulp.lpSum(c * v[j] for j, c in enumerate(m.cost) if c))
    solver = pulp.COIN_CMD(msg=False)          # a CBC on the PATH (pulp 4's way)
    if not solver.available():
        with warnings.catch_warnings():        # pulp 3's bundled CBC, deprecated there
            warnings.simplefilter("ignore", DeprecationWarning)
            solver = pulp.PULP_CBC_CMD(msg=False)
    out: list[np.ndarray] = []
    for _ in range(k):
        if pulp.LpStatus[prob.solve(solver)] != "Optimal":
            break
        col = np.array([x.value() or 0.0 for x in v])
        out.append(col)
        row(*_nogood(m, col))
    return out


def _ilp(caps: Sequence[Capacity], mix: Mix, rate: float | None, objective: Objective, headroom: float, k: int,
         max_count: int, budget: float | None, layouts: Sequence[Layout],
         prefill_min: Sequence[int] | None, backend: str | None = None) -> list[Candidate]:
    _check(caps, rate, headroom, k, max_count)
    m = _build(caps, mix, rate, objective, headroom, max_count, budget, layouts, prefill_min)
    if backend not in (None, "highs", "cbc"):
        raise ConfigError(f"backend must be highs or cbc, got {backend!r}", field="backend", value=backend)
    use_highs = _have_highs() if backend is None else backend == "highs"
    n = len(caps)
    out: list[Candidate] = []
    for col in (_solve_highs if use_highs else _solve_pulp)(m, k):
        pools: list[tuple[str, Capacity, int]] = []
        for r, role in enumerate(("prefill", "decode", "colocated")):
            for i in range(n):
                cnt = int(round(col[r * n + i]))
                if cnt > 0:
                    pools.append((role, caps[i], cnt))
        split = col[6 * n] > 0.5
        cand_rate = rate if rate is not None else _sustained(caps, mix, pools, headroom)
        out.append(Candidate(Layout.SPLIT if split else Layout.COLOCATED, tuple(pools),
                             sum(cp.objective(objective.value) * cnt for _, cp, cnt in pools), cand_rate))
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
         layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED),
         prefill_min: Sequence[int] | None = None) -> list[Candidate]:
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
                    if prefill_min is not None and nx < prefill_min[i]:
                        continue
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
    return summarize_colocated(res, m, cn, slo, step, engine)


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
def arrival_cv(requests: Sequence[Request]) -> float:
    """Coefficient of variation of the gaps between arrivals of the simulated workload (1.0, Poisson, when it has
    too few requests to measure): the burstiness the queueing bound uses."""
    try:
        return inter_arrival_cv(sorted(requests, key=lambda r: r.arrival_s))
    except WorkloadError:
        return 1.0


def burst_minimums(caps: Sequence[Capacity], mix: Mix, rate: float, cv: float, slo: Slo | None,
                   max_count: int, *, ref_times: Sequence[float] | None = None) -> list[int]:
    """Per option, the fewest machines of a prefill pool that keeps the TTFT percentiles within the SLO (slowdown
    and absolute limits) at ``rate`` under arrivals of burstiness ``cv`` (:func:`planners.capacity.prefill_pool_min`,
    a G/G/c bound); 1 without a TTFT SLO. ``ref_times``: the mix's prompt groups alone on the SLO's reference
    machine (None: each option's own, the "own" reference). The capacity model sizes on mean token demand only;
    this is the burst allowance on top of it (``max_count + 1``: no pool within ``max_count`` machines meets it)."""
    spec = SloSpec(dict(slo)) if isinstance(slo, dict) else slo
    if spec is None or ("ttft" not in spec.slowdown and "ttft" not in spec.absolute):
        return [1] * len(caps)
    return [prefill_pool_min(cp, mix, rate, cv, spec.slowdown.get("ttft"), max_count, ref_times=ref_times,
                             ttft_absolute=spec.absolute.get("ttft")) for cp in caps]


def ttft_floor(caps: Sequence[Capacity], mix: Mix, slo: Slo | None,
               ref_times: Sequence[float] | None = None) -> list[Capacity]:
    """``caps`` with prefill and colocated capacity set to 0 for options that miss the TTFT SLO even with no queue:
    more than 50 / 10 / 1 % of the mix's requests (by prompt group) take longer to prefill alone on the option than
    the p50 / p90 / p99 limit (k x the prompt alone on the reference, ``ref_times``, or an absolute limit). Such an
    option cannot be a prefill pool (or colocated) at any rate; the rate-mode burst bound already excludes it, the
    max-rate ILP, which has no rate to size a queue at, would otherwise plan with it (Llama-2-70B on DGX-A100 TP2
    against an A100 TP8 reference: its prefill alone is more than 2x the reference's)."""
    spec = SloSpec(dict(slo)) if isinstance(slo, dict) else slo
    if spec is None or ("ttft" not in spec.slowdown and "ttft" not in spec.absolute):
        return list(caps)
    w = np.array(mix.weights) / sum(mix.weights)
    out = []
    for cp in caps:
        s = np.array(cp.prefill_times)
        ref = s if ref_times is None else np.asarray(ref_times, dtype=float)
        checks = [(k * ref, a) for k, a in zip(spec.slowdown.get("ttft", ()), (0.50, 0.10, 0.01))]
        checks += [(np.full(s.shape, sec), 1.0 - p / 100.0) for p, sec in spec.absolute.get("ttft", {}).items()]
        if any(float(w[s > lim].sum()) > a for lim, a in checks):
            log.info("%s: the TTFT SLO is missed with no queue; no prefill or colocated pool of it", cp.key)
            cp = dataclasses.replace(cp, prefill_tokens_s=0.0, colocated_rps=0.0)
        out.append(cp)
    return out


def slo_limits(model: ModelSpec, mix: Mix, slo: SloSpec | None, serve: ServeConfig,
               engine: EngineProfile | None) -> tuple[float | None, float | None, list[float] | None]:
    """What the capacity model and the burst bound hold of the SLO: (TBT slowdown against each option's own step,
    TBT limit in seconds, the mix's prompt groups alone on the reference machine). A slowdown against a reference
    machine becomes a limit in seconds (k x its single-sequence step at the mix's context), so every option is
    held to the same limit; an absolute p50 TBT limit is the other bound (the stricter holds)."""
    if slo is None:
        return None, None, None
    ovh = iteration_overhead(serve, engine)
    own_k: float | None = None
    limit_s = slo.absolute_limit("tbt", 50)
    ref_times = None
    if slo.reference is not None:
        ref = step_model(model, slo.reference.machine, slo.reference.tp, serve, engine)
        if "tbt" in slo.slowdown:
            k = slo.slowdown["tbt"][0] * single_decode_step_s(ref, mix, ovh)
            limit_s = k if limit_s is None else min(limit_s, k)
        ref_times = [prefill_seconds(ref, p, serve.max_num_batched_tokens, ovh) for p in mix.prompts]
    elif "tbt" in slo.slowdown:
        own_k = slo.slowdown["tbt"][0]
    return own_k, limit_s, ref_times


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
               layouts: Sequence[Layout] = (Layout.SPLIT, Layout.COLOCATED), burst: bool = True) -> ServePlan:
    """Plan a cluster for ``rate`` req/s (cheapest meeting the SLOs), or with ``rate`` None the highest rate
    ``budget`` sustains (``--max-rate``). ``workload(rate)`` gives the requests to simulate at a rate.
    ``burst``: size prefill pools also by the queueing bound on TTFT (:func:`burst_minimums`; rate mode only)."""
    if rate is None and budget is None:
        raise ConfigError("give a rate, or a budget for the max-rate mode", field="rate")
    slo = as_slo(slo)
    mix = planning_mix(workload, rate)
    own_k, tbt_limit, ref_times = slo_limits(model, mix, slo, serve, engine)
    caps = ttft_floor(capacities(model, machines, tps, mix, serve=serve, engine=engine, tbt_slowdown=own_k,
                                 tbt_limit_s=tbt_limit), mix, slo, ref_times)
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
    cv = arrival_cv(workload(rate)) if burst and slo is not None else None
    for rnd in range(max(1, rounds)):
        # the queueing bound at the rate scaled as the headroom was raised (round 1: the rate itself)
        pmin = None if cv is None else burst_minimums(caps, mix, rate * h / headroom, cv, slo, max_count,
                                                  ref_times=ref_times)
        cands = solve(caps, mix, rate, objective=objective, headroom=h, k=k, max_count=max_count, budget=budget,
                      layouts=layouts, prefill_min=pmin)
        ver = [verify(model, cd, workload, slo, bisect_steps=bisect_steps, **kw) for cd in cands]
        log_rounds.append({"headroom": h, "arrival_cv": cv, "prefill_min": pmin,
                           "candidates": [{"label": v.candidate.label(), "objective": v.candidate.objective,
                                           "slo_met": v.met, "sustained_rps": v.sustained_rps} for v in ver]})
        passing = [v for v in ver if v.met]
        if passing:
            chosen = min(passing, key=lambda v: v.candidate.objective)
            return ServePlan(chosen, [v for v in ver if v is not chosen], caps, mix, log_rounds)
        best = max((v.sustained_rps or 0.0) for v in ver)
        factor = rate / best if best > 0 else 2.0
        h *= max(1.1, min(factor, 4.0))
        log.info("round %d: no candidate met the SLOs; headroom -> %.3g", rnd, h)
    return ServePlan(None, ver, caps, mix, log_rounds)


# ---- iso-cost / iso-power comparison ------------------------------------------------------------------
@dataclass
class DesignResult:
    """One design family (a colocated machine type, or a prefill type and a decode type, any TP) at the budget."""

    family: str
    verified: Verified | None            # None: no cluster of the family fits the budget (``note`` says why)
    note: str = ""
    ratio: float | None = None           # sustained rate / the baseline's

    @property
    def sustained_rps(self) -> float:
        v = self.verified
        if v is None:
            return 0.0
        return v.sustained_rps if v.sustained_rps is not None else (v.candidate.rate if v.met else 0.0)

    def to_dict(self) -> dict[str, Any]:
        v = self.verified
        return {"family": self.family, "note": self.note, "ratio_to_baseline": self.ratio,
                "sustained_rps": self.sustained_rps if v is not None else None,
                "failed_rps": None if v is None else v.failed_rps,
                "cluster": None if v is None else v.candidate.to_dict(),
                "bisection": [] if v is None else [{"rate_rps": r, "slo_met": ok} for r, ok in v.bisection]}


@dataclass
class Comparison:
    mode: str                    # iso-cost | iso-power
    budget: float                # $/hour or watts
    baseline: str                # the family the ratios are against
    designs: list[DesignResult]
    mix: Mix
    capacities: list[Capacity]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "budget": self.budget, "baseline": self.baseline,
                "designs": [d.to_dict() for d in self.designs],
                "mix": {"mean_prompt": self.mix.mean_prompt, "mean_decode": self.mix.mean_decode}}


def compare_designs(model: ModelSpec, workload: Workload, machines: Sequence[Machine], budget: float, *,
                    objective: Objective = Objective.COST, baseline: Machine | None = None,
                    tps: Sequence[int] = (2, 4, 8), slo: Slo | None = None, headroom: float = 1.2, k: int = 1,
                    max_count: int = 64, bisect_steps: int = 3, serve: ServeConfig = DEFAULT_SERVE,
                    engine: EngineProfile | None = None,
                    transfer: TransferMode = TransferMode.LAYERWISE) -> Comparison:
    """Iso-cost (``objective`` COST, ``budget`` $/hour) or iso-power (POWER, watts) comparison, as Splitwise's
    design comparisons: for each design family of ``machines`` (colocated per type; split per prefill type x decode
    type, TP free), the highest rate it sustains within the SLOs at ``budget``, and its ratio to the colocated
    ``baseline`` family (added to the machines when missing). Per family the max-rate ILP (:func:`solve_max_rate`
    on the family's options, its type choices enumerated best first by no-good cuts) proposes the ``k`` best
    clusters of exactly the family's types, and each is searched by simulation as in ``--max-rate``
    (:func:`verify` with ``search_up``: doubling or halving to a bracket, then ``bisect_steps`` bisections); the
    family's figure is its best cluster's sustained rate."""
    slo = as_slo(slo)
    if slo is None:
        raise ConfigError("an iso-cost / iso-power comparison needs an SLO (the rates are those within it)",
                          field="slo")
    if not math.isfinite(budget) or budget <= 0:
        raise ConfigError(f"budget must be a finite number > 0, got {budget!r}", field="budget", value=budget)
    mach = list(dict.fromkeys(machines))
    if baseline is not None and baseline not in mach:
        mach.append(baseline)
    mix = planning_mix(workload, None)
    own_k, tbt_limit, ref_times = slo_limits(model, mix, slo, serve, engine)
    caps = ttft_floor(capacities(model, mach, tps, mix, serve=serve, engine=engine, tbt_slowdown=own_k,
                                 tbt_limit_s=tbt_limit), mix, slo, ref_times)
    kw: dict[str, Any] = {"serve": serve, "engine": engine, "transfer": transfer}
    fams: list[tuple[str, Layout, tuple[str, ...]]] = [(f"colocated {m.id}", Layout.COLOCATED, (m.id,)) for m in mach]
    fams += [(f"split {p.id} -> {d.id}", Layout.SPLIT, (p.id, d.id)) for p in machines for d in machines]
    out: list[DesignResult] = []
    for name, lay, ids in fams:
        sub = [c for c in caps if c.machine.id in ids]
        if not sub:
            out.append(DesignResult(name, None, "no TP option fits the model and the longest request"))
            continue
        try:
            cands = solve_max_rate(sub, mix, budget, objective=objective, headroom=headroom,
                                   k=len(sub) ** 2 if lay is Layout.SPLIT else len(sub), max_count=max_count,
                                   layouts=(lay,))
        except Infeasible as exc:
            out.append(DesignResult(name, None, str(exc)))
            continue
        mine = [c for c in cands if c.rate > 0 and tuple(cp.machine.id for _, cp, _ in c.pools) == ids][:k]
        if not mine:
            out.append(DesignResult(name, None, "no cluster of the family sustains a positive rate in the capacity "
                                                "model (e.g. no option decodes within the TBT limit)"))
            continue
        ver = [verify(model, c, workload, slo, bisect_steps=bisect_steps, search_up=True, **kw) for c in mine]
        out.append(max((DesignResult(name, v) for v in ver), key=lambda d: d.sustained_rps))
    base = next((d for d in out if baseline is not None and d.family == f"colocated {baseline.id}"), None)
    if base is not None and base.sustained_rps > 0:
        for d in out:
            d.ratio = d.sustained_rps / base.sustained_rps
    return Comparison("iso-cost" if objective is Objective.COST else "iso-power", budget,
                      "" if base is None else base.family, out, mix, caps)
