"""NIC-aware placement's gain on the ``hetero-nic`` preset (one JSON line per figure).

A GPT-3 2.7B-shaped model (Brown et al. 2020, Table 2.1: 32 layers, h 2560, 32 heads; vocab 51200, seq
2048) on the 24 DGX A100 nodes of ``hetero-nic`` (8 HDR InfiniBand x8, 8 RoCE 200G x4, 8 TCP 100G x2):
for fixed layouts and for ``plan train``'s plan, the NIC-aware placement (Holmes, Yang et al. 2023,
arXiv:2312.03549; :func:`planners.train.place_nic_aware`) against Megatron's default order over the node
list, both simulated. Usage: python benchmarks/train_placement.py
"""

from __future__ import annotations

import json
import time

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from planners.train import place_nic_aware, plan_train
from workloads.train_ops import Recompute, TrainLayout, load_train_model

MODEL = "gpt:layers=32,hidden=2560,heads=32,vocab=51200"
BATCH = 96


def main() -> None:
    model = load_train_model(MODEL, 2048)
    gpu = load_gpu("a100-sxm-80gb")
    full = load_cluster("hetero-nic")
    for tp, pp, dp in ((8, 2, 6), (8, 4, 6), (8, 8, 3), (8, 2, 12)):
        lay = TrainLayout(tp=tp, pp=pp, dp=dp, micro_batch=1, global_batch=BATCH, seq=2048, sequence_parallel=True,
                          recompute=Recompute.SELECTIVE)
        t0 = time.perf_counter()
        pl = place_nic_aware(model, lay, gpu, full)
        print(json.dumps({"benchmark": "train_placement_hetero_nic", "model": MODEL, "gpus": lay.gpus,
                          "layout": f"tp{tp} pp{pp} dp{dp} mb1 1f1b selective sp", "global_batch": BATCH,
                          **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in pl.to_dict().items()},
                          "wall_s": round(time.perf_counter() - t0, 2)}))
    for gpus in (96, 192):
        plan = plan_train(model, gpu, load_cluster("hetero-nic", gpus=gpus), gpus, BATCH, top=5,
                          placement_cluster=full)
        pl = plan.best.placement
        assert pl is not None
        print(json.dumps({"benchmark": "plan_train_hetero_nic", "model": MODEL, "gpus": gpus, "global_batch": BATCH,
                          "plan": plan.best.label(),
                          **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in pl.to_dict().items()},
                          "wall_s": round(plan.wall_s, 2)}))


if __name__ == "__main__":
    main()
