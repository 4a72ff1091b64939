"""Speed of the serving planner (planners/serve.py: pulp + HiGHS) against exhaustive grids, on the Splitwise-sized
problem.

The problem (Splitwise, Patel et al., ISCA 2024, Sec. VI: Llama-2-70B, DGX-A100 / DGX-H100 / power-capped
DGX-H100 machines for the prompt and the token pool, the Azure conversation and coding traces at 70 req/s):
9 capacity options (3 machine types x TP 2, 4, 8), a prefill and a decode pool of one option each or a
colocated pool, at most ``max_count`` machines per pool (64: Splitwise's 70 req/s clusters are tens of
machines; 128 and 256 show how each method grows), cost and power objectives, K = 3 candidates.

Figures (one JSON line each; medians of ``REPEATS`` runs):

* ``plan_serve_ilp_vs_grid``: the ILP (:func:`planners.serve.solve`) against two exhaustive grids over every
  type choice x machine count, the same constraints and objective, answers checked equal (the K best
  objective values): ``grid_loop_s`` is :func:`planners.serve.grid` (a plain Python loop, the tests'
  reference) and ``grid_numpy_s`` the same enumeration vectorised with numpy (the fastest honest grid: every
  (prefill count, decode count) pair of each type pair evaluated as one array). Capacities are computed once
  and shared (``capacities_s``, not in either time).
* ``plan_serve_ilp_backends``: the ILP through highspy directly (the model passed once as arrays, each no-good
  cut added as a row) against the same matrix model through pulp + CBC (the fallback), K = 3, 64 per pool.
* ``plan_serve_vs_sim_grid``: the whole planner (:func:`planners.serve.plan_serve` with its defaults, as
  ``xpusim plan serve`` runs it: capacities, ILP, the K candidates simulated, a missed one bisected on load,
  more rounds if none passes; measured) against a grid search that checks the SLOs by simulation, as a user
  without a capacity model would: per type choice, a bisection on each pool's machine count (``ceil(log2
  max_count)`` simulations per pool; the cheapest such search, far fewer than simulating every count pair).
  ``SIM_GRID_SAMPLE`` type choices of that grid are run for real (``sim_grid_s_per_type_measured``: each split
  choice's prefill count bisected with the decode pool at its capacity-model size x 2, then the decode count at
  the prefill count found; a colocated choice's count bisected), and the whole grid's time is the measured mean
  per type choice times the number of type choices (81 split + 9 colocated; 1,026 simulations at 64 per pool):
  extrapolated from measured samples, not run whole (~1 hour per trace here).
* ``plan_serve_vs_sim_grid_full`` (``--sim-grid-full FILE``): the same simulation-checked grid run whole, every
  one of the 90 type choices (decode pools and colocated pools start at twice the capacity model's count, 64
  where the capacity model has none), one JSON line per choice appended to FILE as it finishes (a rerun skips
  the choices FILE holds), then the planner once more and one summary line: the grid's summed wall and CPU
  seconds against the planner's, the cheapest plan the grid found against the planner's. CPU seconds
  (``time.process_time``) are the fair clock on a shared machine: other users' jobs lengthen wall time only.

    python benchmarks/plan_serve_speed.py [--ilp-only] [--sim-grid-full FILE [--trace T]]
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REPEATS = 3
RATE, DURATION_S = 70.0, 30.0     # Splitwise's design point; `plan serve --duration` default
SIM_GRID_SAMPLE = 3               # type choices of the simulation-checked grid run for real (2 split, 1 colocated)


def sim_grid_choice(model: Any, pools: list[tuple[str, Any]], workload: Any, slo: Any, max_count: int,
                    start: dict[str, int]) -> tuple[int, dict[str, int] | None]:
    """The cheapest counts of one type choice that meet ``slo`` in simulation, found as a user without the
    capacity model would: bisection on each pool's count in [1, max_count] (a split's prefill count first, with
    the decode pool at ``start['decode']``; then the decode count). Returns (simulations, counts or None)."""
    from planners.serve import Candidate, Layout, simulate_candidate

    sims = 0
    counts = dict(start)

    def ok(c: dict[str, int]) -> bool:
        nonlocal sims
        sims += 1
        layout = Layout.SPLIT if "prefill" in c else Layout.COLOCATED
        cand = Candidate(layout, tuple((role, cap, c[role]) for role, cap in pools), 0.0, RATE)
        return bool(simulate_candidate(model, cand, workload(RATE), slo)["slo"]["met"])

    for role, _ in pools:
        lo, hi = 0, max_count                  # lo fails (0 machines), hi assumed to pass
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok({**counts, role: mid}):
                hi = mid
            else:
                lo = mid
        counts[role] = hi
    return sims, counts if ok(counts) else None


@dataclass
class Problem:
    """The Splitwise-sized problem of one trace (module docstring): what every figure here plans on."""

    trace: str
    model: Any
    slo: Any
    machines: list[Any]
    mix: Any
    caps: list[Any]
    capacities_s: float          # seconds to derive the mix, the SLO limits and the capacities

    def workload(self, rate: float) -> Any:
        """``DURATION_S`` seconds of the trace's arrivals at ``rate`` (seed 0), as the planner simulates them."""
        from workloads.traces import load_workload

        return load_workload(self.trace, rate=rate, duration_s=DURATION_S, seed=0)


def splitwise_problem(trace: str) -> Problem:
    """Llama-2-70B on DGX-A100 / DGX-H100 / capped DGX-H100 at TP 2, 4, 8, Splitwise's SLOs (slowdowns against
    one DGX-A100 at TP8, as ``plan serve`` by default), the mix of ``trace`` at ``RATE``."""
    from hwmodels.machines import load_machine
    from planners.capacity import DEFAULT_SERVE, Mix, capacities
    from planners.serve import slo_limits
    from sim.split_metrics import parse_slo
    from workloads.catalog import load_model
    from workloads.traces import load_workload

    model = load_model("llama-2-70b")
    slo = parse_slo("splitwise")
    machines = [load_machine(m) for m in ("dgx-a100", "dgx-h100", "dgx-h100-pcap")]
    reqs = load_workload(trace, rate=RATE, duration_s=DURATION_S, seed=0)
    t0 = time.perf_counter()
    mix = Mix.of(reqs)
    own_k, tbt_limit, _ = slo_limits(model, mix, slo, DEFAULT_SERVE, None)
    caps = capacities(model, machines, (2, 4, 8), mix, tbt_slowdown=own_k, tbt_limit_s=tbt_limit)
    return Problem(trace, model, slo, machines, mix, caps, time.perf_counter() - t0)


def sim_grid_full(trace: str, path: str) -> None:
    """Run every type choice of the simulation-checked grid for ``trace`` (module docstring), resumably."""
    import math
    import os

    from planners.serve import Objective, plan_serve

    pb = splitwise_problem(trace)
    model, slo, mix, caps, wl = pb.model, pb.slo, pb.mix, pb.caps, pb.workload
    headroom = 1.2

    def start(need: float, per_machine: float) -> int:
        return 64 if per_machine <= 0 else min(64, 2 * max(1, math.ceil(need / per_machine)))

    choices: list[tuple[str, list[tuple[str, Any]], dict[str, int]]] = []
    for p in caps:
        for d in caps:
            st = {"prefill": start(headroom * RATE * mix.mean_prompt, p.prefill_tokens_s),
                  "decode": start(headroom * RATE * mix.mean_decode, d.decode_tokens_s)}
            choices.append((f"split {p.key} | {d.key}", [("prefill", p), ("decode", d)], st))
    for c in caps:
        choices.append((f"colocated {c.key}", [("colocated", c)],
                        {"colocated": start(headroom * RATE, c.colocated_rps)}))
    done: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("figure") == "sim_grid_choice" and rec.get("trace") == trace:
                    done[rec["choice"]] = rec
    for label, pools, st in choices:
        if label in done:
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        n_s, counts = sim_grid_choice(model, pools, wl, slo, 64, st)
        objective = None if counts is None else sum(cap.objective(Objective.COST.value) * counts[role]
                                                    for role, cap in pools)
        rec = {"figure": "sim_grid_choice", "trace": trace, "choice": label, "start": st, "simulations": n_s,
               "counts": counts, "cost_per_hour": objective, "wall_s": round(time.perf_counter() - w0, 2),
               "cpu_s": round(time.process_time() - c0, 2)}
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        done[label] = rec
    w0, c0 = time.perf_counter(), time.process_time()
    plan = plan_serve(model, wl, pb.machines, rate=RATE, slo=slo, objective=Objective.COST, max_count=64)
    planner_wall, planner_cpu = time.perf_counter() - w0, time.process_time() - c0
    recs = [done[label] for label, _, _ in choices]
    ok = [r for r in recs if r["cost_per_hour"] is not None]
    best = min(ok, key=lambda r: r["cost_per_hour"]) if ok else None
    grid_wall, grid_cpu = sum(r["wall_s"] for r in recs), sum(r["cpu_s"] for r in recs)
    print(json.dumps({"figure": "plan_serve_vs_sim_grid_full", "trace": trace, "rate_rps": RATE,
                      "duration_s": DURATION_S, "max_count": 64, "sim_grid_types": len(recs),
                      "sim_grid_simulations": sum(r["simulations"] for r in recs),
                      "sim_grid_wall_s": round(grid_wall, 1), "sim_grid_cpu_s": round(grid_cpu, 1),
                      "planner_wall_s": round(planner_wall, 2), "planner_cpu_s": round(planner_cpu, 2),
                      "speedup_cpu": round(grid_cpu / planner_cpu, 1),
                      "speedup_wall": round(grid_wall / planner_wall, 1),
                      "sim_grid_best": None if best is None else {k: best[k] for k in ("choice", "counts",
                                                                                        "cost_per_hour")},
                      "planner_chosen": None if plan.chosen is None else plan.chosen.candidate.label(),
                      "planner_cost_per_hour": None if plan.chosen is None
                      else plan.chosen.candidate.cost_per_hour}), flush=True)


def grid_numpy(caps: Sequence[Any], mix: Any, rate: float, objective: Any, k: int, max_count: int,
               headroom: float = 1.2) -> list[float]:
    """The K best objective values over every type choice x count (as planners.serve.grid), vectorised."""
    import numpy as np

    dp, dd, dr = headroom * rate * mix.mean_prompt, headroom * rate * mix.mean_decode, headroom * rate
    n = np.arange(1, max_count + 1, dtype=float)
    w = np.array([c.objective(objective.value) for c in caps])
    best: list[float] = []
    for i, p in enumerate(caps):
        okp = n * p.prefill_tokens_s >= dp
        for j, d in enumerate(caps):
            ok = okp[:, None] & (n * d.decode_tokens_s >= dd)[None, :]
            if ok.any():
                best.append(float(np.where(ok, w[i] * n[:, None] + w[j] * n[None, :], np.inf).min()))
        okc = n * p.colocated_rps >= dr
        if okc.any():
            best.append(float(w[i] * n[okc].min()))
    return sorted(best)[:k]


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="speed of the serving planner against exhaustive grids")
    ap.add_argument("--ilp-only", action="store_true", help="only the ILP figures (seconds), not the end-to-end one")
    ap.add_argument("--sim-grid-full", metavar="FILE", help="run the whole simulation-checked grid (hours), "
                    "appending a JSON line per type choice to FILE, then the summary line")
    ap.add_argument("--trace", choices=("azure-conv", "azure-code"), action="append",
                    help="with --sim-grid-full: only this trace (repeatable; default both)")
    args = ap.parse_args(argv)
    if args.sim_grid_full:
        for trace in args.trace or ("azure-conv", "azure-code"):
            sim_grid_full(trace, args.sim_grid_full)
        return
    import planners.serve as serve_mod
    from planners.serve import Objective, _ilp, grid, plan_serve, solve

    for trace in ("azure-conv", "azure-code"):
        pb = splitwise_problem(trace)
        model, SPLITWISE_SLO, machines, mix, caps, caps_s = (pb.model, pb.slo, pb.machines, pb.mix, pb.caps,
                                                             pb.capacities_s)
        solve(caps, mix, RATE, k=1)     # warm: solver start-up once per process
        for objective in Objective:
            for max_count in (64, 128, 256):
                times: dict[str, list[float]] = {"ilp": [], "loop": [], "numpy": []}
                for _ in range(REPEATS):
                    t0 = time.perf_counter()
                    ilp = solve(caps, mix, RATE, objective=objective, k=3, max_count=max_count)
                    times["ilp"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    loop = grid(caps, mix, RATE, objective=objective, k=3, max_count=max_count)
                    times["loop"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    vec = grid_numpy(caps, mix, RATE, objective, 3, max_count)
                    times["numpy"].append(time.perf_counter() - t0)
                ref = [round(c.objective, 6) for c in ilp]
                same = ref == [round(c.objective, 6) for c in loop] == [round(v, 6) for v in vec]
                med = {key: statistics.median(v) for key, v in times.items()}
                print(json.dumps({"figure": "plan_serve_ilp_vs_grid", "trace": trace, "rate_rps": RATE,
                                  "objective": objective.value, "options": len(caps), "max_count": max_count,
                                  "capacities_s": round(caps_s, 3), "ilp_s": round(med["ilp"], 4),
                                  "grid_loop_s": round(med["loop"], 4), "grid_numpy_s": round(med["numpy"], 4),
                                  "speedup_vs_loop": round(med["loop"] / med["ilp"], 2),
                                  "speedup_vs_numpy": round(med["numpy"] / med["ilp"], 3),
                                  "same_answer": same, "best": ilp[0].label(), "best_objective": ilp[0].objective}),
                      flush=True)
        # the two ILP backends on the same model
        tb: dict[str, list[float]] = {"highs": [], "cbc": []}
        res: dict[str, list[float]] = {}
        for _ in range(REPEATS):
            for be in tb:
                t0 = time.perf_counter()
                got = _ilp(caps, mix, RATE, Objective.COST, 1.2, 3, 64, None, list(serve_mod.Layout), None, backend=be)
                tb[be].append(time.perf_counter() - t0)
                res[be] = [round(c.objective, 6) for c in got]
        print(json.dumps({"figure": "plan_serve_ilp_backends", "trace": trace, "rate_rps": RATE, "max_count": 64,
                          "k": 3, "highs_s": round(statistics.median(tb["highs"]), 4),
                          "pulp_cbc_s": round(statistics.median(tb["cbc"]), 4),
                          "same_answer": res["highs"] == res["cbc"]}), flush=True)
        if args.ilp_only:
            continue
        # the planner end to end (cost objective, 64 per pool, plan_serve's defaults: K = 3, up to 3 rounds,
        # 3 bisection steps on a missed candidate, the burst allowance) against a simulation-checked grid
        sims: list[float] = []
        real_sim = serve_mod.simulate_candidate

        def timed_sim(*a: Any, _sim: Any = real_sim, _log: list[float] = sims, **kw: Any) -> Any:
            t1 = time.perf_counter()
            out = _sim(*a, **kw)
            _log.append(time.perf_counter() - t1)
            return out

        wl = pb.workload

        serve_mod.simulate_candidate = timed_sim       # count and time the planner's own simulations
        try:
            t0 = time.perf_counter()
            plan = plan_serve(model, wl, machines, rate=RATE, slo=SPLITWISE_SLO, objective=Objective.COST,
                              max_count=64)
            planner_s = time.perf_counter() - t0
        finally:
            serve_mod.simulate_candidate = real_sim
        # a sample of the simulation-checked grid, run: the planner's chosen type choice, the ILP's best split
        # of another prefill option, and one colocated choice; decode pools start at twice the capacity model's
        # size (a user would start large), colocated at the capacity model's size x 2 as the upper end
        by = {c.key: c for c in caps}
        best = solve(caps, mix, RATE, k=20, max_count=64)
        splits = [c for c in best if c.layout is serve_mod.Layout.SPLIT][:SIM_GRID_SAMPLE - 1]
        colo = [c for c in best if c.layout is serve_mod.Layout.COLOCATED][:1]
        g_sims, g_time, found = 0, 0.0, []
        for cd in splits + colo:
            pools = [(role, by[cp.key]) for role, cp, _ in cd.pools]
            start = {role: min(64, 2 * n) for role, _, n in cd.pools}
            t0 = time.perf_counter()
            n_s, counts = sim_grid_choice(model, pools, wl, SPLITWISE_SLO, 64, start)
            g_time += time.perf_counter() - t0
            g_sims += n_s
            found.append({"choice": cd.label(), "simulations": n_s, "counts": counts})
        per_type = g_time / len(found)
        n_types = len(caps) ** 2 + len(caps)
        grid_s = per_type * n_types
        print(json.dumps({"figure": "plan_serve_vs_sim_grid", "trace": trace, "rate_rps": RATE,
                          "duration_s": DURATION_S, "max_count": 64, "planner_s": round(planner_s, 2),
                          "planner_simulations": len(sims), "planner_rounds": len(plan.rounds),
                          "sim_mean_s": round(statistics.mean(sims), 2),
                          "chosen": None if plan.chosen is None else plan.chosen.candidate.label(),
                          "sim_grid_sample": found, "sim_grid_sample_simulations": g_sims,
                          "sim_grid_s_per_type_measured": round(per_type, 1), "sim_grid_types": n_types,
                          "sim_grid_s_extrapolated": round(grid_s, 1), "speedup": round(grid_s / planner_s, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
