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


# Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM"
# (SC'21, arXiv:2104.04473), Table 1 ("weak-scaling throughput for GPT models ranging from 1 billion to 1
# trillion parameters"), as published, one row per model: Selene (DGX A100-80GB, 8 HDR 200G per node), seq
# 2048, vocab 51,200, mixed precision (fp16), activation recomputation, achieved teraFLOP/s per GPU counted
# with the recompute (the paper's 96 B s l h^2 (1 + s/6h + V/16lh) form: our ``hardware_tflops_per_gpu``).
# name: (heads, hidden, layers, TP, PP, GPUs, global batch, published TFLOP/s per GPU)
TABLE1_2021: dict[str, tuple[int, int, int, int, int, int, int, float]] = {
    "1.7B": (24, 2304, 24, 1, 1, 32, 512, 137.0),
    "3.6B": (32, 3072, 30, 2, 1, 64, 512, 138.0),
    "7.5B": (32, 4096, 36, 4, 1, 128, 512, 142.0),
    "18.4B": (48, 6144, 40, 8, 1, 256, 1024, 135.0),
    "39.1B": (64, 8192, 48, 8, 2, 512, 1536, 138.0),
    "76.1B": (80, 10240, 60, 8, 4, 1024, 1792, 140.0),
    "145.6B": (96, 12288, 80, 8, 8, 1536, 2304, 148.0),
    "310.1B": (128, 16384, 96, 8, 16, 1920, 2160, 155.0),
    "529.6B": (128, 20480, 105, 8, 35, 2520, 2520, 163.0),
    "1008.0B": (160, 25600, 128, 8, 64, 3072, 3072, 163.0),
}


def table1_2021(name: str) -> tuple[float, float]:
    """(simulated, published) TFLOP/s per GPU with recompute of one row of Narayanan et al. 2021 Table 1.
    What the table does not state is set once for every row, before any comparison, not per row: micro-batch
    1 (as the Table 5 runs of the same code), the non-interleaved 1F1B schedule, Megatron-LM of the time
    (fp16, unfused attention, no sequence parallelism), full recompute, the selene cluster preset."""
    a, h, layers, tp, pp, gpus, gb, published = TABLE1_2021[name]
    m = load_train_model(f"gpt:layers={layers},hidden={h},heads={a},vocab=51200")
    lay = TrainLayout(tp=tp, pp=pp, dp=gpus // (tp * pp), micro_batch=1, global_batch=gb, dtype=DType.FP16,
                      attention=AttentionImpl.UNFUSED, recompute=Recompute.FULL)
    rep = simulate_training(m, lay, load_gpu("a100-sxm-80gb"), load_cluster("selene", gpus=gpus))
    return rep.hardware_tflops_per_gpu, published
