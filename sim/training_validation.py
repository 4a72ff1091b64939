"""Published training runs the step simulation is checked against (figures with their sources).

Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models" (2022), Table 5:
iteration time in seconds on Selene (DGX A100-80GB, 8x HDR 200G per node), seq 2048, fp16, TP 8, no data
parallelism (../shared/data/README.md quotes it). Calculon's reproduction uses the interleaved schedule
with 3 virtual stages for 175B and 530B. These figures validate; no constant is set from them.
"""

from __future__ import annotations

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from sim.training import simulate_training
from workloads.ops import DType
from workloads.train_ops import AttentionImpl, Recompute, Schedule, TrainLayout, load_train_model

# name: (layers, hidden, heads, pp, micro-batch, global batch, interleaved chunks, full recompute s, SP+selective s)
TABLE5: dict[str, tuple[int, int, int, int, int, int, int, float, float]] = {
    "22B": (48, 6144, 64, 1, 4, 4, 1, 1.42, 1.10),
    "175B": (96, 12288, 96, 8, 1, 64, 3, 18.13, 13.75),
    "530B": (105, 20480, 128, 35, 1, 280, 3, 49.05, 37.83),
    "1T": (128, 25600, 160, 64, 1, 512, 1, 94.42, 71.49),
}
MODES = ("full", "sel")  # full recompute; sequence parallelism + selective recompute


def table5(name: str, mode: str) -> tuple[float, float]:
    """(simulated, published) iteration seconds of one Table 5 row: Megatron-LM 2022 as it ran then
    (fp16, unfused attention, 1F1B or interleaved), on the A100 calibration and the dgx-a100-superpod fabric."""
    layers, h, a, p, b, gb, v, full, sel = TABLE5[name]
    m = load_train_model(f"gpt:layers={layers},hidden={h},heads={a},vocab=51200")
    lay = TrainLayout(tp=8, pp=p, micro_batch=b, global_batch=gb, dtype=DType.FP16, attention=AttentionImpl.UNFUSED,
                      recompute=Recompute.FULL if mode == "full" else Recompute.SELECTIVE,
                      sequence_parallel=mode == "sel", schedule=Schedule.INTERLEAVED if v > 1 else Schedule.ONE_F_ONE_B,
                      virtual_stages=v)
    rep = simulate_training(m, lay, load_gpu("a100-sxm-80gb"), load_cluster("dgx-a100-superpod", gpus=8 * p))
    return rep.step_time_s, full if mode == "full" else sel
