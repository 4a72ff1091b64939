"""Wall seconds to plan a training layout (one JSON line per figure).

Issue 5's target: the 1T-parameter GPT of Narayanan et al. 2021 / Korthikanti et al. 2022 (128 layers,
h 25600, 160 heads, vocab 51200, seq 2048) on 3,072 A100-80GB of the ``selene`` cluster preset with
global batch 3072, planned in under 60 s on this machine. Prints the layouts enumerated, those within
the GPU's memory, those simulated, the wall time (estimate phase and simulation phase) and the plan.
Usage: python benchmarks/plan_train_speed.py [--top K]
"""

from __future__ import annotations

import argparse
import json

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from planners.train import plan_train
from sim.training import simulate_training
from workloads.train_ops import Recompute, TrainLayout, load_train_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    model = load_train_model("gpt:layers=128,hidden=25600,heads=160,vocab=51200", 2048)
    gpu = load_gpu("a100-sxm-80gb")
    cl = load_cluster("selene", gpus=3072)
    plan = plan_train(model, gpu, cl, 3072, 3072, seq=2048, top=args.top)
    print(json.dumps({"benchmark": "plan_train_1t_3072", "layouts_enumerated": plan.enumerated,
                      "layouts_fit_memory": plan.fit, "layouts_simulated": plan.simulated,
                      "wall_s": round(plan.wall_s, 2), "estimate_wall_s": round(plan.stats["estimate_wall_s"], 2),
                      "simulate_wall_s": round(plan.stats["simulate_wall_s"], 2), "plan": plan.best.label(),
                      "step_time_s": round(plan.best.step_time_s, 3),
                      "estimate_s": round(plan.best.estimate_s, 3),
                      "runner_ups": [(c.label(), round(c.step_time_s, 3)) for c in plan.runner_ups]}))
    # the layout of Narayanan et al. 2021, Table 1 (TP 8, PP 64, DP 6, micro-batch 1, full recompute),
    # simulated under the same defaults (bf16, FlashAttention), for the planner's gain
    paper = TrainLayout(tp=8, pp=64, dp=6, micro_batch=1, global_batch=3072, seq=2048, recompute=Recompute.FULL)
    rep = simulate_training(model, paper, gpu, cl)
    print(json.dumps({"benchmark": "plan_train_1t_3072_reference_layout", "layout": "tp8 pp64 dp6 mb1 1f1b full",
                      "step_time_s": round(rep.step_time_s, 3),
                      "plan_speedup": round(rep.step_time_s / plan.best.step_time_s, 3)}))


if __name__ == "__main__":
    main()
