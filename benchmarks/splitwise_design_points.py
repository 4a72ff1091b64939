"""The Splitwise design points (Patel et al., "Splitwise: Efficient generative LLM inference using phase
splitting", ISCA 2024), measured with xpusim's planner and simulator.

What the paper reports (abstract and Sec. VI; Llama-2-70B, the Azure LLM inference traces of 2023, DGX-A100 /
DGX-H100 / 70 %-capped DGX-H100 machines, SLOs TTFT 2/3/6x and TBT, E2E 1.25/1.5/5x slowdown at p50/p90/p99):

* ``iso_cost_throughput``: a split cluster of A100 machines (prompt and token pools, "Splitwise-AA") gives about
  1.4x the throughput of a colocated H100 cluster ("Baseline-H100"); the abstract's wording is "up to 1.4x higher
  throughput at 20 % lower cost".
* ``iso_cost_power_throughput``: "2.35x more throughput under the same power and cost budgets" (the best split
  design against Baseline-H100).
* ``h100_split_at_70rps``: the H100/H100 split ("Splitwise-HH") sized for 70 req/s gives the prompt pool more
  machines for the coding trace (long prompts, short outputs) and is more balanced for conversation.

How each is measured here (public functions of ``planners.serve`` only):

* The budget is that of ``N_H100`` DGX-H100 machines (``N_H100`` x $38.08/h and x 10.2 kW, the catalog's
  figures; Splitwise compared clusters of equal cost, and of equal cost and power). The same budget for every
  design, so the ratio is of rates at equal budget.
* Iso-cost: the planner's max-rate ILP (:func:`planners.serve.solve_max_rate`, as ``plan serve --max-rate``),
  once on DGX-A100 options only with split layouts only, once on DGX-H100 options only with colocated layouts
  only (TP 2, 4, 8 each), ``K`` candidates each; every candidate's highest rate within the Splitwise SLOs is then
  found by simulation (:func:`planners.serve.simulate_candidate`; :func:`max_rate`: bracket by doubling or
  halving from the planned rate, then ``BISECT`` halvings). (:func:`planners.serve.plan_serve`'s max-rate
  mode now searches the same way, doubling or halving then bisecting, with its mix from >= 2,000 requests; when
  this script was first run it took the mix from a few dozen requests and bisected only down to a quarter of
  the planned rate, which gave 0 req/s for both conversation designs. The script keeps its own search so that
  its figures stay comparable with those recorded in docs/phase_split.md.)
* Iso-cost-and-power: the ILP carries one budget, so the script enumerates, on the planner's capacities
  (:func:`planners.capacity.capacities`, the same per-machine figures the ILP uses), every split type choice
  (prefill option x decode option over DGX-A100, DGX-H100, DGX-H100 70 % cap x TP 2, 4, 8) and every
  (prefill, decode) count within both the cost and the power budget, keeps each type choice's highest planned
  rate, and measures the ``K`` best type choices by simulation as above. Against the iso-cost H100 colocated
  baseline (N_H100 DGX-H100 meet both budgets exactly).
* 70 req/s: :func:`planners.serve.plan_serve` at ``rate=70`` with DGX-H100 only and split layouts only, cost
  objective (the planner's defaults otherwise: headroom 1.2, K = 3, up to 3 rounds); the chosen plan's
  prefill : decode machine counts, per trace.

The planning mix (mean prompt and output lengths, the capacities' length groups) is taken from the trace at
``MIX_RATE`` req/s.

Traces: the Azure LLM inference trace CSVs in ``../shared/data/traces`` when present (arrivals rescaled to the
rate, keeping order, lengths and burstiness; the first ``DURATION_S`` seconds), else the synthetic
``azure-conv`` / ``azure-code`` profiles. Durations are short (``DURATION_S`` for max-rate, ``DURATION_70_S``
at 70 req/s) so that the script runs in ~10 minutes on 2 shared cores: a few hundred to ~2,000 requests per
simulation, so the tail percentiles (p99) and the searched rates carry noise of the order of the search
step (1/2^BISECT of the bracket) or more; a longer trace would also let queues build further near the limit.

SLOs: Splitwise's slowdowns against the request alone on ``--slo-reference`` (default ``dgx-a100``: one DGX-A100
at TP8, Splitwise's reference machine, the same yardstick for every design; ``own``: each pool's own instance, as
the figures recorded before that option existed); the capacities hold the same limits as ``plan serve``
(:func:`planners.serve.slo_limits`, :func:`planners.serve.ttft_floor`).

Engine: ``--engine NAME`` (a profile of ``hwmodels/specs/machines/engines.toml``, e.g. ``vllm-splitwise``, the
2023 vLLM build Splitwise measured) runs every step of the script under that profile: the capacities, the SLO
limits and the reference's times (a request "alone" is alone on the same software), the ILP's clusters, every
simulation (split and colocated, and their slowdown reference) and ``plan_serve``. Left out: the default engine
(vLLM 0.19, CUDA graphs; ``engine=None`` everywhere), as the figures recorded before the option. Each JSON line
names its engine (``"engine"``: the profile, or ``"default"``).

    python benchmarks/splitwise_design_points.py [--synthetic] [--only budget|70rps] [--duration S]
        [--duration-70 S] [--slo-reference dgx-a100|own|<machine>/tp<N>] [--engine NAME]
        # one JSON line per figure
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

N_H100 = 10                 # budget = 10 DGX-H100: $380.80/h, 102 kW
DURATION_S = 40.0           # seconds of arrivals per max-rate simulation
DURATION_70_S = 30.0        # seconds of arrivals per simulation at 70 req/s (2,100 requests; plan serve's default)
K = 2                       # candidates simulated per max-rate search
MIX_RATE = 70.0             # req/s at which the planning mix (mean prompt and output lengths) is taken
BISECT = 4                  # halvings per bisection
TPS = (2, 4, 8)
TRACE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
TRACE_FILES = {"azure-conv": "azure_llm_2023_conv.csv", "azure-code": "azure_llm_2023_code.csv"}


def workload_fn(trace: str, duration_s: float, synthetic: bool = False) -> tuple[Any, str]:
    """``rate -> requests`` for the trace (the Azure CSV when present and not ``synthetic``, else the synthetic
    profile), and its source."""
    from workloads.traces.load import load_workload, rescale_rate

    path = TRACE_DIR / TRACE_FILES[trace]
    if path.exists() and not synthetic:
        base = load_workload(path)

        @functools.lru_cache(maxsize=64)
        def from_file(rate: float) -> tuple[Any, ...]:
            return tuple(r for r in rescale_rate(base, rate, file=str(path)) if r.arrival_s < duration_s)

        return (lambda rate: list(from_file(rate))), str(path.name)
    return (lambda rate: load_workload(trace, rate=rate, duration_s=duration_s, seed=0)), f"synthetic {trace}"


def max_rate(model: Any, cand: Any, wl: Any, slo: Any, engine: Any = None) -> tuple[float, list[list[Any]]]:
    """The highest rate at which the simulated cluster meets ``slo``: from the planned rate, doubled (up to 8x)
    while it passes or halved (down to 1/64) while it fails, to bracket the limit; then ``BISECT`` halvings of
    the bracket, every simulation under ``engine`` (None: the default). Returns the rate (0.0 when even the
    lowest tried misses) and the trials [rate, met]."""
    from planners.serve import simulate_candidate

    trials: list[list[Any]] = []

    def ok(rate: float) -> bool:
        met = bool(simulate_candidate(model, cand, wl(rate), slo, engine=engine)["slo"]["met"])
        trials.append([round(rate, 2), met])
        return met

    r = cand.rate
    if ok(r):
        lo, hi = r, 2 * r
        while ok(hi):
            lo, hi = hi, 2 * hi
            if hi > 8 * r:
                return lo, trials
    else:
        hi, lo = r, r / 2
        while not ok(lo):
            hi, lo = lo, lo / 2
            if lo < r / 64:
                return 0.0, trials
    for _ in range(BISECT):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, trials


def measure(model: Any, cands: Sequence[Any], wl: Any, slo: Any, engine: Any = None) -> list[dict[str, Any]]:
    """Each candidate's simulated max rate under ``engine``, best first."""
    out = []
    for c in cands:
        rate, trials = max_rate(model, c, wl, slo, engine)
        counts = {role: n for role, _, n in c.pools}
        row: dict[str, Any] = {"cluster": c.label(), "cost_per_hour_usd": round(c.cost_per_hour or 0.0, 2),
                               "power_kw": round(c.power_w / 1e3, 2), "planned_rps": round(c.rate, 2),
                               "sustained_rps": round(rate, 2), "trials": trials}
        if "prefill" in counts:
            row["prefill_decode_machines"] = [counts["prefill"], counts["decode"]]
        out.append(row)
    return sorted(out, key=lambda d: -d["sustained_rps"])


def best_under_both(caps: Sequence[Any], mix: Any, cost_cap: float, power_cap: float, k: int,
                    headroom: float = 1.2) -> list[Any]:
    """The ``k`` split type choices with the highest planned rate within both budgets, each at its best counts
    (the planner's capacity model, enumerated: the ILP holds one budget). Ties go to the cheaper."""
    from planners.serve import Candidate, Layout

    best = []
    for p, d in itertools.product(caps, caps):
        top: tuple[float, float, int, int] | None = None
        for nx in range(1, 65):
            for ny in range(1, 65):
                cost = nx * p.machine.cost_per_hour + ny * d.machine.cost_per_hour
                power = nx * p.machine.power_w + ny * d.machine.power_w
                if cost > cost_cap * (1 + 1e-9) or power > power_cap * (1 + 1e-9):
                    continue
                rate = min(nx * p.prefill_tokens_s / mix.mean_prompt, ny * d.decode_tokens_s / mix.mean_decode) \
                    / headroom
                if top is None or (rate, -cost) > (top[0], -top[1]):
                    top = (rate, cost, nx, ny)
        if top is not None:
            best.append(Candidate(Layout.SPLIT, (("prefill", p, top[2]), ("decode", d, top[3])), top[1], top[0]))
    best.sort(key=lambda c: (-c.rate, c.objective))
    return best[:k]


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--synthetic", action="store_true", help="the synthetic azure-conv/azure-code profiles, "
                    "not the trace files")
    ap.add_argument("--only", choices=("budget", "70rps"), help="only the equal-budget figures or the 70 req/s one")
    ap.add_argument("--duration", type=float, default=DURATION_S, help="seconds of arrivals per max-rate simulation")
    ap.add_argument("--duration-70", type=float, default=DURATION_70_S,
                    help="seconds of arrivals per simulation at 70 req/s")
    ap.add_argument("--slo-reference", default="dgx-a100", help="where a request runs alone for its slowdown")
    ap.add_argument("--engine", default=None, help="engine profile (engines.toml: vllm, vllm-splitwise) for "
                    "capacities, SLO reference and every simulation; default: the default engine (vLLM 0.19)")
    args = ap.parse_args(argv)
    from hwmodels.engine import load_engine
    from hwmodels.machines import load_machine
    from planners.capacity import DEFAULT_SERVE, Mix, capacities
    from planners.serve import Layout, Objective, plan_serve, slo_limits, solve_max_rate, ttft_floor
    from sim.split_metrics import parse_slo
    from workloads.catalog import load_model

    model = load_model("llama-2-70b")
    engine = None if args.engine is None else load_engine(args.engine)   # an unknown name fails here, first
    eng_name = "default" if engine is None else engine.id
    slo = parse_slo("splitwise", args.slo_reference)
    ref = "own" if slo is None or slo.reference is None else slo.reference.label
    a100, h100, h100cap = (load_machine(m) for m in ("dgx-a100", "dgx-h100", "dgx-h100-pcap"))
    assert h100.cost_per_hour is not None
    cost_cap, power_cap = N_H100 * h100.cost_per_hour, N_H100 * h100.power_w
    budget = {"machines": f"{N_H100} x dgx-h100", "cost_per_hour_usd": round(cost_cap, 2),
              "power_kw": round(power_cap / 1e3, 2)}
    for trace in ("azure-conv", "azure-code") if args.only != "70rps" else ():
        wl, source = workload_fn(trace, args.duration, args.synthetic)
        common = {"trace": trace, "source": source, "duration_s": args.duration, "slo": "splitwise",
                  "slo_reference": ref, "engine": eng_name, "budget": budget}
        t0 = time.perf_counter()
        # the planning mix from the trace at Splitwise's 70 req/s (~2,800 requests in 40 s; plan_serve's max-rate
        # mode takes it from >= 2,000 requests too, planners.serve.planning_mix)
        mix = Mix.of(wl(MIX_RATE))
        own_k, tbt_limit, ref_times = slo_limits(model, mix, slo, DEFAULT_SERVE, engine)
        caps = ttft_floor(capacities(model, [a100, h100, h100cap], TPS, mix, engine=engine, tbt_slowdown=own_k,
                                     tbt_limit_s=tbt_limit), mix, slo, ref_times)
        only = {m.id: [c for c in caps if c.machine.id == m.id] for m in (a100, h100)}
        aa = measure(model, solve_max_rate(only[a100.id], mix, cost_cap, k=K, layouts=(Layout.SPLIT,)), wl, slo,
                     engine)
        hh = measure(model, solve_max_rate(only[h100.id], mix, cost_cap, k=K, layouts=(Layout.COLOCATED,)), wl, slo,
                     engine)
        ra, rh = aa[0]["sustained_rps"], hh[0]["sustained_rps"]
        print(json.dumps({"figure": "iso_cost_throughput", **common, "paper_ratio": 1.4,
                          "split_a100": aa, "colocated_h100": hh, "ratio": round(ra / rh, 2) if rh > 0 else None,
                          "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)

        t0 = time.perf_counter()
        both = measure(model, best_under_both(caps, mix, cost_cap, power_cap, K), wl, slo, engine)
        rs = both[0]["sustained_rps"]
        print(json.dumps({"figure": "iso_cost_power_throughput", **common, "paper_ratio": 2.35,
                          "split_best": both, "colocated_h100": hh[0], "ratio": round(rs / rh, 2) if rh > 0 else None,
                          "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)

    for trace in ("azure-code", "azure-conv") if args.only != "budget" else ():
        wl, source = workload_fn(trace, args.duration_70, args.synthetic)
        t0 = time.perf_counter()
        plan = plan_serve(model, wl, [h100], rate=70.0, tps=TPS, slo=slo, objective=Objective.COST,
                          layouts=(Layout.SPLIT,), engine=engine)
        row: dict[str, Any] = {"figure": "h100_split_at_70rps", "trace": trace, "source": source,
                               "duration_s": args.duration_70, "rate_rps": 70.0, "slo": "splitwise",
                               "slo_reference": ref, "engine": eng_name,
                               "paper": "prefill-leaning for azure-code, more balanced for azure-conv",
                               "rounds": len(plan.rounds), "mean_prompt": round(plan.mix.mean_prompt, 1),
                               "mean_decode": round(plan.mix.mean_decode, 1)}
        if plan.chosen is None:     # no candidate met the SLOs: the last round's, as planned and as simulated
            row["chosen"] = None
            row["last_round"] = [{"cluster": v.candidate.label(), "cost_per_hour_usd": v.candidate.cost_per_hour,
                                  "prefill_decode_machines": [n for _, _, n in v.candidate.pools],
                                  "sustained_rps": v.sustained_rps} for v in plan.runner_ups]
        else:
            c = plan.chosen.candidate
            counts = {role: n for role, _, n in c.pools}
            p, d = counts["prefill"], counts["decode"]
            row["chosen"] = {"cluster": c.label(), "cost_per_hour_usd": round(c.cost_per_hour or 0.0, 2),
                             "power_kw": round(c.power_w / 1e3, 2), "prefill_decode_machines": [p, d]}
            row["prefill_share"] = round(p / (p + d), 3)
            m = plan.chosen.summary
            row["slowdown_p50_p90_p99"] = {key: [round(m[f"{key}_slowdown"][q], 2) for q in ("p50", "p90", "p99")]
                                           for key in ("ttft", "tbt", "e2e")}
        row["headroom_per_round"] = [round(r["headroom"], 3) for r in plan.rounds]
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
