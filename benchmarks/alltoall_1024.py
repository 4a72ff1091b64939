"""Speed of the flow-level simulation: an all-to-all among 1,024 GPUs of the dgx-h100-superpod
preset (128 DGX H100 nodes, 4 scalable units, rail-optimised NDR fat tree): every GPU sends
1 GiB / 1,024 to each of the 1,023 others, 1,047,552 flows at once, with max-min fair sharing
of every link. Then the same at 128, 256 and 512 GPUs, to show how the cost grows with the GPU
count (flows grow as n^2). Last, a skewed all-to-allv among the 1,024 (each destination's share
drawn from a Zipf(1.5) law capped at 16x, as hot MoE experts make it; seed 0): unequal flows finish
at different times, so the rates are recomputed at every distinct completion (``rate_updates``).
One JSON line per run, each in a fresh process; wall_s runs from loading the cluster to the
finished simulation (decomposition into flows and routes included; imports excluded). Each run is held
to one core, as issue 3's target states it: one CPU by affinity, and one thread for the numeric libraries.

    python benchmarks/alltoall_1024.py              # 128, 256, 512, 1024, then skewed 1024
    python benchmarks/alltoall_1024.py 1024         # one size, in this process
    python benchmarks/alltoall_1024.py 1024 skewed"""

from __future__ import annotations

import json
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one thread
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core (children inherit it)

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE = 1 << 30  # bytes each GPU sends in all (nccl-tests' all-to-all size)


def run(gpus: int) -> dict:
    from hwmodels.network.collectives import collective_time
    from hwmodels.network.topology import load_cluster
    from sim.fabric import simulate_collective_flows

    t0 = time.perf_counter()
    cluster = load_cluster("dgx-h100-superpod", gpus=gpus)
    res = simulate_collective_flows(cluster, "all_to_all", SIZE)
    wall = time.perf_counter() - t0
    closed = collective_time(cluster, "all_to_all", SIZE)
    return {"gpus": gpus, "case": "uniform", "flows": res.flows.flows, "wall_s": round(wall, 3),
            "sim_time_s": res.time_s, "rate_updates": res.flows.rate_updates, "closed_form_time_s": closed.time_s}


def run_skewed(gpus: int) -> dict:
    import numpy as np

    from hwmodels.network.decompose import decompose_all_to_allv, fabric_graph
    from hwmodels.network.topology import load_cluster
    from sim.fabric import simulate_flows

    weight = np.random.default_rng(0).zipf(1.5, size=gpus).clip(max=16).astype(float)
    t0 = time.perf_counter()
    cluster = load_cluster("dgx-h100-superpod", gpus=gpus)
    sizes = np.outer(np.ones(gpus), weight)
    sizes *= SIZE / sizes.sum(axis=1, keepdims=True)
    graph = fabric_graph(cluster)
    res = simulate_flows(graph, [decompose_all_to_allv(cluster, sizes, graph=graph)])
    wall = time.perf_counter() - t0
    return {"gpus": gpus, "case": "skewed", "flows": res.flows, "wall_s": round(wall, 3), "sim_time_s": res.time_s,
            "rate_updates": res.rate_updates}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args:
        n = int(args[0])
        print(json.dumps(run_skewed(n) if args[1:] == ["skewed"] else run(n)), flush=True)
    else:
        for a in (["128"], ["256"], ["512"], ["1024"], ["1024", "skewed"]):
            subprocess.run([sys.executable, __file__, *a], check=True)
