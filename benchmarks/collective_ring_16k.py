"""Speed of the closed-form collectives: a ring all-reduce among 16,384 GPUs (2,048 DGX H100 nodes of
the dgx-h100-superpod preset), 1 GiB per rank. One JSON line per figure: the wall seconds of one
closed-form call (best of 20 after a warm-up; target < 10 ms), and, for context, of loading and sizing
the cluster preset (TOML read, node/leaf assignment; no graph is built).

    python benchmarks/collective_ring_16k.py"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPUS = 16384
NBYTES = 1 << 30


def main() -> None:
    from hwmodels.network.collectives import all_reduce
    from hwmodels.network.topology import load_cluster

    t0 = time.perf_counter()
    cluster = load_cluster("dgx-h100-superpod", gpus=GPUS)
    load_s = time.perf_counter() - t0
    all_reduce(cluster, NBYTES, algo="ring")  # warm-up: the parameter file is read once
    walls = []
    for _ in range(20):
        t0 = time.perf_counter()
        res = all_reduce(cluster, NBYTES, algo="ring")
        walls.append(time.perf_counter() - t0)
    print(json.dumps({"figure": "closed-form ring all-reduce", "gpus": GPUS, "bytes": NBYTES,
                      "wall_s": round(min(walls), 6), "target_s": 0.010, "simulated_time_s": round(res.time_s, 6),
                      "busbw_gb_per_s": round(res.busbw / 1e9, 1)}))
    print(json.dumps({"figure": "load and size the cluster preset", "gpus": GPUS, "wall_s": round(load_s, 4)}))


if __name__ == "__main__":
    main()
