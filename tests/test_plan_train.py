"""The training planner (planners/train.py) and ``xpusim plan train``.

The planner simulates only its ``top`` layouts by closed-form estimate; its answer is held to the best of
an exhaustive simulation of every layout that fits (the same simulator, so the step times must be equal,
not close). No number here comes from a publication: the reference is the simulator itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from planners.train import enumerate_layouts, exhaustive, plan_train
from sim.training import simulate_training
from workloads.errors import CapacityError, Infeasible
from workloads.train_ops import Recompute, Schedule, load_train_model
from xpusim.cli import cli

SMALL = "gpt:layers=8,hidden=2048,heads=16,vocab=51200"     # ~0.5B parameters
MID = "gpt:layers=32,hidden=6144,heads=48,vocab=51200"      # ~14.8B: 18 B/param does not fit one 80 GB GPU
GPU = load_gpu("a100-sxm-80gb")


def test_plan_equals_best_of_exhaustive_simulation() -> None:
    """16 A100s (two DGX nodes), global batch 16 of 1024 tokens: every layout that fits is simulated; the
    planner, simulating 5 of them, finds a layout as fast as the fastest."""
    model = load_train_model(SMALL, 1024)
    cl = load_cluster("dgx-a100-superpod", gpus=16)
    ref = exhaustive(model, GPU, cl, 16, 16, seq=1024)
    plan = plan_train(model, GPU, cl, 16, 16, seq=1024, top=5)
    assert plan.simulated == 5 and plan.fit == len(ref) > 100
    assert plan.best.step_time_s == pytest.approx(ref[0].step_time_s, rel=1e-12)
    assert [c.step_time_s for c in plan.runner_ups] == sorted(c.step_time_s for c in plan.runner_ups)
    assert all(plan.best.step_time_s <= c.step_time_s for c in plan.runner_ups)


SMALL_HETERO = """
[cluster]
name = "test: 2 DGX A100 on 100G TCP (2 NICs) + 2 on HDR InfiniBand"
source = "tests/test_plan_train.py"

[[groups]]
node = "dgx-a100"
nodes = 2
nic = "eth-100g-tcp"
nics_per_node = 2

[[groups]]
node = "dgx-a100"
nodes = 2
nic = "hdr-ib"

[fabric]
nodes_per_leaf = 2
rail_optimised = true
spines = 2
oversubscription = 2.0
switch_latency_ns = 300
"""


def test_plan_equals_best_of_exhaustive_simulation_on_a_heterogeneous_cluster(tmp_path: Path) -> None:
    """32 A100s in two NIC groups (the slow one first in the node list), global batch 16 of 1024 tokens:
    every layout that fits is simulated and placed NIC-aware (what the planner does to its ``top``); the
    planner finds a layout as fast as the fastest. Its estimate prices each stage's DP reduction on that
    stage's own group under each placement it will try (the stage-0-only estimate of before chose
    tp8 pp4 dp1 here, 3 % slower)."""
    path = tmp_path / "small-hetero.toml"
    path.write_text(SMALL_HETERO)
    cl = load_cluster(str(path))
    model = load_train_model(SMALL, 1024)
    ref = exhaustive(model, GPU, cl, 32, 16, seq=1024)
    plan = plan_train(model, GPU, cl, 32, 16, seq=1024, top=5)
    assert plan.fit == len(ref) > 100
    assert all(c.placement is not None for c in ref)
    assert plan.best.step_time_s == pytest.approx(ref[0].step_time_s, rel=1e-12)


def test_search_space_follows_the_rules() -> None:
    """TP divides the node size and the heads, PP the layers; interleaving only with PP > 1 and micro-batches
    a multiple of PP; sequence parallelism whenever TP > 1; ZeRO only with DP > 1."""
    model = load_train_model(MID, 2048)
    lays = list(enumerate_layouts(model, 64, 64))
    assert lays and all(lay.gpus == 64 for lay in lays)
    assert {lay.tp for lay in lays} == {1, 2, 4, 8}
    assert all(32 % (lay.pp * lay.chunks) == 0 for lay in lays)
    assert all(lay.sequence_parallel == (lay.tp > 1) for lay in lays)
    assert all(lay.zero == 0 for lay in lays if lay.dp == 1)
    inter = [lay for lay in lays if lay.schedule is Schedule.INTERLEAVED]
    assert inter and all(lay.pp > 1 and lay.num_micro_batches % lay.pp == 0 for lay in inter)
    assert {lay.recompute for lay in lays} == set(Recompute)


def test_plan_fits_memory_and_pruned_layouts_do_not() -> None:
    """A 14.8B GPT on 16 A100s: the memory model prunes layouts; the plan's simulated memory fits, and a
    pruned layout is one the simulator refuses with CapacityError."""
    model = load_train_model(MID, 2048)
    cl = load_cluster("dgx-a100-superpod", gpus=16)
    plan = plan_train(model, GPU, cl, 16, 32, top=3)
    assert plan.fit < plan.enumerated
    rep = plan.best.report
    assert rep is not None and rep.memory.total <= GPU.memory_bytes
    pruned = next(lay for lay in enumerate_layouts(model, 16, 32) if lay.tp == 1 and lay.pp == 1 and lay.zero == 0)
    with pytest.raises(CapacityError):
        simulate_training(model, pruned, GPU, cl)
    # headroom: the plan leaves the asked GiB free (the memory model does not count CUDA context / NCCL)
    kept = plan_train(model, GPU, cl, 16, 32, top=1, headroom_bytes=8 * 1024**3)
    assert kept.fit <= plan.fit
    assert kept.best.memory_bytes <= GPU.memory_bytes - 8 * 1024**3


def test_no_layout_is_infeasible_naming_the_numbers() -> None:
    """7 GPUs: TP and PP can only be 1 (7 divides neither 8 nor 8 layers), and DP 7 does not divide batch 16."""
    model = load_train_model(SMALL, 1024)
    cl = load_cluster("dgx-a100-superpod", gpus=7)
    with pytest.raises(Infeasible, match="7 GPUs with global batch 16"):
        plan_train(model, GPU, cl, 7, 16, seq=1024)


def test_nothing_fits_is_infeasible() -> None:
    """The 14.8B GPT on one A100: 18 B/param of model states alone is ~250 GiB."""
    model = load_train_model(MID, 2048)
    cl = load_cluster("dgx-a100-superpod", gpus=1)
    with pytest.raises(Infeasible, match="fits in"):
        plan_train(model, GPU, cl, 1, 8)


def test_cli_json_and_bad_input_exit_2() -> None:
    runner = CliRunner()
    base = ["plan", "train", "--model", SMALL, "--seq", "1024", "--hardware", "a100-sxm-80gb",
            "--cluster", "dgx-a100-superpod", "--global-batch", "16", "--top", "2"]
    res = runner.invoke(cli, [*base, "--gpus", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["layouts_simulated"] == 2 and len(out["runner_ups"]) == 1
    assert out["plan"]["tp"] * out["plan"]["pp"] * out["plan"]["dp"] == 8
    assert out["plan"]["step_time_s"] <= out["runner_ups"][0]["step_time_s"]
    bad = runner.invoke(cli, [*base, "--gpus", "7"])
    assert bad.exit_code == 2
    assert "no parallel layout" in bad.output and "Traceback" not in bad.output
