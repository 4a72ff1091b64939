"""Speed of the serving ILP (planners/serve.py: pulp + HiGHS) against the exhaustive grid over machine counts
(``planners.serve.grid``: every prefill x decode count pair of every type choice, every colocated count),
on the Splitwise-sized problem: Llama-2-70B, the Azure conversation and coding traces at 70 req/s (Splitwise's
design point), DGX-A100 / DGX-H100 / DGX-H100 70 % cap at TP 2, 4, 8 (9 options), cost and power objectives,
K = 3 candidates, and pools of at most ``max_count`` machines (64: Splitwise's 70 req/s clusters are tens of
machines; 128 and 256 show how each grows). Capacities are computed once (not timed: both methods share them).
Both answers are checked equal (objective values of the K best). One JSON line per figure; the median of
``REPEATS`` runs of each method.

    python benchmarks/plan_serve_speed.py
"""

from __future__ import annotations

import json
import statistics
import time

REPEATS = 3


def main() -> None:
    from hwmodels.machines import load_machine
    from planners.capacity import Mix, capacities
    from planners.serve import Objective, grid, solve
    from sim.split_metrics import SPLITWISE_SLO
    from workloads.catalog import load_model
    from workloads.traces import load_workload

    model = load_model("llama-2-70b")
    machines = [load_machine(m) for m in ("dgx-a100", "dgx-h100", "dgx-h100-pcap")]
    for trace in ("azure-conv", "azure-code"):
        mix = Mix.of(load_workload(trace, rate=70, duration_s=60, seed=0))
        caps = capacities(model, machines, (2, 4, 8), mix, tbt_slowdown=SPLITWISE_SLO["tbt"][0])
        solve(caps, mix, 70.0, k=1)     # warm: solver start-up once per process
        for objective in Objective:
            for max_count in (64, 128, 256):
                times: dict[str, list[float]] = {"ilp": [], "grid": []}
                answers = {}
                for _ in range(REPEATS):
                    for name, fn in (("ilp", solve), ("grid", grid)):
                        t0 = time.perf_counter()
                        answers[name] = fn(caps, mix, 70.0, objective=objective, k=3, max_count=max_count)
                        times[name].append(time.perf_counter() - t0)
                same = [round(c.objective, 6) for c in answers["ilp"]] == [round(c.objective, 6)
                                                                           for c in answers["grid"]]
                ilp, grd = statistics.median(times["ilp"]), statistics.median(times["grid"])
                print(json.dumps({"figure": "plan_serve_ilp_vs_grid", "trace": trace, "rate_rps": 70,
                                  "objective": objective.value, "options": len(caps), "max_count": max_count,
                                  "ilp_s": round(ilp, 4), "grid_s": round(grd, 4), "speedup": round(grd / ilp, 2),
                                  "same_answer": same, "best": answers["ilp"][0].label(),
                                  "best_objective": answers["ilp"][0].objective}))


if __name__ == "__main__":
    main()
