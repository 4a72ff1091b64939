"""Cluster topologies: presets load, graphs are connected and well-formed, routes follow the rails,
and bad specs are ConfigErrors naming the element."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from hwmodels.network.nics import nic_catalog, node_catalog
from hwmodels.network.topology import list_clusters, load_cluster
from workloads.errors import ConfigError

KINDS = {"gpu", "gcd", "nvswitch", "pcie_switch", "cpu", "nic", "leaf", "spine", "core"}
PRESETS = ["dgx-a100-superpod", "dgx-h100-superpod", "pcie-4xrtx4090", "frontier", "hetero-nic",
           "multi-cluster-h100"]


def test_required_presets_exist() -> None:
    assert set(PRESETS) <= set(list_clusters())


def _size_for_spines(name: str) -> int | None:
    """Enough nodes to need two leaf units (so spines exist), or the whole preset when it is small."""
    full = load_cluster(name)
    units = 2 * full.fabric.nodes_per_leaf
    if name == "multi-cluster-h100":
        return None  # both sites (256 nodes)
    return min(len(full.gpus), units * full.gpus_per_node)


@pytest.mark.parametrize("name", sorted(list_clusters()))
def test_preset_graph_is_connected_and_well_formed(name: str) -> None:
    cl = load_cluster(name, gpus=_size_for_spines(name))
    g = cl.graph
    assert nx.is_weakly_connected(g)
    assert {d["kind"] for _, d in g.nodes(data=True)} <= KINDS
    for u, v, d in g.edges(data=True):
        assert d["capacity"] > 0 and d["latency"] >= 0
        assert g.has_edge(v, u), f"{u}->{v} has no reverse edge"
    for gpu in cl.gpus:
        assert g.nodes[gpu]["kind"] in {"gpu", "gcd"}
    assert len(cl.gpus) == cl.num_nodes * cl.gpus_per_node or len(cl.gpus) < cl.num_nodes * cl.gpus_per_node


@pytest.mark.parametrize("name", PRESETS)
def test_every_route_is_a_path_of_the_graph(name: str) -> None:
    cl = load_cluster(name, gpus=_size_for_spines(name))
    g = cl.graph
    gpus = cl.gpus
    pairs = [(gpus[0], gpus[-1]), (gpus[1], gpus[len(gpus) // 2]), (gpus[-1], gpus[0]), (gpus[0], gpus[1])]
    for src, dst in pairs:
        route = cl.route(src, dst)
        assert route[0][0] == src and route[-1][1] == dst
        for (_, b), (c, _) in zip(route, route[1:]):
            assert b == c
        for e in route:
            assert g.has_edge(*e), e
        assert route == cl.route(src, dst)  # deterministic


def test_rail_optimised_route_leaves_through_the_gpus_own_nic() -> None:
    cl = load_cluster("dgx-h100-superpod", gpus=64 * 8)
    for i in range(8):
        src, dst = f"n0.gpu{i}", f"n40.gpu{i}"
        route = cl.route(src, dst)
        nodes = [e[0] for e in route] + [route[-1][1]]
        assert cl.nic_of(src) == f"n0.nic{i}" and f"n0.nic{i}" in nodes and f"n40.nic{i}" in nodes
        assert not any(n.startswith("n0.nic") and n != f"n0.nic{i}" for n in nodes)


def test_leaf_and_spine_hops() -> None:
    """Same unit and rail: one leaf, no spine. Other unit: leaf -> spine -> leaf. Other site: through the cores."""
    cl = load_cluster("multi-cluster-h100")
    kinds = lambda r: [cl.graph.nodes[v]["kind"] for _, v in r]  # noqa: E731
    same_leaf = cl.route("n0.gpu3", "n31.gpu3")
    assert kinds(same_leaf).count("leaf") == 1 and "spine" not in kinds(same_leaf)
    other_unit = cl.route("n0.gpu3", "n32.gpu3")
    assert kinds(other_unit).count("spine") == 1 and kinds(other_unit).count("leaf") == 2
    other_site = cl.route("n0.gpu3", "n200.gpu3")
    assert kinds(other_site).count("core") == 2 and kinds(other_site).count("spine") == 2
    inter = cl.graph.edges["core0", "core1"]
    assert inter["capacity"] == pytest.approx(3200e9 / 8) and inter["latency"] == pytest.approx(50e-6)


def test_ecmp_spreads_over_spines_deterministically() -> None:
    cl = load_cluster("dgx-a100-superpod", gpus=40 * 8)
    spines = {cl.route(f"n0.gpu{i}", f"n{20 + k}.gpu{i}")[3][1] for i in range(8) for k in range(20)}
    assert len(spines) > 10  # 160 pairs over 20 spines
    assert all(s.startswith("spine") for s in spines)


def test_intra_node_paths() -> None:
    """NVSwitch: one switch hop. RTX 4090 (no P2P): through the host. Frontier: the direct 4-link GCD pair."""
    a100 = load_cluster("dgx-a100-superpod", gpus=8)
    assert a100.route("n0.gpu0", "n0.gpu5") == (("n0.gpu0", "n0.nvswitch"), ("n0.nvswitch", "n0.gpu5"))
    rtx = load_cluster("pcie-4xrtx4090", gpus=4)
    assert rtx.route("n0.gpu0", "n0.gpu2") == (("n0.gpu0", "n0.cpu"), ("n0.cpu", "n0.gpu2"))
    fr = load_cluster("frontier", gpus=8)
    assert fr.route("n0.gpu0", "n0.gpu1") == (("n0.gpu0", "n0.gpu1"),)
    assert fr.graph.edges["n0.gpu0", "n0.gpu1"]["capacity"] == pytest.approx(200e9)
    assert fr.graph.nodes["n0.gpu0"]["kind"] == "gcd"


def test_link_figures_from_the_specs() -> None:
    """Per-direction figures: NVLink3 300 GB/s and NVLink4 450 GB/s per GPU, HDR 200 Gb/s, NDR 400 Gb/s,
    Slingshot 25 GB/s (docs/network.md sources)."""
    a100 = load_cluster("dgx-a100-superpod", gpus=16)
    h100 = load_cluster("dgx-h100-superpod", gpus=16)
    assert a100.graph.edges["n0.gpu0", "n0.nvswitch"]["capacity"] == pytest.approx(300e9)
    assert h100.graph.edges["n0.gpu0", "n0.nvswitch"]["capacity"] == pytest.approx(450e9)
    assert a100.graph.edges["n0.nic0", "leaf0"]["line_rate"] == pytest.approx(25e9)
    assert h100.graph.edges["n0.nic0", "leaf0"]["line_rate"] == pytest.approx(50e9)
    assert nic_catalog()["slingshot-200g"].line_rate == pytest.approx(25e9)
    assert node_catalog()["dgx-h100"].nvls and not node_catalog()["dgx-a100"].nvls


def test_oversubscription_divides_the_uplinks() -> None:
    cl = load_cluster("hetero-nic")
    ib = cl.graph.edges["leaf0", "spine0"]["capacity"]
    # 8 nodes x one 25 GB/s HDR port per rail leaf, 2:1 oversubscribed, over 8 spines
    assert ib == pytest.approx(8 * 25e9 / 2 / 8)


def test_sized_cluster() -> None:
    cl = load_cluster("dgx-h100-superpod", gpus=12)
    assert cl.num_nodes == 2 and cl.gpus_per_node == 8 and len(cl.gpus) == 12
    assert cl.gpus[-1] == "n1.gpu3"


# ---- bad input -----------------------------------------------------------------------------------------
def test_unknown_cluster_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="dgx-h100-superpod"):
        load_cluster("dgx-h100-superpd")


def test_superpod_presets_size_to_large_jobs() -> None:
    """Issue 5's example runs 3,072 A100s on ``dgx-a100-superpod``: the SuperPOD presets grow by scalable units
    through a core layer (their TOML), so the cluster is sized to the job: 384 DGX A100 nodes."""
    cl = load_cluster("dgx-a100-superpod", gpus=3072)
    assert len(cl.gpus) == 3072 and cl.num_nodes == 384


def test_group_spanning_nodes_the_cluster_does_not_have() -> None:
    with pytest.raises(ConfigError, match="span nodes the cluster does not have"):
        load_cluster("pcie-4xrtx4090", gpus=33)


def test_gpu_id_beyond_the_cluster() -> None:
    cl = load_cluster("dgx-a100-superpod", gpus=16)
    with pytest.raises(ConfigError, match="node this cluster does not have"):
        cl.route("n0.gpu0", "n5.gpu0")


_GOOD = """
[cluster]
name = "t"
[[groups]]
node = "dgx-a100"
nodes = 4
[fabric]
nodes_per_leaf = 2
spines = 2
switch_latency_ns = 100
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_user_cluster_file_loads(tmp_path: Path) -> None:
    cl = load_cluster(_write(tmp_path, _GOOD))
    assert cl.num_nodes == 4 and nx.is_weakly_connected(cl.graph)


@pytest.mark.parametrize(("old", "new", "field"), [
    ("spines = 2", "spines = 2\nspine_count = 3", "fabric.spine_count"),          # unknown key
    ("switch_latency_ns = 100", "switch_latency_ns = -1", "fabric.switch_latency_ns"),  # negative
    ("nodes = 4", "", "groups[0].nodes"),                                          # missing
    ('node = "dgx-a100"', 'node = "dgx-a10"', "groups[0].node"),                     # unknown node type
])
def test_bad_cluster_file_names_file_and_key(tmp_path: Path, old: str, new: str, field: str) -> None:
    p = _write(tmp_path, _GOOD.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_cluster(p)
    assert exc.value.field == field and exc.value.file == str(p)


def test_zero_bandwidth_link_is_an_error(tmp_path: Path) -> None:
    text = _GOOD.replace('node = "dgx-a100"', 'node = "box"') + """
[node_types.box]
name = "box"
gpus = 2
fabric = "nvswitch"
gpu_link_gb_per_s = 0
gpu_link_latency_us = 0.3
pcie_gb_per_s = 30
pcie_latency_us = 0.5
pcie_switches = 1
nics = 1
nic = "hdr-ib"
nic_attach = "pcie_switch"
"""
    with pytest.raises(ConfigError) as exc:
        load_cluster(_write(tmp_path, text))
    assert exc.value.field == "node_types.box.gpu_link_gb_per_s"


def test_disconnected_topology_is_an_error(tmp_path: Path) -> None:
    text = _GOOD.replace('node = "dgx-a100"', 'node = "split"') + """
[node_types.split]
name = "split"
gpus = 4
fabric = "xgmi"
gpu_link_gb_per_s = 0
gpu_link_latency_us = 0.3
pcie_gb_per_s = 30
pcie_latency_us = 0.5
pcie_switches = 0
nics = 1
nic = "hdr-ib"
nic_attach = "cpu"
xgmi_link_gb_per_s = 50
xgmi_links = [[0, 1, 2], [2, 3, 2]]
"""
    with pytest.raises(ConfigError, match="unreachable") as exc:
        load_cluster(_write(tmp_path, text))
    assert exc.value.field == "split.xgmi_links"


def test_pcie_server_node_routes_peer_to_peer_inside_a_switch_and_through_the_host_across(tmp_path: Path) -> None:
    """The RTX PRO 6000-class PCIe node: GPUs 0-3 share PCIe switch 0 (peer-to-peer through it), GPU 4 sits
    under switch 1, so 0 -> 4 crosses the host bridge; a ring's bus bandwidth stays under the Gen5 x16 link
    (63 GB/s per direction, nodes.toml [PCIE])."""
    from hwmodels.network.collectives import collective_time
    spec = tmp_path / "pro.toml"
    spec.write_text('[cluster]\nname = "pro"\nsource = "test"\n[[groups]]\nnode = "pcie-8xrtxpro6000"\nnodes = 2\n'
                    '[fabric]\nnodes_per_leaf = 2\nrail_optimised = true\nspines = 1\noversubscription = 1.0\n'
                    'switch_latency_ns = 130\n')
    cl = load_cluster(str(spec))
    assert "pcie-8xrtxpro6000" in node_catalog()
    hops = [v for _, v in cl.route("n0.gpu0", "n0.gpu3")]
    assert hops == ["n0.pcie0", "n0.gpu3"]
    assert "n0.cpu" in [v for _, v in cl.route("n0.gpu0", "n0.gpu4")]
    res = collective_time(cl, "all_reduce", 1 << 30)
    assert 0 < res.busbw <= 63e9


def test_cli_catalog_clusters_json() -> None:
    """`xpusim catalog clusters --json` lists every preset with its node groups; the DGX A100 SuperPOD's
    NIC is HDR at its effective rate (line rate 25 GB/s x the fitted efficiency, nics.toml)."""
    import json

    from click.testing import CliRunner

    from xpusim.cli import cli
    result = CliRunner().invoke(cli, ["catalog", "clusters", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.output)}
    assert set(rows) == set(list_clusters())
    g = rows["dgx-a100-superpod"]["groups"][0]
    assert g["node"] == "dgx-a100" and g["nic"] == "hdr-ib"
    assert g["nic_gb_per_s"] == pytest.approx(nic_catalog()["hdr-ib"].rate / 1e9)
    table = CliRunner().invoke(cli, ["catalog", "clusters"])
    assert table.exit_code == 0 and "dgx-h100-superpod" in table.output
