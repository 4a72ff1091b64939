"""Closed-form collectives: nccl-tests' bus bandwidth definitions, the published NCCL figures, the
Vidur A100 collective files, the latency-bound knee, and the algorithm choice."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hwmodels.network import nccl_tuner
from hwmodels.network.collectives import (
    Algorithm,
    CollectiveOp,
    Protocol,
    all_reduce,
    all_to_all,
    all_to_allv,
    bus_factor,
    collective_time,
    default_params,
    geometry,
    send_recv,
    tuner_view,
)
from hwmodels.network.topology import load_cluster
from hwmodels.network.validate import read_vidur_collective, validate_collectives
from workloads.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured" / "vidur_a100" / "network"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/measured/vidur_a100/network absent")
GIB = 1 << 30


def test_bus_factors_are_nccl_tests_definitions() -> None:
    """nccl-tests doc/PERFORMANCE.md: all-reduce 2(n-1)/n, all-gather/reduce-scatter (n-1)/n, broadcast 1."""
    assert bus_factor(CollectiveOp.ALL_REDUCE, 8) == pytest.approx(14 / 8)
    assert bus_factor(CollectiveOp.ALL_GATHER, 8) == pytest.approx(7 / 8)
    assert bus_factor(CollectiveOp.REDUCE_SCATTER, 16) == pytest.approx(15 / 16)
    assert bus_factor(CollectiveOp.ALL_TO_ALL, 4) == pytest.approx(3 / 4)
    assert bus_factor(CollectiveOp.BROADCAST, 8) == 1.0
    assert bus_factor(CollectiveOp.SEND_RECV, 2) == 1.0
    r = all_reduce(load_cluster("dgx-a100-superpod", gpus=8), GIB)
    assert r.algbw == pytest.approx(GIB / r.time_s)
    assert r.busbw == pytest.approx(r.algbw * 14 / 8)


def test_nccl_8xa100_ring_busbw() -> None:
    """../shared/data/README.md: NCCL all-reduce on 8xA100 NVLink3, ring, large messages: ~230 GB/s busbw."""
    r = all_reduce(load_cluster("dgx-a100-superpod", gpus=8), 4 * GIB, algo="ring")
    assert r.busbw / 1e9 == pytest.approx(230, rel=0.10)


def test_nccl_2_nodes_8xa100_4hdr_busbw() -> None:
    """../shared/data/README.md: 2 nodes of 8xA100 with 4 HDR 200G NICs each: ~86 GB/s busbw."""
    r = all_reduce(load_cluster("a100-4hdr", gpus=16), 4 * GIB)
    assert r.busbw / 1e9 == pytest.approx(86, rel=0.10)


@needs_data
def test_vidur_send_recv_file_wape() -> None:
    res = validate_collectives(read_vidur_collective(DATA / "send_recv.csv"), "vidur-a100")
    assert res.overall.n == 1988
    assert res.overall.wape <= 0.10


@needs_data
def test_vidur_all_reduce_file_wape() -> None:
    """Issue 3's target on the shared file: WAPE <= 0.10 (0.089 with NCCL's tuner emulated, docs/network.md)."""
    res = validate_collectives(read_vidur_collective(DATA / "all_reduce.csv"), "vidur-a100")
    assert res.overall.n == 6958
    assert res.overall.wape <= 0.10


@needs_data
def test_small_messages_are_latency_bound_as_measured() -> None:
    """8 GPUs of one A100 node. At 8 KiB the bus bandwidth is far below the plateau (< 2 %), and the
    time is within 2x of the file's median time for messages of 2-64 KiB; the knee (the size where
    busbw reaches half the ~230 GB/s plateau) is within 2x of the size where the file's busbw does."""
    cl = load_cluster("dgx-a100-superpod", gpus=8)
    plateau = all_reduce(cl, 4 * GIB, algo="ring").busbw
    small = all_reduce(cl, 8 << 10)
    assert small.busbw < 0.02 * plateau
    rows = [s for s in read_vidur_collective(DATA / "all_reduce.csv") if (s.workers, s.per_node) == (8, 8)]
    tiny = sorted(s.measured_s for s in rows if s.nbytes <= 64 << 10)
    median = tiny[len(tiny) // 2]
    sim_small = all_reduce(cl, 32 << 10).time_s
    assert median / 2 <= sim_small <= 2 * median

    def crossing(points: list[tuple[int, float]]) -> int:
        return next(s for s, bus in sorted(points) if bus >= 0.5 * plateau)

    measured = [(s.nbytes, s.nbytes / s.measured_s * 14 / 8) for s in rows]
    # the measured busbw is noisy row to row: take a running median over 9 sizes
    measured.sort()
    smooth = [(measured[i][0], sorted(b for _, b in measured[max(0, i - 4):i + 5])[4 if i >= 4 else 0])
              for i in range(len(measured))]
    model = [(s, all_reduce(cl, s).busbw) for s, _ in measured]
    assert crossing(smooth) / 2 <= crossing(model) <= 2 * crossing(smooth)


def test_protocol_changes_with_size() -> None:
    """LL for tiny messages, Simple for large ones (NCCL's protocol choice)."""
    cl = load_cluster("dgx-a100-superpod", gpus=8)
    assert all_reduce(cl, 4096).protocol is Protocol.LL
    assert all_reduce(cl, GIB).protocol is Protocol.SIMPLE


def test_auto_is_nccl_tuners_pick_priced_by_the_hardware_model() -> None:
    """All-reduce ``auto`` runs what NCCL's tuner predicts fastest (tuning.cc's formula), not what is
    fastest on the modelled hardware; its time is the hardware model's cost of that pick."""
    for name, gpus in [("dgx-a100-superpod", 64), ("dgx-h100-superpod", 8), ("a100-4hdr", 16)]:
        cl = load_cluster(name, gpus=gpus)
        geo = geometry(cl)
        for size in (8 << 10, 1 << 20, 64 << 20, GIB):
            auto = all_reduce(cl, size)
            algos = tuple(a for a in ("ring", "tree", "nvls") if a != "nvls" or geo.nvls)
            times = nccl_tuner.predicted_times(tuner_view(geo), size, algos)
            assert (auto.algo.value, auto.protocol.value) == min(times, key=lambda k: times[k])
            forced = all_reduce(cl, size, algo=auto.algo)
            assert forced.time_s <= auto.time_s * (1 + 1e-12)  # forcing an algorithm still takes NCCL's protocol


@needs_data
def test_tuner_switches_where_the_vidur_file_jumps() -> None:
    """all_reduce.csv, 2 nodes x 2 GPUs: the bus bandwidth jumps from 6.2 to 10.3 GB/s at exactly 8 MiB
    and back to 6.0 at 16 MiB (and up at 64 MiB): NCCL's tree correction factor for Simple is 0.8 for
    log2(bytes / 64) = 17 and 20, 0.7 around them. 2 nodes x 8 GPUs jumps at 12.375 MiB (to 14.5) and
    19.875 MiB (7.6 -> 15.2), where the tree's higher latency is paid back inside those windows."""
    cl = load_cluster("vidur-a100", gpus=16)
    two = [f"n{k}.gpu{i}" for k in range(2) for i in range(2)]
    mib = 1 << 20
    algo = {s: collective_time(cl, "all_reduce", s, gpus=two).algo for s in
            (8 * mib - 2048, 8 * mib, 12 * mib, 16 * mib - 2048, 16 * mib, 32 * mib, 64 * mib)}
    assert [a.value for a in algo.values()] == ["ring", "tree", "tree", "tree", "ring", "ring", "tree"]
    full = [f"n{k}.gpu{i}" for k in range(2) for i in range(8)]

    def first_tree(lo: int, hi: int) -> float:
        return next(s for s in range(lo, hi, 1 << 17)
                    if collective_time(cl, "all_reduce", s, gpus=full).algo is Algorithm.TREE) / mib

    assert first_tree(8 * mib, 16 * mib) == pytest.approx(12.375, abs=1.0)
    assert first_tree(16 * mib, 32 * mib) == pytest.approx(19.875, abs=1.0)


def test_hopper_is_derived_from_its_spec() -> None:
    """H100 (not fitted): for very large messages (64 GiB: the steps' latency is < 0.2 % of the time)
    the ring reaches the A100-fitted NVLink efficiency x 450 GB/s; NVLS (Hopper's in-switch reduction)
    sends each byte once, so it beats the ring on one node."""
    eff = default_params().nvlink_efficiency
    cl = load_cluster("dgx-h100-superpod", gpus=8)
    ring = all_reduce(cl, 64 * GIB, algo="ring")
    assert ring.busbw == pytest.approx(450e9 * eff, rel=0.02)
    nvls = all_reduce(cl, 4 * GIB, algo="nvls")
    assert nvls.time_s < ring.time_s
    with pytest.raises(ConfigError, match="NVLink SHARP"):
        all_reduce(load_cluster("dgx-a100-superpod", gpus=8), GIB, algo="nvls")


def test_ll128_ceiling_is_the_architectures_own() -> None:
    """NCCL's tuner caps LL128 per channel by architecture (tuning.cc perChMaxRingLL128Bws: Ampere 20.0,
    Hopper 36.7 GB/s; perChMaxTreeLL128Bws: Hopper 29.0 on > 2 nodes). The cost model applies the same
    ceiling x ``cap_efficiency`` (0.5567, held so that A100 keeps its 133.6 GB/s = 0.5567 x 20 x 12
    channels), never more than the tuner believes. Before, A100's 133.6 GB/s capped every GPU, and a
    64-GPU H100 ring at 1 GiB got 130 GB/s busbw (LL128) against 328 GB/s on 16 GPUs (Simple)."""
    from hwmodels.network.collectives import CollectiveCostModel

    p = default_params()
    eff = p.protocols[Protocol.LL128].cap_efficiency
    a100 = CollectiveCostModel(geometry(load_cluster("dgx-a100-superpod", gpus=8)), p)
    assert nccl_tuner.channels(a100.view, "ring") == 12  # 235 GB/s / 20 GB/s per channel
    assert a100.bus_cap(Algorithm.RING, Protocol.LL128) == pytest.approx(133.6e9, rel=1e-3)
    for gpus in (8, 64, 256):
        m = CollectiveCostModel(geometry(load_cluster("dgx-h100-superpod", gpus=gpus)), p)
        nch = nccl_tuner.channels(m.view, "ring")
        assert nch == 16   # 360 GB/s (0.8 x 450) / 20 GB/s per channel, at most 16
        assert m.bus_cap(Algorithm.RING, Protocol.LL128) == pytest.approx(36.7e9 * nch * eff, rel=1e-12)
        for algo in (Algorithm.RING, Algorithm.TREE):
            for proto in Protocol:
                cap = nccl_tuner.bus_caps(m.view, algo.value, proto.value)
                mine = m.bus_cap(algo, proto)
                assert (cap is None) == (mine is None)
                if cap is not None and mine is not None:
                    assert mine <= cap
    # Hopper's tree LL128 on > 2 nodes: min(16 x 29.0, 16 x 33.0 x 120/128) GB/s
    m = CollectiveCostModel(geometry(load_cluster("dgx-h100-superpod", gpus=32)), p)
    assert nccl_tuner.bus_caps(m.view, "tree", "ll128") == pytest.approx(16 * 29.0e9, rel=1e-12)
    # the 64-GPU ring at 1 GiB: LL128 at 0.92 x the ring's rate (NVLink or the NICs), not A100's cap
    cl = load_cluster("dgx-h100-superpod", gpus=64)
    ring = all_reduce(cl, GIB, algo="ring")
    assert ring.protocol is Protocol.LL128
    model = CollectiveCostModel(geometry(cl), p)
    rate = min(0.92 * model.ring_bw(), model.bus_cap(Algorithm.RING, Protocol.LL128) or math.inf)
    assert rate == pytest.approx(0.92 * model.ring_bw(), rel=1e-12)
    bus = 2 * 63 / 64 * GIB
    assert ring.breakdown["transfer_s"] == pytest.approx(bus / rate, rel=1e-12)


def test_nvls_runs_simple_only() -> None:
    """NCCL runs NVLS with the Simple protocol only (tuning.cc skips NVLS's LL and LL128): "fastest by
    the model" (emulate_tuner = false) never prices an NVLS/LL128 pair that NCCL cannot run."""
    from dataclasses import replace

    cl = load_cluster("dgx-h100-superpod", gpus=8)
    q = replace(default_params(), emulate_tuner=False)
    for size in (1 << 16, 1 << 20, 1 << 24, GIB):
        r = all_reduce(cl, size, params=q)
        assert r.algo is not Algorithm.NVLS or r.protocol is Protocol.SIMPLE


@pytest.mark.parametrize("name,nic_bytes_per_s,nvlink", [("dgx-h100-superpod", 8 * 400e9 / 8, 450e9),
                                                         ("dgx-a100-superpod", 8 * 200e9 / 8, 300e9)])
@pytest.mark.parametrize("gpus", [8, 16, 64, 256])
def test_all_reduce_1gib_within_the_links(name: str, nic_bytes_per_s: float, nvlink: float, gpus: int) -> None:
    """1 GiB all-reduce, NCCL's pick: a ring's busbw is at most one GPU's NVLink per direction (450 GB/s
    H100, 300 A100) and, across nodes, the node's NICs (8 x 400 Gb/s NDR = 400 GB/s per DGX H100,
    8 x 200 Gb/s HDR = 200 GB/s per DGX A100); a tree or NVLS sends and receives S once per GPU inside a
    node and once per node across the network, so its algbw is bounded by the same figures."""
    r = all_reduce(load_cluster(name, gpus=gpus), GIB)
    bound = nvlink if gpus <= 8 else min(nvlink, nic_bytes_per_s)
    if r.algo is Algorithm.RING:
        assert r.busbw <= bound
    else:
        assert r.algbw <= bound


def test_hierarchical_beats_ring_on_two_nodes_with_a_slow_network() -> None:
    """2 nodes: a ring moves 2 (n-1)/n S = 1.875 S through each node's NICs, the hierarchical form
    2 (m-1)/m S = S (its NVLink phases add 2 (g-1)/g S at the node's NVLink rate)."""
    cl = load_cluster("a100-4hdr", gpus=16)
    ring = all_reduce(cl, 4 * GIB, algo="ring")
    hier = all_reduce(cl, 4 * GIB, algo="hierarchical")
    assert hier.time_s < ring.time_s
    assert ring.breakdown["transfer_s"] / hier.breakdown["inter_s"] == pytest.approx(2 * 15 / 16, rel=1e-6)


def test_oversubscription_and_sites_slow_the_network() -> None:
    h = load_cluster("multi-cluster-h100")
    one_site = collective_time(h, "all_reduce", GIB, gpus=[f"n{k}.gpu0" for k in range(0, 128, 32)], algo="ring")
    two_sites = collective_time(h, "all_reduce", GIB, gpus=[f"n{k}.gpu0" for k in range(0, 256, 64)], algo="ring")
    assert two_sites.time_s >= one_site.time_s


def test_time_grows_with_size_and_all_ops_run() -> None:
    cl = load_cluster("dgx-a100-superpod", gpus=32)
    for op in ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast"):
        ts = [collective_time(cl, op, s).time_s for s in (1 << 10, 1 << 20, 1 << 30)]
        assert ts == sorted(ts) and ts[0] > 0, op
    sr = send_recv(cl, GIB, "n0.gpu0", "n1.gpu0")
    assert sr.busbw == pytest.approx(sr.algbw)
    assert sr.busbw < 25e9  # one HDR NIC


def test_uniform_all_to_allv_equals_all_to_all() -> None:
    cl = load_cluster("dgx-h100-superpod", gpus=32)
    n, s = 32, 64 << 20
    uniform = [[s / n] * n for _ in range(n)]
    assert all_to_allv(cl, uniform).time_s == pytest.approx(all_to_all(cl, s).time_s, rel=1e-9)
    skewed = [row[:] for row in uniform]
    skewed[0] = [4 * s / n] * n
    assert all_to_allv(cl, skewed).time_s > all_to_all(cl, s).time_s


def test_bad_input() -> None:
    cl = load_cluster("dgx-a100-superpod", gpus=8)
    with pytest.raises(ConfigError, match="all_reduce"):
        collective_time(cl, "allreduce_x", 1024)
    with pytest.raises(ConfigError, match="ring"):
        collective_time(cl, "all_reduce", 1024, algo="rng")
    with pytest.raises(ConfigError, match="size"):
        collective_time(cl, "all_reduce", -1)
    with pytest.raises(ConfigError, match="2 GPUs"):
        collective_time(cl, "send_recv", 1024)
    with pytest.raises(ConfigError, match="ring"):
        collective_time(cl, "all_gather", 1024, algo="tree")
    assert math.isclose(collective_time(cl, "all_reduce", 0).time_s, 0.0)
