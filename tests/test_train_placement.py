"""NIC-aware placement of pipeline stages and DP groups (Holmes, Yang et al. 2023, arXiv:2312.03549):
``simulate_training(..., placement=)`` and ``planners.train.place_nic_aware``.

No number here comes from a publication: the reference is the simulator itself. The ``hetero-nic``
preset (3 groups of 8 DGX A100: HDR InfiniBand x8, 200G RoCE x4, 100G TCP x2; one leaf unit per group,
2:1 oversubscribed to the spines) is what makes DP groups that span NIC groups slower: the ring is
bounded by its slowest member's NIC and by the oversubscribed uplinks (hwmodels/network/collectives.py,
``geometry``). The gains asserted are orderings the simulation derives, not numbers chosen here.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from planners.train import nic_groups, place_nic_aware
from sim.training import simulate_training
from workloads.errors import ConfigError
from workloads.train_ops import Recompute, Schedule, TrainLayout, load_train_model, model_flops_per_iteration
from xpusim.cli import cli

GPT = "gpt:layers=24,hidden=2048,heads=16,vocab=51200"     # ~1.3B parameters
GPU = load_gpu("a100-sxm-80gb")


def _layout(tp: int, pp: int, dp: int, gb: int = 48, **kw: object) -> TrainLayout:
    return TrainLayout(tp=tp, pp=pp, dp=dp, micro_batch=1, global_batch=gb, seq=2048, sequence_parallel=tp > 1,
                       recompute=Recompute.SELECTIVE, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("cluster", ["dgx-a100-superpod", "hetero-nic"])
@pytest.mark.parametrize("lay", [
    _layout(8, 2, 8, 64),
    _layout(4, 4, 8, 64, zero=1),
    _layout(2, 4, 16, 64, zero=3),
    _layout(8, 4, 4, 64, schedule=Schedule.INTERLEAVED, virtual_stages=2),
])
def test_identity_placement_reproduces_the_default(cluster: str, lay: TrainLayout) -> None:
    """The identity placement is the default rank order: every reported figure is equal, not close."""
    model = load_train_model(GPT, 2048)
    cl = load_cluster(cluster, gpus=128)
    a = simulate_training(model, lay, GPU, cl)
    b = simulate_training(model, lay, GPU, cl, placement=list(range(lay.gpus)))
    assert a.summary() == b.summary()
    assert a.stage_compute_s == b.stage_compute_s


def test_dp_across_nic_groups_is_slower_than_nic_aware() -> None:
    """96 GPUs of hetero-nic, TP 8, PP 2, DP 6 (6 nodes per stage). Megatron's order over the node list puts
    stage 1 on 2 InfiniBand + 4 RoCE nodes (its DP ring spans two NIC groups and leaf units); the NIC-aware
    placement puts each stage's DP groups inside one NIC group (6 IB, 6 RoCE nodes of the 24) and is faster."""
    model = load_train_model(GPT, 2048)
    full = load_cluster("hetero-nic")
    lay = _layout(8, 2, 6)
    label = {n: g.label for g in nic_groups(full) for n in g.nodes}
    gpn = full.gpus_per_node
    per_stage = lay.tp * lay.dp
    oblivious_groups = [{label[r // gpn] for r in range(s * per_stage, (s + 1) * per_stage)} for s in range(lay.pp)]
    assert max(len(g) for g in oblivious_groups) > 1          # the default order's DP spans NIC groups
    pl = place_nic_aware(model, lay, GPU, full)
    assert pl.dp_groups_pure() and pl.search == "exhaustive"
    assert pl.aware.step_time_s < pl.oblivious.step_time_s
    assert pl.gain == pl.oblivious.step_time_s / pl.aware.step_time_s > 1.0
    # the aware placement as simulated: the same report when the placement is replayed
    again = simulate_training(model, lay, GPU, full, placement=pl.gpus)
    assert again.step_time_s == pl.aware.step_time_s
    # its DP groups: each stage's nodes in one NIC group, as the placement says
    for s in range(lay.pp):
        nodes = {pl.gpus[r] // gpn for r in range(s * per_stage, (s + 1) * per_stage)}
        assert len({label[n] for n in nodes}) == 1


def test_homogeneous_cluster_gain_is_one() -> None:
    """One NIC type: nothing to place; the NIC-aware step is the default one."""
    model = load_train_model(GPT, 2048)
    cl = load_cluster("dgx-a100-superpod", gpus=96)
    pl = place_nic_aware(model, _layout(8, 2, 6), GPU, cl)
    assert pl.gain == 1.0 and pl.search == "single-group"


def test_homogeneous_permutation_changes_nothing() -> None:
    """Swapping two nodes inside one leaf unit of a homogeneous cluster: the replicas' links are equal,
    so the step is equal (the per-replica pipelines reduce to one run)."""
    model = load_train_model(GPT, 2048)
    cl = load_cluster("dgx-a100-superpod", gpus=32)
    lay = _layout(8, 2, 2, 32)
    swap = list(range(8, 16)) + list(range(8)) + list(range(16, 32))
    assert (simulate_training(model, lay, GPU, cl, placement=swap).step_time_s
            == simulate_training(model, lay, GPU, cl).step_time_s)


def test_slow_replica_sets_the_step() -> None:
    """hetero-nic, TP 8, PP 2, DP 2: replica 0's stages on two IB nodes, replica 1's split between an IB and a
    TCP node. The step is no faster than with both replicas on IB (replica 1's sends are slower, and the
    DP reduction waits for the later replica)."""
    model = load_train_model(GPT, 2048)
    full = load_cluster("hetero-nic")
    lay = _layout(8, 2, 2, 32)
    gpn = full.gpus_per_node

    def place(nodes: list[int]) -> list[int]:   # stage-major, then replica: one node per (stage, replica)
        return [n * gpn + i for n in nodes for i in range(gpn)]

    tcp = nic_groups(full)[2].nodes[0]
    fast = simulate_training(model, lay, GPU, full, placement=place([0, 1, 2, 3]))
    mixed = simulate_training(model, lay, GPU, full, placement=place([0, 1, 2, tcp]))
    assert mixed.step_time_s > fast.step_time_s


@pytest.mark.parametrize(("placement", "word"), [
    ([0, 1, 2], "maps 3 ranks"),
    ([0] * 16, "two ranks on GPU 0"),
    (list(range(15)) + [10_000], "not one of the cluster's"),
])
def test_bad_placement(placement: list[int], word: str) -> None:
    model = load_train_model(GPT, 2048)
    cl = load_cluster("dgx-a100-superpod", gpus=16)
    with pytest.raises(ConfigError, match=word):
        simulate_training(model, _layout(8, 1, 2, 32), GPU, cl, placement=placement)


def test_plan_train_cli_reports_the_gain() -> None:
    """``plan train --json`` on hetero-nic adds the placement of the plan: both step times and their ratio."""
    res = CliRunner().invoke(cli, ["plan", "train", "--model", GPT, "--hardware", "a100-sxm-80gb",
                                   "--cluster", "hetero-nic", "--gpus", "96", "--global-batch", "48",
                                   "--top", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    pl = out["placement"]
    assert pl["gain"] == pl["nic_oblivious_step_s"] / pl["nic_aware_step_s"]
    assert len(pl["stage_nic_groups"]) == out["plan"]["pp"]
    # every figure of the plan is the chosen placement's own simulation: the step is the faster placement's,
    # and TFLOP/s and MFU are the model FLOPs over that step (not over the NIC-oblivious one)
    plan = out["plan"]
    assert pl["gain"] > 1.0 and plan["placement"]["chosen"] == "nic-aware"
    assert plan["step_time_s"] == pl["nic_aware_step_s"] == min(pl["nic_aware_step_s"], pl["nic_oblivious_step_s"])
    model = load_train_model(GPT, 2048)
    lay = TrainLayout(tp=plan["tp"], pp=plan["pp"], dp=plan["dp"], micro_batch=plan["micro_batch"], global_batch=48,
                      seq=2048, recompute=Recompute(plan["recompute"]))
    flops = model_flops_per_iteration(model, lay)
    assert plan["tflops_per_gpu"] == pytest.approx(flops / plan["step_time_s"] / 96 / 1e12, rel=1e-12)
    assert plan["mfu"] == pytest.approx(flops / plan["step_time_s"] / 96 / GPU.peak_flops(lay.dtype), rel=1e-12)
    # the table prints the same figures
    table = CliRunner().invoke(cli, ["plan", "train", "--model", GPT, "--hardware", "a100-sxm-80gb",
                                     "--cluster", "hetero-nic", "--gpus", "96", "--global-batch", "48",
                                     "--top", "2"], terminal_width=250)
    assert table.exit_code == 0, table.output
    chosen = next(line for line in table.output.splitlines() if "chosen" in line)
    assert f"{plan['step_time_s']:.3f}" in chosen and f"{plan['tflops_per_gpu']:.1f}" in chosen
    assert f"{plan['mfu']:.3f}" in chosen and f"{plan['bubble_fraction']:.3f}" in chosen
    homo = CliRunner().invoke(cli, ["plan", "train", "--model", GPT, "--hardware", "a100-sxm-80gb",
                                    "--cluster", "dgx-a100-superpod", "--gpus", "16", "--global-batch", "16",
                                    "--top", "1", "--json"])
    assert homo.exit_code == 0, homo.output
    assert "placement" not in json.loads(homo.output)
