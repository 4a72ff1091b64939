"""Speed of the serving simulation: the whole Azure 2023 conversation trace (19,366 requests, 1 h) on
8 replicas of Llama-3.1-8B on H100, then the trace repeated 2x and 4x (same hour, 2x / 4x the
requests on 2x / 4x the replicas, so cost should grow linearly). One JSON line per run, each run in a
fresh process; wall_s runs from reading the trace to the finished summary (imports of numpy/simpy
excluded, building the step-time tables included).

    python benchmarks/serve_speed.py          # 1x, 2x, 4x
    python benchmarks/serve_speed.py 1        # one scale, in this process"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "azure_llm_2023_conv.csv"


def run(scale: int) -> dict:
    from hwmodels.gpu import load_gpu
    from sim.config import ServeConfig
    from sim.metrics import summarize
    from sim.serving import simulate_serving
    from workloads.catalog import load_model
    from workloads.requests import Request
    from workloads.traces import read_azure_csv

    t0 = time.perf_counter()
    base = read_azure_csv(TRACE)
    # copy k of the trace: ids shifted by k x its length (copy 0 is the trace itself)
    reqs = base + [Request(k * len(base) + r.id, r.arrival_s, r.prompt_tokens, r.output_tokens)
                   for k in range(1, scale) for r in base]
    res = simulate_serving(load_model("llama-3.1-8b"), load_gpu("h100-sxm-80gb"), reqs,
                           ServeConfig(replicas=8 * scale))
    summarize(res)
    wall = time.perf_counter() - t0
    return {"requests": len(reqs), "replicas": 8 * scale, "wall_s": round(wall, 3),
            "req_per_s": round(len(reqs) / wall, 1)}


if __name__ == "__main__":
    if not TRACE.exists():
        print(json.dumps({"benchmark": "serve_speed", "skipped": f"trace not found: {TRACE}"}), flush=True)
        sys.exit(0)
    scales = [int(a) for a in sys.argv[1:]]
    if len(scales) == 1:
        print(json.dumps(run(scales[0])), flush=True)
    else:
        # each scale in a fresh process: whole-process cost, no tables or caches carried over
        for s in scales or [1, 2, 4]:
            subprocess.run([sys.executable, __file__, str(s)], check=True)
