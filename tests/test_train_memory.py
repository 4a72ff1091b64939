"""Training memory per GPU against Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", arXiv:2205.05198): Table 2's per-layer activation equations (every recompute mode)
and Figure 1's per-GPU GiB figures of the four Table 5 models (seq 2048, TP 8; 22B micro-batch 4, PP 1;
175B PP 8 and 530B PP 35 interleaved with 3 chunks; 1T PP 64), as listed in ../shared/data/README.md."""

from __future__ import annotations

import pytest

from hwmodels.train_memory import GIB, activation_bytes_per_layer, check_fits, train_memory
from workloads.errors import CapacityError
from workloads.train_ops import Recompute, Schedule, TrainLayout, load_train_model

S, B, H, A, T = 2048, 1, 12288, 96, 8  # GPT-3 175B, one micro-batch


@pytest.mark.parametrize(("sp", "rc", "coef"), [
    # Table 2, written out by hand: coefficient of s*b*h
    (False, Recompute.NONE, 10 + 24 / T + 5 * A * S / (H * T)),
    (True, Recompute.NONE, 34 / T + 5 * A * S / (H * T)),
    (False, Recompute.SELECTIVE, 10 + 24 / T),
    (True, Recompute.SELECTIVE, 34 / T),
    (False, Recompute.FULL, 2.0),
    (True, Recompute.FULL, 2.0),
])
def test_table2_per_layer(sp: bool, rc: Recompute, coef: float) -> None:
    assert activation_bytes_per_layer(S, B, H, A, T, sequence_parallel=sp, recompute=rc) == pytest.approx(
        S * B * H * coef, rel=1e-12)


def test_no_parallelism_is_34_plus_5as_over_h() -> None:
    assert activation_bytes_per_layer(S, B, H, A, 1) == pytest.approx(S * B * H * (34 + 5 * A * S / H), rel=1e-12)
    # TP 1 with and without SP agree: both are the unsplit layer
    unsplit = activation_bytes_per_layer(S, B, H, A, 1)
    assert activation_bytes_per_layer(S, B, H, A, 1, sequence_parallel=True) == unsplit


GPT = "gpt:layers={},hidden={},heads={},vocab=51200"
# name: (layers, hidden, heads, pp, micro-batch, global batch, chunks, Fig. 1 states GiB, no-recompute GiB, seq+sel GiB)
FIG1 = {
    "22B": (48, 6144, 64, 1, 4, 4, 1, 45.6, 59.3, 9.6),
    "175B": (96, 12288, 96, 8, 1, 64, 3, 45.6, 66.8, 12.4),
    "530B": (105, 20480, 128, 35, 1, 280, 3, 31.6, 114.0, 23.1),
    "1T": (128, 25600, 160, 64, 1, 512, 1, 33.0, 131.3, 26.6),
}


@pytest.mark.parametrize("name", sorted(FIG1))
def test_figure1(name: str) -> None:
    """Figure 1 is reproduced to its printed 0.1 GiB by Table 2 x layers x the interleaving factor
    1 + (p-1)/(p m), and model states at Megatron's 18 B/param over the layers' parameters only (the
    figure leaves the embedding out; with it the first stage holds 0.7-2.9 GiB more)."""
    L, h, a, p, b, gb, v, states, none, sel = FIG1[name]
    model = load_train_model(GPT.format(L, h, a))
    sched = Schedule.INTERLEAVED if v > 1 else Schedule.ONE_F_ONE_B
    for rc, sp, want in ((Recompute.NONE, False, none), (Recompute.SELECTIVE, True, sel)):
        lay = TrainLayout(tp=8, pp=p, micro_batch=b, global_batch=gb, recompute=rc, sequence_parallel=sp,
                          schedule=sched, virtual_stages=v)
        mem = train_memory(model, lay, layers_only=True)
        assert mem.activations / GIB == pytest.approx(want, abs=0.051)
        assert mem.model_states / GIB == pytest.approx(states, abs=0.051)
        assert train_memory(model, lay).model_states > mem.model_states


def test_zero_stages_shard_states() -> None:
    """ZeRO (Rajbhandari et al. 2020, Sec. 3.1; 16-bit gradients: 2 + 2 + 12 B/param): stage 1 divides the
    12 B of optimizer states by d, stage 2 also the gradients, stage 3 also the weights."""
    model = load_train_model(GPT.format(24, 2048, 16))
    d = 8
    base = TrainLayout(dp=d, global_batch=8)
    per = {z: train_memory(model, TrainLayout(dp=d, global_batch=8, zero=z), grad_bytes=2) for z in range(4)}
    n = per[0].params_per_gpu
    assert per[0].model_states == pytest.approx(16 * n)
    assert per[1].model_states == pytest.approx((2 + 2 + 12 / d) * n)
    assert per[2].model_states == pytest.approx((2 + (2 + 12) / d) * n)
    assert per[3].model_states == pytest.approx(16 / d * n)
    assert train_memory(model, base).gradients == pytest.approx(4 * n)  # Megatron's fp32 main_grad


def test_pipeline_in_flight() -> None:
    """1F1B: stage i holds min(p - i, m) micro-batches of its L/p layers; GPipe all m."""
    model = load_train_model(GPT.format(32, 4096, 32))
    one = activation_bytes_per_layer(2048, 1, 4096, 32, 1)
    lay = TrainLayout(pp=4, global_batch=16)
    assert train_memory(model, lay).activations == pytest.approx(one * 8 * 4)
    assert train_memory(model, lay, stage=3).activations == pytest.approx(one * 8 * 1)
    gp = TrainLayout(pp=4, global_batch=16, schedule=Schedule.GPIPE)
    assert train_memory(model, gp).activations == pytest.approx(one * 8 * 16)


def test_capacity_error_carries_breakdown() -> None:
    model = load_train_model(GPT.format(128, 25600, 160))
    lay = TrainLayout(tp=8, pp=64, global_batch=512)  # no recompute: 131 GiB of activations (Fig. 1)
    with pytest.raises(CapacityError) as exc:
        check_fits(train_memory(model, lay), 80 * GIB, "1T")
    assert exc.value.breakdown["activations"] / GIB == pytest.approx(131.25, abs=0.01)
    assert "activations 131.25 GiB" in str(exc.value)
