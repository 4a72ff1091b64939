"""Speed of the flow-level simulation: an all-to-all among 1,024 GPUs of the dgx-h100-superpod
preset (128 DGX H100 nodes, 4 scalable units, rail-optimised NDR fat tree): every GPU sends
1 GiB / 1,024 to each of the 1,023 others, 1,047,552 flows at once, with max-min fair sharing
of every link. Then the same at 128, 256 and 512 GPUs, to show how the cost grows with the GPU
count (flows grow as n^2). One JSON line per size, each in a fresh process; wall_s runs from
loading the cluster to the finished simulation (decomposition into flows and routes included;
imports excluded).

    python benchmarks/alltoall_1024.py          # 128, 256, 512, 1024
    python benchmarks/alltoall_1024.py 1024     # one size, in this process"""

from __future__ import annotations

import json
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
    return {"gpus": gpus, "flows": res.flows.flows, "wall_s": round(wall, 3), "sim_time_s": res.time_s,
            "rate_updates": res.flows.rate_updates, "closed_form_time_s": closed.time_s}


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]]
    if len(sizes) == 1:
        print(json.dumps(run(sizes[0])), flush=True)
    else:
        for n in sizes or [128, 256, 512, 1024]:
            subprocess.run([sys.executable, __file__, str(n)], check=True)
