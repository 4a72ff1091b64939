"""Wall seconds to simulate one training step (one JSON line per figure).

The 1T GPT of Korthikanti et al. 2022 (128 layers, h 25600) with TP 8, PP 64 and 1F1B: on 512 GPUs
(Table 5's run, 512 micro-batches) and on 3,072 GPUs (DP 6, global batch 3072: the issue's example,
512 micro-batches per replica). The 3,072-GPU run needs 384 DGX A100 nodes: ``dgx-a100-superpod``
stops at 140, so it runs on a Selene-sized cluster written here (560 DGX A100, the same SuperPOD
fabric: NVIDIA, "Selene" TOP500 entry, 2020-2021: 4,480 A100s). ``pipeline_runs``: the distinct DP
replicas simulated (replicas whose stage-to-stage sends cost the same share one pipeline run; at 3,072
GPUs the 6 replicas' sends cross the 20-node leaf units at different stages, 3 distinct sets).
Wall time is the best of 5 (the machine is shared). Usage: python benchmarks/train_speed.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from sim.training import simulate_training
from workloads.train_ops import Recompute, TrainLayout, load_train_model

SELENE = """[cluster]
name = "Selene-sized DGX SuperPOD (560 DGX A100, HDR InfiniBand)"
source = "NVIDIA Selene (TOP500 2020-2021): 4,480 A100 in DGX A100 SuperPOD scalable units of 20 nodes"
[[groups]]
node = "dgx-a100"
nodes = 560
[fabric]
nodes_per_leaf = 20
rail_optimised = true
spines = 20
oversubscription = 1.0
switch_latency_ns = 130
"""


def main() -> None:
    model = load_train_model("gpt:layers=128,hidden=25600,heads=160,vocab=51200")
    gpu = load_gpu("a100-sxm-80gb")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "selene.toml"
        path.write_text(SELENE)
        for gpus, dp, gb in ((512, 1, 512), (3072, 6, 3072)):
            cl = load_cluster(path, gpus=gpus)
            lay = TrainLayout(tp=8, pp=64, dp=dp, global_batch=gb, recompute=Recompute.FULL)
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                rep = simulate_training(model, lay, gpu, cl)
                best = min(best, time.perf_counter() - t0)
            print(json.dumps({"benchmark": "train_step_1t_pp64", "gpus": gpus, "micro_batches": lay.num_micro_batches,
                              "pipeline_runs": rep.pipeline_runs, "wall_s": round(best, 4),
                              "simulated_step_s": round(rep.step_time_s, 3)}))


if __name__ == "__main__":
    main()
