"""The training-step simulation: schedules, the two pipeline engines, bad input, the CLI, and the
published Selene iteration times of Korthikanti et al. 2022, Table 5 (../shared/data/README.md)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from sim.training import PipelineEngine, _run_list, _run_simpy, schedule_items, simulate_training
from sim.training_validation import TABLE1_2021, table1_2021, table5
from workloads.errors import ConfigError
from workloads.ops import DType
from workloads.train_ops import (
    AttentionImpl,
    Recompute,
    Schedule,
    TrainLayout,
    check_layout,
    layer_passes,
    load_train_model,
    model_flops_per_iteration,
)
from xpusim.cli import cli

GPT = "gpt:layers={},hidden={},heads={},vocab=51200"


def _pipeline(schedule: Schedule, p: int, n: int, v: int, f: int, b: int, send: int = 0):  # type: ignore[no-untyped-def]
    lists = [schedule_items(schedule, p, s, n, v) for s in range(p)]
    dur = {(s, c, fw): (f if fw else b) // v for s in range(p) for c in range(v) for fw in (True, False)}
    sends = {(s, d): send for s in range(p) for d in range(p)}
    return lists, dur, sends


@pytest.mark.parametrize(("schedule", "v"), [(Schedule.GPIPE, 1), (Schedule.ONE_F_ONE_B, 1), (Schedule.INTERLEAVED, 2),
                                             (Schedule.INTERLEAVED, 4)])
def test_bubble_matches_the_schedule_formula(schedule: Schedule, v: int) -> None:
    """Equal stages, free sends: the step is (m + (p-1)/v) (F + B) (Narayanan et al. 2021, Sec. 2.2: the
    bubble of GPipe and 1F1B is (p-1)(F+B), interleaving with v chunks divides it by v)."""
    p, n, f, b = 4, 8, 1000, 2000
    lists, dur, sends = _pipeline(schedule, p, n, v, f, b)
    tl = _run_list(lists, dur, sends, p, v, False)
    assert max(tl.end_ns) == (n * (f + b)) + (p - 1) * (f + b) // v
    assert all(x == n * (f + b) for x in tl.busy_ns)


@pytest.mark.parametrize(("schedule", "v"), [(Schedule.GPIPE, 1), (Schedule.ONE_F_ONE_B, 1), (Schedule.INTERLEAVED, 3)])
def test_engines_agree(schedule: Schedule, v: int) -> None:
    """The list scheduler gives the SimPy event simulation's times exactly (uneven stages, sends)."""
    p, n = 6, 12
    lists, dur, sends = _pipeline(schedule, p, n, v, 900, 2100, send=37)
    dur = {k: d + 13 * k[0] for k, d in dur.items()}  # stage s slower by 13 ns per item and stage
    a = _run_simpy(lists, dur, sends, p, v, True)
    b = _run_list(lists, dur, sends, p, v, True)
    assert (a.busy_ns, a.end_ns, a.comm_ns, a.last_bwd) == (b.busy_ns, b.end_ns, b.comm_ns, b.last_bwd)
    assert sorted(a.events) == sorted(b.events)


def test_schedule_items_cover_every_pass() -> None:
    for sch, v in ((Schedule.GPIPE, 1), (Schedule.ONE_F_ONE_B, 1), (Schedule.INTERLEAVED, 2)):
        for s in range(4):
            items = schedule_items(sch, 4, s, 8, v)
            assert sorted(items) == sorted((fw, m, c) for fw in (True, False) for m in range(8) for c in range(v))


def test_flops_formula() -> None:
    """Narayanan et al. 2021: 72 B s l h^2 (1 + s/6h + V/12lh); with full recompute 96 (.. V/16lh)."""
    m = load_train_model(GPT.format(96, 12288, 96))
    lay = TrainLayout(tp=8, pp=8, global_batch=64)
    B, s, L, h, V = 64, 2048, 96, 12288, 51200
    assert model_flops_per_iteration(m, lay) == pytest.approx(
        72 * B * s * L * h * h * (1 + s / (6 * h) + V / (12 * L * h)))
    assert model_flops_per_iteration(m, lay, Recompute.FULL) == pytest.approx(
        96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h)))


def test_layer_flops_are_megatrons() -> None:
    """A layer's forward GEMM + attention FLOPs (unfused, full s x s scores) per GPU: (24 s b h^2 + 4 s^2 b h) / t."""
    m = load_train_model(GPT.format(4, 4096, 32))
    lay = TrainLayout(tp=4, seq=2048, micro_batch=2, global_batch=2, attention=AttentionImpl.UNFUSED)
    fl = sum(op.flops for op in layer_passes(m, lay).forward if op.op is not None and op.op.kind.value == "gemm")
    assert fl == pytest.approx((24 * 2048 * 2 * 4096**2 + 4 * 2048**2 * 2 * 4096) / 4)


@pytest.mark.parametrize(("kw", "gpus", "needle"), [
    ({"tp": 8, "pp": 8, "dp": 3}, 512, "8 x 8 x 3 = 192 is not the GPU count 512"),
    ({"tp": 7, "pp": 8, "dp": 1}, 56, "160 attention heads are not divisible by tp=7"),
    ({"tp": 8, "pp": 48, "dp": 1}, 384, "128 layers are not divisible by pp x virtual stages = 48 x 1 = 48"),
    ({"tp": 8, "pp": 32, "dp": 1, "schedule": Schedule.INTERLEAVED, "virtual_stages": 3}, 256, "32 x 3 = 96"),
    ({"tp": 8, "pp": 1, "dp": 1, "schedule": Schedule.INTERLEAVED, "virtual_stages": 2}, 8,
     "needs pp > 1"),
    ({"tp": 8, "pp": 8, "dp": 8, "global_batch": 100}, 512,
     "global batch 100 is not divisible by dp x micro-batch = 8 x 1 = 8"),
])
def test_bad_layouts(kw: dict, gpus: int, needle: str) -> None:
    m = load_train_model(GPT.format(128, 25600, 160))
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_layout(m, TrainLayout(**{"global_batch": 512, **kw}), gpus)


def test_inline_model_errors() -> None:
    with pytest.raises(ConfigError, match="lacks vocab"):
        load_train_model("gpt:layers=2,hidden=64,heads=4")
    with pytest.raises(ConfigError, match="unknown GPT field 'depth'"):
        load_train_model("gpt:depth=2,hidden=64,heads=4,vocab=10")


def test_dp_overlap_straggler_and_zero() -> None:
    """DP gradient buckets overlap the last backward (exposed < the whole reduction); a 1.2x straggler
    stage slows the step; ZeRO-1 adds the parameter all-gather."""
    m = load_train_model(GPT.format(32, 4096, 32))
    gpu, cl = load_gpu("a100-sxm-80gb"), load_cluster("dgx-a100-superpod", gpus=64)
    lay = TrainLayout(tp=8, pp=2, dp=4, global_batch=32, recompute=Recompute.SELECTIVE, sequence_parallel=True)
    base = simulate_training(m, lay, gpu, cl)
    slow = simulate_training(m, lay, gpu, cl, stage_slowdown={1: 1.2})
    z1 = simulate_training(m, TrainLayout(**{**lay.__dict__, "zero": 1}), gpu, cl)
    assert slow.step_time_s > base.step_time_s
    assert 0.0 <= base.exposed_comm_s["dp_grad_reduce"] < base.step_time_s
    assert "dp_param_all_gather" in z1.exposed_comm_s
    assert z1.memory.total < base.memory.total
    assert 0 < base.mfu < 1 and base.bubble_fraction > 0


def test_cli_json_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = CliRunner()
    args = ["simulate", "train", "--model", GPT.format(32, 4096, 32), "--hardware", "a100-sxm-80gb",
            "--cluster", "dgx-a100-superpod", "--global-batch", "16", "--recompute", "selective", "--sequence-parallel"]
    tl = tmp_path / "t.json"
    res = r.invoke(cli, [*args, "--gpus", "32", "--tp", "8", "--pp", "4", "--json", "--timeline", str(tl)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {"step_time_s", "tflops_per_gpu", "mfu", "bubble_fraction", "memory_gib_per_gpu"} <= set(out)
    trace = json.loads(tl.read_text())
    assert sum(e["ph"] == "X" and e["cat"] in ("forward", "backward") for e in trace["traceEvents"]) == 4 * 16 * 2
    bad = r.invoke(cli, [*args, "--gpus", "30", "--tp", "8", "--pp", "4"])
    assert bad.exit_code == 2 and "8 x 4 x 1 = 32 is not the GPU count 30" in bad.output
    # interleaved without a pipeline: one clear error, not a KeyError from the schedule
    one = r.invoke(cli, [*args, "--gpus", "8", "--tp", "8", "--schedule", "interleaved", "--virtual-stages", "2"])
    assert one.exit_code == 2 and "needs pp > 1" in one.output and "Traceback" not in one.output


# ---- Korthikanti et al. 2022, Table 5: Selene (DGX A100 80GB, 8 HDR per node), seq 2048, fp16 --------------
# the rows and their published times: sim/training_validation.py
# simulated / published - 1 as built (cublas stack, A100 calibration, Megatron-2022 unfused attention, the
# Megatron-2022 passes: fp32 main_grad accumulation in the weight-gradient GEMMs, bias gradients, the
# vocab-parallel cross-entropy, the optimizer's unscale / grad-norm / copy / zero-grad passes and the
# tied-embedding all-reduce): the figures docs/training.md quotes; none of them was used to set a constant
REACHED = {("22B", "full"): -0.078, ("22B", "sel"): -0.124, ("175B", "full"): -0.087, ("175B", "sel"): -0.118,
           ("530B", "full"): -0.095, ("530B", "sel"): -0.128, ("1T", "full"): -0.091, ("1T", "sel"): -0.097}


@pytest.mark.parametrize(("name", "mode"), [("175B", "full"), ("1T", "full"), ("1T", "sel")])
def test_table5_targets(name: str, mode: str) -> None:
    """Issue 5's targets: GPT-3 175B full recompute and 1T (full; SP + selective) within 10%."""
    sim, paper = table5(name, mode)
    assert sim == pytest.approx(paper, rel=0.10)


@pytest.mark.parametrize(("name", "mode"), sorted(REACHED))
def test_table5_figures_as_documented(name: str, mode: str) -> None:
    """Every Table 5 row at the figure docs/training.md quotes (to 0.005), so a change that moves the
    validation shows here; the model stays fast on every row (the sign, not a tolerance)."""
    sim, paper = table5(name, mode)
    assert sim / paper - 1 == pytest.approx(REACHED[name, mode], abs=0.005)
    assert sim < paper


def test_wgrad_accumulates_into_fp32_main_grad() -> None:
    """The 1T QKV weight gradient (25600 x 9600 over 2048 tokens, fp16, TP 8) accumulating into fp32
    main_grad: the C traffic grows by 6 B per element (fp32 read + write instead of a 16-bit write), 1.47 GB.
    The kernel is compute-bound, so the added time lies between 0 and that traffic streamed at full HBM
    bandwidth (2.04 TB/s, A100 80GB) plus the epilogue's share (bounded here by the same traffic at the L2
    port's rate, which is higher)."""
    from sim.training import StageCosts
    from workloads.ops import Gemm

    g = Gemm("qkv_proj_wgrad", 25600, 9600, 2048, DType.FP16)
    costs = StageCosts(load_gpu("a100-sxm-80gb"))
    plain, acc = costs.kernels.time(g), costs.fp32_accumulate_time(g)
    extra_bytes = 6.0 * 25600 * 9600
    assert 0 < acc - plain < 2 * extra_bytes / 2.039e12


def test_bias_grads_and_tied_embedding_all_reduce() -> None:
    """A Megatron GPT layer's backward reduces four bias gradients (QKV, O, FC1, FC2); a bias-free Llama
    none. With PP > 1 the first and last stage all-reduce the tied embedding's gradient; PP 1 does not."""
    gpt = load_train_model(GPT.format(4, 1024, 16))
    names = [op.name for op in layer_passes(gpt, TrainLayout(tp=2, global_batch=2)).backward]
    assert sum(n.endswith("_bias_grad") for n in names) == 4
    llama = load_train_model("llama-2-13b")
    assert not any(op.name.endswith("_bias_grad")
                   for op in layer_passes(llama, TrainLayout(tp=2, global_batch=2)).backward)
    gpu, cl = load_gpu("a100-sxm-80gb"), load_cluster("dgx-a100-superpod", gpus=8)
    two = simulate_training(gpt, TrainLayout(tp=2, pp=2, global_batch=4), gpu, cl)
    one = simulate_training(gpt, TrainLayout(tp=2, pp=1, global_batch=4), gpu, cl)
    assert two.exposed_comm_s["pp_embedding_all_reduce"] > 0
    assert "pp_embedding_all_reduce" not in one.exposed_comm_s


def test_engine_by_name_and_unknown_engine() -> None:
    """``engine`` by name runs the same engine as the enum (identical step time; the two engines agree,
    as the schedule tests above assert); an unknown name is a ConfigError naming it and the known ones."""
    gpt = load_train_model(GPT.format(4, 1024, 16))
    gpu, cl = load_gpu("a100-sxm-80gb"), load_cluster("dgx-a100-superpod", gpus=8)
    lay = TrainLayout(tp=2, pp=2, global_batch=4)
    by_name = simulate_training(gpt, lay, gpu, cl, engine="simpy")
    by_enum = simulate_training(gpt, lay, gpu, cl, engine=PipelineEngine.SIMPY)
    default = simulate_training(gpt, lay, gpu, cl)
    assert by_name.step_time_s == by_enum.step_time_s == default.step_time_s
    with pytest.raises(ConfigError, match="unknown pipeline engine 'heap'; known: list, simpy"):
        simulate_training(gpt, lay, gpu, cl, engine="heap")


def test_selective_recompute_flops_follow_what_runs() -> None:
    """Selective recompute re-runs the unfused attention core (its FLOPs counted: 4 B s^2 h l more,
    Korthikanti et al. 2022 Sec. 5); with FlashAttention it re-runs nothing, so it costs no time and the
    hardware FLOPs equal the model FLOPs (HFU = MFU)."""
    m = load_train_model(GPT.format(4, 4096, 32))
    gpu, cl = load_gpu("a100-sxm-80gb"), load_cluster("dgx-a100-superpod", gpus=8)
    lay = TrainLayout(tp=8, global_batch=4, recompute=Recompute.SELECTIVE, sequence_parallel=True)
    none = TrainLayout(**{**lay.__dict__, "recompute": Recompute.NONE})
    flash, flash0 = simulate_training(m, lay, gpu, cl), simulate_training(m, none, gpu, cl)
    assert layer_passes(m, lay).recompute == ()
    assert flash.step_time_s == flash0.step_time_s
    assert flash.hardware_tflops_per_gpu == flash.tflops_per_gpu and flash.hfu == flash.mfu
    unf = TrainLayout(**{**lay.__dict__, "attention": AttentionImpl.UNFUSED})
    rep = simulate_training(m, unf, gpu, cl)
    extra = 4.0 * 4 * 2048**2 * 4096 * 4 / rep.step_time_s / 8 / 1e12
    assert rep.hardware_tflops_per_gpu == pytest.approx(rep.tflops_per_gpu + extra, rel=1e-12)


def test_timeline_has_communication_spans(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PP 2, DP 2, TP 4 on one DGX node's 16 GPUs: the trace holds, per stage, a TP track (one summarised span
    per chunk, as long as the chunk's TP collectives), a pipeline-send track (one send per forward / backward
    that has a consumer on the other stage) and a DP track (every gradient bucket's reduction, none before
    its chunk's last backward started), each span at the simulation's start and end."""
    m = load_train_model(GPT.format(4, 4096, 32))
    gpu, cl = load_gpu("a100-sxm-80gb"), load_cluster("dgx-a100-superpod", gpus=16)
    lay = TrainLayout(tp=4, pp=2, dp=2, global_batch=8, recompute=Recompute.SELECTIVE, sequence_parallel=True)
    rep = simulate_training(m, lay, gpu, cl, record_events=True)
    n = lay.num_micro_batches
    kinds = [e[1] for e in rep.events]
    assert kinds.count("F") == kinds.count("B") == 2 * n
    assert kinds.count("TPF") == kinds.count("TPB") == 2 * n
    # stage 0 sends each forward's output on, stage 1 each backward's input gradient back
    assert sorted((e[0], e[1]) for e in rep.events if e[1] in ("SF", "SB")) == [(0, "SF")] * n + [(1, "SB")] * n
    # a chunk's TP span starts with the chunk; the DP buckets' stream is FIFO (no overlap on a stage's track)
    fwd0 = next(e for e in rep.events if e[1] == "F" and e[0] == 0)
    tp0 = next(e for e in rep.events if e[1] == "TPF" and e[0] == 0 and e[2] == fwd0[2])
    assert tp0[4] == fwd0[4] and tp0[5] - tp0[4] > 0
    for s in range(2):
        dp = sorted((e[4], e[5]) for e in rep.events if e[1] == "DP" and e[0] == s)
        last_b = max(e[4] for e in rep.events if e[1] == "B" and e[0] == s)
        assert dp and dp[0][0] >= last_b and all(a[1] <= b[0] for a, b in zip(dp, dp[1:], strict=False))
    tl = tmp_path / "t.json"
    from xpusim.commands.train_cmd import train_chrome_trace

    tl.write_text(train_chrome_trace(rep))
    ev = json.loads(tl.read_text())["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    by_cat: dict[str, set[str]] = {}
    for e in ev:
        if e["ph"] == "X":
            by_cat.setdefault(e["cat"], set()).add(names[e["pid"], e["tid"]])
    assert by_cat["pp_send"] == {"stage 0 pipeline sends", "stage 1 pipeline sends"}
    assert by_cat["dp_reduce"] == {"stage 0 DP reduction", "stage 1 DP reduction"}
    assert by_cat["tp"] == {"stage 0 TP collectives", "stage 1 TP collectives"}
    assert by_cat["forward"] == {"stage 0", "stage 1"}


# Narayanan et al. 2021 Table 1 (held out, sim/training_validation.py): the error reached per row, as
# benchmarks/train_table1.py prints it and docs/training.md quotes it; not a target the model was tuned to
TABLE1_REACHED = {"3.6B": 0.0987, "7.5B": -0.0122, "18.4B": -0.0859, "39.1B": 0.0596, "1008.0B": 0.1864}


@pytest.mark.parametrize("name", sorted(TABLE1_REACHED))
def test_narayanan2021_table1_figures_as_documented(name: str) -> None:
    """Held-out rows of Narayanan et al. 2021 Table 1 (achieved TFLOP/s per GPU with recompute) at the error
    docs/training.md quotes (to 0.005). The first four meet the issue's 10 % aim; the 1T row does not (19 %
    fast: the model follows Megatron-LM 2022, and the 2021 code was slower on the same run)."""
    sim, paper = table1_2021(name)
    assert paper == TABLE1_2021[name][-1]
    assert sim / paper - 1 == pytest.approx(TABLE1_REACHED[name], abs=0.005)
    assert (abs(sim / paper - 1) <= 0.10) == (name != "1008.0B")
