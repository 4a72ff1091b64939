"""Context parallelism in the training step (issue 5): Ulysses all-to-all and ring attention.

Numbers are derived in each test's docstring from the model's shapes (Llama-3-8B: h 4096, 32 heads, 8 KV
heads, head_dim 128, 32 layers; ``workloads/models/llama-3-8b.toml``), the H100's dense bf16 peak
(989.4 TFLOP/s, ``hwmodels/specs/h100-sxm-80gb.toml``) and the DGX H100 SuperPOD's NDR InfiniBand NIC
(400 Gb/s = 50 GB/s line rate per GPU, ``ndr-ib``); activation memory from Korthikanti et al. 2022, Table 2.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwmodels.gpu import load_gpu
from hwmodels.network.collectives import CollectiveOp, collective_time
from hwmodels.network.topology import load_cluster
from hwmodels.train_memory import train_memory
from sim.training import CPGeo, StageCosts, _geo, _rank, simulate_training
from workloads.errors import ConfigError
from workloads.train_ops import (
    AttentionImpl,
    CPImpl,
    Recompute,
    TrainLayout,
    check_layout,
    layer_passes,
    load_train_model,
)
from xpusim.cli import cli

H100 = "h100-sxm-80gb"
NIC_LINE_RATE = 50e9          # NDR 400 Gb/s per GPU (ndr-ib), bytes/s
H100_BF16_PEAK = 989.4e12     # dense bf16, FLOP/s


@pytest.fixture(scope="module")
def llama() -> object:
    return load_train_model("llama-3-8b")


@pytest.fixture(scope="module")
def gpu() -> object:
    return load_gpu(H100)


def _cp_geo(lay: TrainLayout, gpus: int) -> CPGeo:
    """Stage 0's CP group of replica 0, as simulate_training builds it (Megatron order tp-cp-dp-pp)."""
    cl = load_cluster("dgx-h100-superpod", gpus=gpus)
    ranks = tuple(_rank(lay, 0, 0, 0, c) for c in range(lay.cp))
    pairs = sorted({tuple(sorted((ranks[c], ranks[(c + 1) % lay.cp]))) for c in range(lay.cp)})
    return CPGeo(_geo(cl, ranks), tuple(_geo(cl, pr) for pr in pairs))


def test_cp1_is_todays_step(llama, gpu) -> None:  # type: ignore[no-untyped-def]
    """cp = 1 is the step without context parallelism: no CP op in the layer, the same report whichever
    cp_impl is named, and the same memory (the existing exact tests, test_training.py and
    test_train_memory.py, run with the default cp = 1 unchanged)."""
    base = TrainLayout(tp=8, pp=2, dp=2, seq=4096, global_batch=8, sequence_parallel=True,
                       recompute=Recompute.SELECTIVE)
    ring = TrainLayout(**{**base.__dict__, "cp": 1, "cp_impl": CPImpl.RING})
    passes = layer_passes(llama, base)
    assert not any(op.ring is not None or (op.comm is not None and op.comm.dim == "cp")
                   for op in (*passes.forward, *passes.backward))
    assert layer_passes(llama, ring) == passes
    cl = load_cluster("dgx-h100-superpod", gpus=32)
    a, b = simulate_training(llama, base, gpu, cl), simulate_training(llama, ring, gpu, cl)
    assert a.summary() == b.summary()
    assert not any(k.startswith("cp_") for k in a.exposed_comm_s)
    assert train_memory(llama, ring) == train_memory(llama, base)


@pytest.mark.parametrize("cp", [2, 4])
def test_token_wise_ops_run_on_the_local_sequence(llama, cp) -> None:  # type: ignore[no-untyped-def]
    """Every op outside the attention core (GEMMs, norms, MLP, TP collectives) of seq s split over cp is
    the op of seq s/cp without CP."""
    kw = dict(tp=8, global_batch=1, sequence_parallel=True)
    with_cp = layer_passes(llama, TrainLayout(seq=32768, cp=cp, **kw))  # type: ignore[arg-type]
    local = layer_passes(llama, TrainLayout(seq=32768 // cp, **kw))  # type: ignore[arg-type]
    core = ("rope", "flash_attention", "ring_attention", "cp_")

    def outside(ops):  # type: ignore[no-untyped-def]
        return [o for o in ops if not o.name.startswith(core)]

    assert outside(with_cp.forward) == outside(local.forward)
    assert outside(with_cp.backward) == outside(local.backward)


@pytest.mark.parametrize("impl", [CPImpl.ULYSSES, CPImpl.RING])
@pytest.mark.parametrize("cp", [2, 4])
def test_activation_memory_scales_with_the_local_sequence(llama, impl, cp) -> None:  # type: ignore[no-untyped-def]
    """Llama-3-8B, seq 32768, TP 8 with SP, one micro-batch (Korthikanti Table 2, per layer):
    selective recompute: ``s b h 34/t`` -> with s/cp tokens exactly 1/cp of the cp = 1 figure.
    No recompute: ``s b h (34/t + 5 a s/(h t))``, with t = 8: 34/8 = 4.25 and 5 x 32 x 32768 / (4096 x 8)
    = 160. Ulysses (full-s scores over a/(t cp) heads) keeps the 160 and halves/quarters the tokens:
    1/cp. Ring attention's blocks are (s/cp)-sized, so the term is 160/cp: (4.25 + 160/cp) / (164.25 cp).
    Weights, gradients and optimizer states do not change with CP (ZeRO 0)."""
    def mem(c: int, rec: Recompute):  # type: ignore[no-untyped-def]
        return train_memory(llama, TrainLayout(tp=8, seq=32768, cp=c, cp_impl=impl, global_batch=1,
                                               sequence_parallel=True, recompute=rec))

    one, split = mem(1, Recompute.SELECTIVE), mem(cp, Recompute.SELECTIVE)
    assert split.activations == pytest.approx(one.activations / cp, rel=1e-12)
    assert (split.weights, split.gradients, split.optimizer) == (one.weights, one.gradients, one.optimizer)
    one, split = mem(1, Recompute.NONE), mem(cp, Recompute.NONE)
    factor = 1 / cp if impl is CPImpl.ULYSSES else (4.25 + 160 / cp) / (164.25 * cp)
    assert split.activations == pytest.approx(one.activations * factor, rel=1e-12)


def test_zero_shards_over_dp_times_cp(llama) -> None:  # type: ignore[no-untyped-def]
    """Megatron-Core's distributed optimizer shards over the data-and-context-parallel group: ZeRO-1 with
    dp 2, cp 2 holds 1/4 of the optimizer states of ZeRO 0 (and the same weights and gradients)."""
    z0 = train_memory(llama, TrainLayout(tp=8, dp=2, cp=2, seq=8192, global_batch=2))
    z1 = train_memory(llama, TrainLayout(tp=8, dp=2, cp=2, seq=8192, global_batch=2, zero=1))
    assert z1.optimizer == pytest.approx(z0.optimizer / 4, rel=1e-12)
    assert (z1.weights, z1.gradients) == (z0.weights, z0.gradients)


@pytest.mark.parametrize(("tp", "kv_bytes"), [(4, 16384 * 2 * 128 * 2), (8, 16384 * 2 * 128 * 2)])
def test_ulysses_all_to_all_bytes(llama, gpu, tp, kv_bytes) -> None:  # type: ignore[no-untyped-def]
    """Llama-3-8B, seq 32768, cp 2, bf16: each GPU holds s/cp = 16384 tokens of a/t heads and sends them
    to be re-split by heads (DeepSpeed-Ulysses). Q and the output: 16384 x (32/t) x 128 x 2 B (t = 4:
    16,777,216 B; t = 8: 8,388,608 B). K and V: 8 KV heads / t per GPU: t = 4 -> 2 heads, 16384 x 2 x 128
    x 2 = 8,388,608 B; t = 8 -> 1 head, fewer than cp = 2, replicated to 2: the same 8,388,608 B.
    4 all-to-alls forward (Q, K, V, output) and 4 backward (their gradients); the pass's exposed
    cp_all_to_all is the four closed-form all-to-alls on the CP group."""
    lay = TrainLayout(tp=tp, cp=2, seq=32768, global_batch=1)
    passes = layer_passes(llama, lay)
    q_bytes = 16384 * (32 // tp) * 128 * 2
    expect = [q_bytes, kv_bytes, kv_bytes, q_bytes]
    for ops in (passes.forward, passes.backward):
        a2a = [o.comm for o in ops if o.comm is not None and o.comm.dim == "cp"]
        assert all(c.collective == "all_to_all" and c.group == 2 for c in a2a)
        got = sorted(c.nbytes for c in a2a)
        assert got == sorted(expect)
    cp = _cp_geo(lay, lay.gpus)
    t = sum(collective_time(None, CollectiveOp.ALL_TO_ALL, b, geo=cp.group).time_s for b in expect)
    pc = StageCosts(gpu).pass_cost(passes.forward, None, cp)
    assert pc.comm["cp_all_to_all"] == pytest.approx(t, rel=1e-12)


def test_ring_hides_the_kv_send_behind_long_blocks(llama, gpu) -> None:  # type: ignore[no-untyped-def]
    """Llama-3-8B, TP 8 (4 query heads, 1 KV head per GPU), cp 2, seq 65536: n = s/cp = 32768 tokens per
    GPU. A step's attention is half of the n x n block: 4 x 4 x 128 x 32768^2 / 2 = 1.10e12 FLOP, at
    least 1.11 ms at the H100's 989.4 TFLOP/s. The K/V block is 2 x 32768 x 1 x 128 x 2 B = 16.8 MB,
    0.34 ms at the NIC's 50 GB/s line rate (the CP peers sit on two nodes: TP 8 fills a node): compute
    is >= 3.3 x the transfer, so it hides at any link efficiency above 31 %: no exposed send forward.
    Backward: 2 x 16.8 MB per step (K/V and the dK/dV accumulator) against >= 2.5 x 1.11 ms; only the
    accumulator's last hop (one 16.8 MB send, after the last step) is exposed."""
    lay = TrainLayout(tp=8, cp=2, cp_impl=CPImpl.RING, seq=65536, global_batch=1)
    n = 32768
    flops_step = 4 * 4 * 128 * n * n / 2
    kv = 2 * n * 1 * 128 * 2
    assert flops_step / H100_BF16_PEAK > 3.3 * kv / NIC_LINE_RATE
    cp = _cp_geo(lay, lay.gpus)
    passes = layer_passes(llama, lay)
    sc = StageCosts(gpu)
    fwd, bwd = sc.pass_cost(passes.forward, None, cp), sc.pass_cost(passes.backward, None, cp)
    assert fwd.comm.get("cp_ring_send_recv", 0.0) == 0.0
    tail = collective_time(None, CollectiveOp.SEND_RECV, kv, geo=cp.links[0]).time_s
    assert tail >= kv / NIC_LINE_RATE
    assert bwd.comm["cp_ring_send_recv"] == pytest.approx(tail, rel=1e-12)
    # the pass's FLOPs: cp steps of half-masked blocks = the causal attention of s over cp GPUs
    ring = next(o for o in passes.forward if o.ring is not None)
    assert ring.flops == pytest.approx(2 * flops_step, rel=1e-4)


def test_ring_exposes_the_kv_send_behind_short_blocks(gpu) -> None:  # type: ignore[no-untyped-def]
    """An MHA GPT (h 4096, 32 heads, head_dim 128), TP 8 (4 heads per GPU), cp 4, seq 4096: n = 1024 tokens
    per GPU. A step is 4 x 4 x 128 x 1024^2 / 2 = 1.07e9 FLOP (1.1 us at peak); its K/V block is
    2 x 1024 x 4 x 128 x 2 B = 2.1 MB, >= 41.9 us at 50 GB/s. The transfer is the longer: each of the
    cp - 1 = 3 overlapped steps exposes at least (transfer - step compute), so the exposed send is at
    least 3 x 41.9 us less the three steps' compute."""
    model = load_train_model("gpt:layers=4,hidden=4096,heads=32,vocab=51200", 4096)
    lay = TrainLayout(tp=8, cp=4, cp_impl=CPImpl.RING, seq=4096, global_batch=1)
    kv = 2 * 1024 * 4 * 128 * 2
    transfer = kv / NIC_LINE_RATE
    cp = _cp_geo(lay, lay.gpus)
    passes = layer_passes(model, lay)
    ring = next(o for o in passes.forward if o.ring is not None).ring
    assert ring is not None and ring.send_bytes == kv
    sc = StageCosts(gpu)
    steps = [sum(sc.op_time(o, None)[0] for o in step) for step in ring.steps]
    assert max(steps[:-1]) < transfer
    exposed = sc.pass_cost(passes.forward, None, cp).comm["cp_ring_send_recv"]
    assert exposed >= 3 * transfer - sum(steps[:-1]) > 0


def test_step_reports_cp_comm_and_reduces_grads_over_dp_x_cp(llama, gpu) -> None:  # type: ignore[no-untyped-def]
    """A whole step on 16 H100s (TP 8, cp 2, dp 1): the CP comm kinds appear, and throughput counts all
    tp x cp GPUs. The gradients are reduced and ZeRO shards over the dp x cp = 2 ranks (Megatron-Core):
    with ZeRO-1 a DP-1 step all-gathers its updated weights over the pair and its optimizer passes run on
    half the parameters, so the optimizer's time (passes + gather) differs from ZeRO 0's; with dp = cp = 1
    there is no such group (no gather)."""
    cl = load_cluster("dgx-h100-superpod", gpus=16)
    kw = dict(tp=8, seq=16384, global_batch=2, sequence_parallel=True, recompute=Recompute.SELECTIVE)
    for impl, kind in ((CPImpl.ULYSSES, "cp_all_to_all"), (CPImpl.RING, "cp_ring_send_recv")):
        rep = simulate_training(llama, TrainLayout(cp=2, cp_impl=impl, **kw), gpu, cl)  # type: ignore[arg-type]
        assert rep.exposed_comm_s[kind] > 0 and rep.gpus == 16
        assert rep.exposed_comm_s["dp_grad_reduce"] >= 0.0
    z1 = simulate_training(llama, TrainLayout(cp=2, zero=1, **kw), gpu, cl)  # type: ignore[arg-type]
    assert z1.exposed_comm_s["dp_param_all_gather"] > 0
    solo = simulate_training(llama, TrainLayout(zero=1, **{**kw, "seq": 8192}), gpu, cl)  # type: ignore[arg-type]
    assert "dp_param_all_gather" not in solo.exposed_comm_s


@pytest.mark.parametrize(("kw", "field", "words"), [
    (dict(cp=3, seq=4096), "seq", "over cp=3"),
    (dict(cp=4, seq=4100, cp_impl=CPImpl.RING), "seq", "2 x cp = 8 chunks"),
    (dict(cp=4, seq=4096, cp_impl=CPImpl.RING, attention=AttentionImpl.UNFUSED), "attention", "FlashAttention"),
    (dict(cp=0, seq=4096), "cp", ">= 1"),
    (dict(cp=8, tp=8, seq=4096), "cp", "4 attention heads per TP rank"),
])
def test_bad_cp_layouts(llama, kw, field, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as e:
        check_layout(llama, TrainLayout(**{"global_batch": 1, **kw}))
    assert e.value.field == field and words in str(e.value)


def test_bad_ulysses_kv_heads() -> None:
    """Llama-3.2-3B: 24 query heads, 8 KV heads; cp 3 splits the query heads but not the KV heads."""
    model = load_train_model("llama-3.2-3b")
    with pytest.raises(ConfigError) as e:
        check_layout(model, TrainLayout(cp=3, seq=3072, global_batch=1))
    assert e.value.field == "cp" and "8 KV heads" in str(e.value)


def test_cli_cp() -> None:
    args = ["simulate", "train", "--model", "llama-3-8b", "--seq", "16384", "--hardware", H100, "--cluster",
            "dgx-h100-superpod", "--gpus", "16", "--tp", "8", "--cp", "2", "--global-batch", "2",
            "--recompute", "selective", "--sequence-parallel"]
    r = CliRunner()
    for impl, kind in (("ulysses", "cp_all_to_all"), ("ring", "cp_ring_send_recv")):
        res = r.invoke(cli, [*args, "--cp-impl", impl, "--json"])
        assert res.exit_code == 0, res.output
        assert kind in json.loads(res.output)["exposed_comm_s"]
    bad = r.invoke(cli, [*args, "--cp-impl", "mesh"])
    assert bad.exit_code == 2 and "cp_impl" in bad.output
    bad = r.invoke(cli, [*args, "--gpus", "8"])
    assert bad.exit_code == 2 and "x cp" in bad.output
