"""Flow-level collectives (hwmodels/network/decompose.py + sim/fabric.py) against the closed form
(hwmodels/network/collectives.py): equal when nothing contends, different where contention decides.

Both fidelities read the same constants (``specs/collectives.toml``: launch, per-step latencies,
protocol bandwidth fractions, NVLink/PCIe/p2p efficiencies) and the same cluster (link rates, NIC
effective rates); the decomposition sizes each flow and each step's latency from them, so with no
contention the only differences are those derived in the tests' docstrings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwmodels.network.collectives import all_to_allv, collective_time, default_params
from hwmodels.network.decompose import RouteTable, decompose, decompose_all_to_allv, fabric_graph, matrix_batch
from hwmodels.network.topology import load_cluster
from sim.fabric import simulate_collective_flows, simulate_flows

GIB = float(1 << 30)


def _agree(cluster_name: str, gpus: int, op: str, algo: str, size: float, rel: float = 1e-9) -> None:
    cl = load_cluster(cluster_name, gpus=gpus)
    closed = collective_time(cl, op, size, algo=algo)
    flow = simulate_collective_flows(cl, op, size, algo)
    assert (flow.algo, flow.protocol) == (closed.algo, closed.protocol)
    assert flow.time_s == pytest.approx(closed.time_s, rel=rel)


# -- routes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,gpus", [("dgx-h100-superpod", 64), ("hetero-nic", 192), ("pcie-4xrtx4090", None),
                                       ("frontier", 32)])
def test_composed_routes_equal_the_clusters_routes(name: str, gpus: int | None) -> None:
    """The all-to-all's vectorised routes (per-GPU pieces + the cluster's ECMP spine) are exactly
    ``Cluster.route`` for every ordered pair of the group."""
    cl = load_cluster(name, gpus=gpus)
    group = list(cl.gpus)
    b = matrix_batch(cl, group, np.ones((len(group), len(group))))
    assert len(b) == len(group) * (len(group) - 1)
    for k in range(0, len(b), max(1, len(b) // 3000)):
        f = b[k]
        assert f.route == cl.route(f.src, f.dst), (f.src, f.dst)


def test_route_table_across_sites_and_units() -> None:
    """Pairs across scalable units (through a spine) and across the two sites of multi-cluster-h100
    (through the cores) are the cluster's own routes."""
    cl = load_cluster("multi-cluster-h100")
    rt = RouteTable(cl)
    pairs = [("n0.gpu3", "n40.gpu3"), ("n0.gpu3", "n40.gpu5"), ("n5.gpu0", "n200.gpu7"), ("n130.gpu1", "n2.gpu1"),
             ("n0.gpu0", "n0.gpu7"), ("n31.gpu2", "n0.gpu2")]
    for s, d in pairs:
        assert rt.route(s, d) == cl.route(s, d)


# -- no contention: both fidelities agree ------------------------------------------------------------

@pytest.mark.parametrize("cluster_name", ["dgx-a100-superpod", "dgx-h100-superpod"])
@pytest.mark.parametrize("size", [8e3, 1e6, GIB])
def test_ring_all_reduce_inside_one_dgx_node(cluster_name: str, size: float) -> None:
    """8 GPUs on one NVSwitch: one ring; each hop's flow crosses the sender's NVLink into the switch
    and the switch's NVLink to the receiver, alone on both, at link x nvlink_efficiency; it carries
    2 (n-1)/n S / bw_fraction bytes, and its latency is the closed form's latency budget. Equal to
    the closed form up to float rounding."""
    _agree(cluster_name, 8, "all_reduce", "ring", size)


@pytest.mark.parametrize("op,algo", [("all_reduce", "ring"), ("all_reduce", "tree"), ("all_reduce", "hierarchical"),
                                     ("all_gather", "ring"), ("reduce_scatter", "ring"), ("broadcast", "ring"),
                                     ("all_to_all", "auto"), ("send_recv", "auto")])
@pytest.mark.parametrize("size", [8e3, GIB])
def test_two_dgx_a100_nodes(op: str, algo: str, size: float) -> None:
    """2 DGX A100 nodes (16 GPUs, 8 HDR NICs each, one leaf unit): the NICs (8 x 25 GB/s x HDR
    efficiency, ~175 GB/s a node) are slower than NVLink (300 GB/s x nvlink_efficiency, ~233 GB/s a
    GPU), so every algorithm is bound where the closed form says: 8 rings, one per NIC, each
    inter-node hop on its own rail; all-to-all: each GPU's inter-node flows on its own NIC. Equal to
    the closed form."""
    if op == "send_recv":
        cl = load_cluster("dgx-a100-superpod", gpus=16)
        grp = ["n0.gpu3", "n1.gpu3"]
        closed = collective_time(cl, op, size, gpus=grp)
        assert simulate_collective_flows(cl, op, size, group=grp).time_s == pytest.approx(closed.time_s, rel=1e-9)
        return
    _agree("dgx-a100-superpod", 16, op, algo, size)


@pytest.mark.parametrize("cluster_name,gpus", [("dgx-a100-superpod", 32), ("dgx-h100-superpod", 32),
                                              ("dgx-h100-superpod", 64)])
@pytest.mark.parametrize("size", [8e3, 1e6, GIB])
def test_tree_across_four_and_eight_nodes(cluster_name: str, gpus: int, size: float) -> None:
    """Double binary tree over 4 and 8 nodes (2 log2(m) = 4 and 6 network steps): 8 KiB (LL, latency
    only), 1 MB (LL128) and 1 GiB (LL128 on H100, where NCCL's Hopper LL128 ceiling bounds the rate,
    Simple on A100). The flows pay the tree's own step latencies (``tree_nvlink_step_us``,
    ``tree_net_step_us``) and the protocol's ceiling (NCCL's per-architecture table) as the closed form
    does; each chain flow and each tree flow is sized so that, alone on its link, it takes the closed
    form's time. Equal to the closed form, with NCCL's protocol."""
    _agree(cluster_name, gpus, "all_reduce", "tree", size)


def test_tree_flows_pay_the_trees_own_step_latencies() -> None:
    """Setting the tree's step latencies to the ring's moves the flow-level time and the closed form
    by the same amount, 2 (g-1) x d_intra + 2 log2(m) x d_net (g = 8), so the flows price the tree
    with the tree's constants, not the ring's: 4 DGX H100 nodes at 8 KiB (LL: only the NVLink step
    differs) and 2 nodes at 1 GiB (Simple: 40 vs 10 µs per NVLink step, 120 vs 11.3 µs per network
    step in specs/collectives.toml)."""
    from dataclasses import replace

    from hwmodels.network.collectives import Protocol

    p = default_params()
    for gpus, size, m in ((32, 8e3, 4), (16, GIB, 2)):
        cl = load_cluster("dgx-h100-superpod", gpus=gpus)
        proto = collective_time(cl, "all_reduce", size, algo="tree").protocol
        pp = p.protocols[proto]
        q = replace(p, protocols={**p.protocols, proto: replace(
            pp, tree_nvlink_step_s=pp.nvlink_step_s, tree_net_step_s=pp.net_step_s)})
        d_intra = (pp.tree_nvlink_step_s or pp.nvlink_step_s) - pp.nvlink_step_s
        d_net = (pp.tree_net_step_s or pp.net_step_s) - pp.net_step_s
        expect = 2 * 7 * d_intra + 2 * np.log2(m) * d_net
        if size == GIB:
            assert proto is Protocol.SIMPLE and d_net > 0
        closed = [collective_time(cl, "all_reduce", size, algo="tree", params=x).time_s for x in (p, q)]
        flow = [simulate_collective_flows(cl, "all_reduce", size, "tree", params=x).time_s for x in (p, q)]
        assert flow == pytest.approx(closed, rel=1e-9)
        assert closed[0] - closed[1] == pytest.approx(expect, rel=1e-6)
        assert flow[0] - flow[1] == pytest.approx(expect, rel=1e-6)


def test_nvls_inside_one_dgx_h100() -> None:
    """NVLS: every GPU sends S into the switch and receives S, each alone on its NVLink direction
    at 450 GB/s x nvlink_efficiency: the closed form's S / (p2p link x nvlink_efficiency x bw_fraction)."""
    _agree("dgx-h100-superpod", 8, "all_reduce", "nvls", GIB)


def test_ring_across_two_dgx_h100_nodes() -> None:
    """2 DGX H100 nodes, 1 GiB (Simple protocol): the closed form rates the ring at
    min(NVLink = 450 GB/s x nvlink_efficiency, NICs = 8 x 50 GB/s x NDR efficiency). In the flows,
    one hop of each of the 8 rings leaves the node over PCIe to a NIC, so a GPU's NVLink carries
    only 7 of the 8 rings' hops: the transfer takes bus x max(7/8 / NVLink, 1 / NICs). The two
    agree when the NICs bind; with the shipped constants NVLink is the thinner by a hair
    (450 x 0.770 = 346.5 < 8 x 50 x 0.869 = 347.6 GB/s), so the flows are faster by ~0.3 %."""
    cl = load_cluster("dgx-h100-superpod", gpus=16)
    nvlink = cl.node_spec(0).gpu_link * default_params().nvlink_efficiency
    nics = 8 * cl.nic_spec(0).rate
    closed = collective_time(cl, "all_reduce", GIB, algo="ring")
    assert closed.protocol.value == "simple"
    flow = simulate_collective_flows(cl, "all_reduce", GIB, "ring")
    lat = closed.breakdown["latency_s"]
    bus = 2 * 15 / 16 * GIB
    assert closed.time_s - lat == pytest.approx(bus / min(nvlink, nics), rel=1e-9)
    assert flow.time_s - lat == pytest.approx(bus * max(7 / 8 / nvlink, 1 / nics), rel=1e-9)


def test_all_to_all_among_256_h100_gpus() -> None:
    """32 nodes, one leaf unit (no spine): each GPU's 248 inter-node flows share its rail's NIC and
    its 7 intra-node flows its NVLink; the NIC binds, as in the closed form. Equal."""
    _agree("dgx-h100-superpod", 256, "all_to_all", "auto", GIB)


# -- contention: where the two must differ -----------------------------------------------------------

def _oversubscribed(tmp_path: Path) -> Path:
    """4 DGX A100 nodes, 2 per leaf unit, one spine, leaf uplinks 2:1 oversubscribed: a rail leaf has
    2 node ports of 200 Gb/s = 50 GB/s down, so 25 GB/s up, to the one spine (HDR's effective rate,
    25 GB/s x its fitted efficiency, is below 25 and above 12.5)."""
    p = tmp_path / "oversub.toml"
    p.write_text('[cluster]\nname = "test: 4 DGX A100, 2:1 oversubscribed spine"\n\n'
                 '[[groups]]\nnode = "dgx-a100"\nnodes = 4\n\n'
                 '[fabric]\nnodes_per_leaf = 2\nrail_optimised = true\nspines = 1\noversubscription = 2.0\n'
                 'switch_latency_ns = 130\n')
    return p


def test_two_rings_sharing_an_oversubscribed_spine(tmp_path: Path) -> None:
    """Job A all-reduces over nodes 0 and 2, job B over nodes 1 and 3: both cross from unit 0 to
    unit 1. Each runs 8 rings, one per rail; a ring's inter-node hop stays on its rail, so it crosses
    leaf(unit 0, rail r) -> spine -> leaf(unit 1, rail r), 25 GB/s each way.
    Alone: a ring hop gets its NIC's effective rate R = 25 GB/s x efficiency (< 25): transfer =
    bus / 8 / R. Together: A's and B's hops on rail r share that uplink: 12.5 GB/s each (< R):
    transfer = bus / 8 / 12.5 GB/s. The closed form cannot tell the two apart: it divides the NICs by
    the oversubscription whenever a group spans units (R / 2 a NIC), alone or not."""
    cl = load_cluster(_oversubscribed(tmp_path))
    r = cl.nic_spec(0).rate
    assert 12.5e9 < r < 25e9
    a = [f"n{k}.gpu{i}" for k in (0, 2) for i in range(8)]
    b = [f"n{k}.gpu{i}" for k in (1, 3) for i in range(8)]
    g = fabric_graph(cl)
    sa = decompose(cl, "all_reduce", GIB, "ring", group=a, graph=g, name="A")
    sb = decompose(cl, "all_reduce", GIB, "ring", group=b, graph=g, name="B")
    closed = collective_time(cl, "all_reduce", GIB, algo="ring", gpus=a)
    lat = closed.breakdown["latency_s"]
    bus = 2 * 15 / 16 * GIB
    alone = simulate_flows(g, [sa]).time_s
    both = simulate_flows(g, [sa, sb])
    assert alone - lat == pytest.approx(bus / 8 / r, rel=1e-9)
    assert both.by_name()["A"] - lat == pytest.approx(bus / 8 / 12.5e9, rel=1e-9)
    assert both.by_name()["B"] == pytest.approx(both.by_name()["A"], rel=1e-12)
    assert closed.time_s - lat == pytest.approx(bus / (8 * r / 2.0), rel=1e-9)


def test_second_job_arrives_midway(tmp_path: Path) -> None:
    """Two jobs on one fabric, the second starting later (set-up of the test above; R the NIC's
    effective rate, c = 12.5 GB/s a hop when both share an uplink). Job B starts when job A
    (alone: transfer T = bus / 8 / R) is half done. From then both hops move at c: A's remaining
    half takes (T / 2) R / c, so A's transfer ends at T / 2 + (T / 2) R / c. By then B has moved
    (T / 2) R / c x c / R = T / 2 worth of its bytes, and does the other half alone at R: T / 2
    more. Latency L is paid after the last byte: A takes T / 2 (1 + R / c) + L, and B, from its
    start, the same (T / 2) R / c + T / 2 + L."""
    cl = load_cluster(_oversubscribed(tmp_path))
    r, c = cl.nic_spec(0).rate, 12.5e9
    a = [f"n{k}.gpu{i}" for k in (0, 2) for i in range(8)]
    b = [f"n{k}.gpu{i}" for k in (1, 3) for i in range(8)]
    g = fabric_graph(cl)
    lat = collective_time(cl, "all_reduce", GIB, algo="ring", gpus=a).breakdown["latency_s"]
    t = 2 * 15 / 16 * GIB / 8 / r
    sa = decompose(cl, "all_reduce", GIB, "ring", group=a, graph=g, name="A")
    sb = decompose(cl, "all_reduce", GIB, "ring", group=b, graph=g, name="B")
    sb = type(sb)(sb.steps, name="B", start_s=t / 2, meta=sb.meta)
    res = simulate_flows(g, [sa, sb])
    expect = t / 2 * (1 + r / c) + lat
    assert res.by_name()["A"] == pytest.approx(expect, rel=1e-9)
    assert res.by_name()["B"] == pytest.approx(expect, rel=1e-9)


def test_skewed_all_to_allv_one_hot_sender() -> None:
    """All-to-allv on two RoCE nodes of hetero-nic (8 GPUs and 4 NICs of 200 GbE each, effective
    rate R = 25 GB/s x efficiency; GPUs 2i and 2i+1 share NIC i): only n8.gpu0 sends, X bytes to each
    GPU of node 9 (a hot MoE rank). Flows: its 8 flows share its NIC, R / 8 each (a destination NIC
    takes 2 of them; a spine uplink, 12.5 GB/s, would need 5 to bind): 8 X / R.
    The closed form splits a node's NICs evenly over its GPUs (4 R / 8 a GPU), so it takes twice as
    long: the idle neighbour's share of the NIC is not used."""
    cl = load_cluster("hetero-nic")
    group = [f"n{k}.gpu{i}" for k in (8, 9) for i in range(8)]
    r = cl.nic_spec(8).rate
    assert cl.nic_spec(8).transport.value == "roce" and cl.node_spec(8).nics == 4
    x = 64e6
    sizes = np.zeros((16, 16))
    sizes[0, 8:] = x
    closed = all_to_allv(cl, sizes.tolist(), gpus=group)
    lat = closed.breakdown["latency_s"]
    sched = decompose_all_to_allv(cl, sizes, group=group)
    flow = simulate_flows(fabric_graph(cl), [sched]).time_s
    assert flow - lat == pytest.approx(8 * x / r, rel=1e-9)
    assert closed.time_s - lat == pytest.approx(8 * x / (r / 2), rel=1e-9)


def test_flow_level_uses_the_closed_forms_constants() -> None:
    """The decomposition reads the same parameter object: a changed constant moves both."""
    from dataclasses import replace

    cl = load_cluster("dgx-a100-superpod", gpus=8)
    p = replace(default_params(), nvlink_efficiency=0.5)
    closed = collective_time(cl, "all_reduce", GIB, algo="ring", params=p)
    from sim.fabric import simulate_collective_flows as scf

    assert scf(cl, "all_reduce", GIB, "ring", params=p).time_s == pytest.approx(closed.time_s, rel=1e-9)
