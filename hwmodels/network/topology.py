"""Clusters: servers, NICs and a rail-optimised leaf/spine fabric as a ``networkx.DiGraph``.

A cluster spec (``specs/clusters/<name>.toml``, or any TOML path) lists groups of nodes of a node type
(``specs/nodes.toml``) with their NIC type (``specs/nics.toml``), and the fabric that joins them:

```
[cluster]
name = "NVIDIA DGX SuperPOD (DGX A100)"
source = "..."

[[groups]]                  # one or more; nodes are numbered group after group
node = "dgx-a100"           # node type id (catalog, or a [node_types.<id>] table of this file)
nodes = 140                 # how many
nic = "hdr-ib"              # optional: NIC type, default the node type's
nics_per_node = 8           # optional: default the node type's (must divide its GPUs)

[fabric]
nodes_per_leaf = 20         # nodes of one scalable unit: one leaf switch per rail for them
rail_optimised = true       # NIC j of every node of a unit on leaf j of the unit (false: one leaf for all)
spines = 20                 # spine switches (per site); every leaf has one uplink to every spine
oversubscription = 1.0      # leaf downlink : uplink bandwidth (>= 1)
switch_latency_ns = 130     # one switch traversal

[intercluster]              # optional: the nodes split evenly over sites joined by a slower link
sites = 2
link_gbit_per_s = 3200      # per direction between two sites' core routers
latency_us = 50             # one way (fibre ~5 us/km)
```

Graph (the conventions shared with ``sim.fabric``): node ids are strings with a ``kind`` attribute;
GPUs are ``n{node}.gpu{i}`` (kind ``gpu``, or ``gcd`` on an MI250X node), NICs ``n{node}.nic{j}``,
``n{node}.nvswitch``, ``n{node}.pcie{s}``, ``n{node}.cpu``, ``leaf{k}``, ``spine{k}``, ``core{s}``.
Every physical link is two directed edges, each with ``capacity`` (bytes/s, one direction) and
``latency`` (s). A NIC's edges to its leaf carry the NIC's *effective* rate (line rate x the
efficiency NCCL reaches, :attr:`NICSpec.rate`; ``line_rate`` holds the signalling rate); every other
edge carries the physical link's rate. Leaf-spine edges carry a leaf's downlink bandwidth divided by
the oversubscription and the number of spines.

Routing (:meth:`Cluster.route`) is deterministic: inside a node, the fewest hops (an NVSwitch
crossbar, PCIe through the switch or the host, Infinity Fabric links); between nodes, GPU i leaves
through the NIC of its rail (``nic_of``), crosses its leaf, and when the destination's NIC is on
another leaf, one spine chosen by a CRC32 hash of (src, dst) among the site's spines (ECMP), and the
core routers when the sites differ.

``load_cluster(name, gpus=N)`` sizes a preset to the first ``ceil(N / gpus_per_node)`` nodes; the
graph is built on first use of :attr:`Cluster.graph` (closed-form collectives never need it).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwmodels.network.nics import (
    IntraFabric,
    NicAttach,
    NICSpec,
    NodeSpec,
    load_nic,
    load_node,
    parse_nic,
    parse_node,
    specs_dir,
)
from workloads.errors import ConfigError
from workloads.specfile import catalog_file, get_number, get_str, read_toml, reject_unknown

if TYPE_CHECKING:  # networkx costs ~0.25 s to import; loading a cluster spec (the CLI's catalog) needs none
    import networkx as nx

Edge = tuple[str, str]  # a directed link (u, v); the same alias as hwmodels.network.flows.Edge


@dataclass(frozen=True)
class Fabric:
    """The switch layers, SI units."""

    nodes_per_leaf: int
    rail_optimised: bool
    spines: int
    oversubscription: float
    switch_latency_s: float
    sites: int = 1
    intercluster_rate: float = 0.0     # bytes/s per direction between two sites
    intercluster_latency_s: float = 0.0


@dataclass(frozen=True)
class NodeGroup:
    node: NodeSpec
    nic: NICSpec
    nodes: int


_TOP_KEYS = {"cluster", "groups", "fabric", "intercluster", "nic_types", "node_types"}
_CLUSTER_KEYS = {"name", "source"}
_GROUP_KEYS = {"node", "nodes", "nic", "nics_per_node"}
_FABRIC_KEYS = {"nodes_per_leaf", "rail_optimised", "spines", "oversubscription", "switch_latency_ns"}
_INTER_KEYS = {"sites", "link_gbit_per_s", "latency_us"}


def clusters_dir() -> Path:
    return specs_dir() / "clusters"


def list_clusters() -> list[str]:
    """Ids of the built-in cluster presets, sorted."""
    return sorted(p.stem for p in clusters_dir().glob("*.toml"))


class Cluster:
    """A sized cluster: its nodes, NICs, fabric and (lazily) the graph. SI units throughout."""

    def __init__(self, name: str, groups: tuple[NodeGroup, ...], fabric: Fabric, *, num_gpus: int,
                 source: str = "", file: str = "", cluster_id: str = "", full_nodes: int | None = None) -> None:
        self.name = name
        self.id = cluster_id
        self.source = source
        self.file = file
        self.fabric = fabric
        self.groups = groups
        gpn = {g.node.gpus for g in groups}
        if len(gpn) != 1:
            raise ConfigError(f"node groups have different GPU counts per node ({sorted(gpn)})", file=file,
                              field="groups")
        self.gpus_per_node: int = gpn.pop()
        for grp in groups:
            try:
                _node_template(grp.node)
            except ConfigError as exc:
                raise ConfigError(str(exc), file=file, field=exc.field, value=exc.value) from None
        self.num_nodes: int = sum(g.nodes for g in groups)
        # nodes of the unsized spec: sites split those, so sizing down keeps a node's site
        self._full_nodes = full_nodes or self.num_nodes
        self._node_group: list[int] = [gi for gi, g in enumerate(groups) for _ in range(g.nodes)]
        self.gpus: tuple[str, ...] = tuple(
            f"n{r // self.gpus_per_node}.gpu{r % self.gpus_per_node}" for r in range(num_gpus))
        self._rank = {g: r for r, g in enumerate(self.gpus)}
        self._assign_leaves()

    # ---- nodes, NICs, leaves -------------------------------------------------------------------
    def _assign_leaves(self) -> None:
        """Scalable units: ``nodes_per_leaf`` consecutive nodes of one group and one site; each unit
        owns ``nics`` leaves (rail-optimised) or one."""
        f = self.fabric
        total_full = self._full_nodes
        per_site = math.ceil(total_full / f.sites)
        self._site = [n // per_site for n in range(self.num_nodes)]
        self._leaf_base: list[int] = []
        self._leaf_rails: list[int] = []       # leaves per unit
        self._unit: list[int] = []
        self._unit_first: list[int] = []      # first node of each unit
        leaf, unit, prev_key, in_unit = 0, -1, None, 0
        for n in range(self.num_nodes):
            key = (self._node_group[n], self._site[n])
            if key != prev_key or in_unit == f.nodes_per_leaf:
                unit += 1
                rails = self.node_spec(n).nics if f.rail_optimised else 1
                if unit > 0:
                    leaf += self._leaf_rails[-1]
                self._leaf_base.append(leaf)
                self._leaf_rails.append(rails)
                self._unit_first.append(n)
                prev_key, in_unit = key, 0
            self._unit.append(unit)
            in_unit += 1
        self.num_leaves: int = leaf + (self._leaf_rails[-1] if self._leaf_rails else 0)

    def node_spec(self, node: int) -> NodeSpec:
        return self.groups[self._node_group[node]].node

    def nic_spec(self, node: int) -> NICSpec:
        return self.groups[self._node_group[node]].nic

    def site_of(self, node: int) -> int:
        return self._site[node]

    def node_of(self, gpu: str) -> int:
        """Node index of a GPU id (``n3.gpu5`` -> 3); an unknown id is a ``ConfigError``."""
        return self._split(gpu)[0]

    def rank(self, gpu: str) -> int:
        if gpu not in self._rank:
            self._split(gpu)
            raise ConfigError(f"GPU {gpu!r} is beyond the {len(self.gpus)} GPUs this cluster was sized to",
                              field="gpus", value=gpu)
        return self._rank[gpu]

    def _split(self, gpu: str) -> tuple[int, int]:
        try:
            node_s, local_s = gpu.split(".")
            if not (node_s.startswith("n") and local_s.startswith("gpu")):
                raise ValueError
            node, local = int(node_s[1:]), int(local_s[3:])
        except ValueError:
            raise ConfigError(f"not a GPU id of the form n<node>.gpu<i>: {gpu!r}", field="gpu", value=gpu) from None
        if not (0 <= node < self.num_nodes and 0 <= local < self.gpus_per_node):
            raise ConfigError(f"GPU {gpu!r} is on a node this cluster does not have ({self.num_nodes} nodes of "
                              f"{self.gpus_per_node} GPUs)", field="gpu", value=gpu)
        return node, local

    def nic_of(self, gpu: str) -> str:
        """The NIC GPU ``gpu``'s inter-node traffic leaves through (its rail's NIC)."""
        node, local = self._split(gpu)
        return f"n{node}.nic{self.node_spec(node).nic_index(local)}"

    def leaf_of(self, node: int, nic: int) -> str:
        unit = self._unit[node]
        rail = nic if self.fabric.rail_optimised else 0
        return f"leaf{self._leaf_base[unit] + rail}"

    @property
    def num_spines(self) -> int:
        """Spine switches per site in the sized cluster (none when one leaf holds every node)."""
        return self.fabric.spines if self.num_leaves > 1 else 0

    def spine_of(self, site: int, src: str, dst: str) -> str:
        k = zlib.crc32(f"{src}>{dst}".encode()) % self.fabric.spines
        return f"spine{site * self.fabric.spines + k}"

    def leaf_uplink(self, node: int) -> float:
        """Bytes/s of one leaf -> spine edge of the leaf(s) of ``node``'s unit."""
        spec, nic, f = self.node_spec(node), self.nic_spec(node), self.fabric
        ports = f.nodes_per_leaf * (1 if f.rail_optimised else spec.nics)
        return ports * nic.line_rate / f.oversubscription / f.spines

    # ---- routes ---------------------------------------------------------------------------------
    def route(self, src: str, dst: str) -> tuple[Edge, ...]:
        """Directed edges from GPU ``src`` to GPU ``dst``, in order (empty when they are the same)."""
        if src == dst:
            return ()
        ns, ls = self._split(src)
        nd, ld = self._split(dst)
        if ns == nd:
            return _prefixed(ns, _local_path(self.node_spec(ns), f"gpu{ls}", f"gpu{ld}"))
        spec_s, spec_d = self.node_spec(ns), self.node_spec(nd)
        js, jd = spec_s.nic_index(ls), spec_d.nic_index(ld)
        nic_s, nic_d = f"n{ns}.nic{js}", f"n{nd}.nic{jd}"
        leaf_s, leaf_d = self.leaf_of(ns, js), self.leaf_of(nd, jd)
        path: list[Edge] = list(_prefixed(ns, _local_path(spec_s, f"gpu{ls}", f"nic{js}")))
        path.append((nic_s, leaf_s))
        if leaf_s != leaf_d:
            ss, sd = self._site[ns], self._site[nd]
            spine_s = self.spine_of(ss, src, dst)
            if ss == sd:
                path += [(leaf_s, spine_s), (spine_s, leaf_d)]
            else:
                spine_d = self.spine_of(sd, src, dst)
                path += [(leaf_s, spine_s), (spine_s, f"core{ss}"), (f"core{ss}", f"core{sd}"),
                         (f"core{sd}", spine_d), (spine_d, leaf_d)]
        path.append((leaf_d, nic_d))
        path += _prefixed(nd, _local_path(spec_d, f"nic{jd}", f"gpu{ld}"))
        return tuple(path)

    # ---- graph ----------------------------------------------------------------------------------
    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """The whole sized cluster as a ``networkx.DiGraph`` (built on first use)."""
        import networkx as nx

        g = nx.DiGraph(name=self.name)
        for n in range(self.num_nodes):
            spec, nic = self.node_spec(n), self.nic_spec(n)
            tmpl = _node_template(spec)
            pre = f"n{n}."
            g.add_nodes_from((pre + v, d) for v, d in tmpl.nodes(data=True))
            g.add_edges_from((pre + u, pre + v, d) for u, v, d in tmpl.edges(data=True))
            for j in range(spec.nics):
                leaf = self.leaf_of(n, j)
                if leaf not in g:
                    g.add_node(leaf, kind="leaf")
                _link(g, f"{pre}nic{j}", leaf, nic.rate, nic.latency_s, line_rate=nic.line_rate)
        f = self.fabric
        if self.num_leaves > 1:
            sites_used = sorted(set(self._site))
            for site in sites_used:
                for k in range(f.spines):
                    g.add_node(f"spine{site * f.spines + k}", kind="spine")
            for unit, base in enumerate(self._leaf_base):
                node = self._unit_first[unit]
                site, up = self._site[node], self.leaf_uplink(node)
                for r in range(self._leaf_rails[unit]):
                    for k in range(f.spines):
                        _link(g, f"leaf{base + r}", f"spine{site * f.spines + k}", up, f.switch_latency_s)
            if len(sites_used) > 1:
                for site in sites_used:
                    g.add_node(f"core{site}", kind="core")
                    for k in range(f.spines):
                        _link(g, f"spine{site * f.spines + k}", f"core{site}", f.intercluster_rate,
                              f.switch_latency_s)
                for a in sites_used:
                    for b in sites_used:
                        if a < b:
                            _link(g, f"core{a}", f"core{b}", f.intercluster_rate, f.intercluster_latency_s)
        if not nx.is_weakly_connected(g):
            part = min(nx.weakly_connected_components(g), key=len)
            raise ConfigError(f"the topology is disconnected: {sorted(part)[:4]} cannot reach the rest",
                              file=self.file, field="topology", value=sorted(part)[0])
        return g

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, {self.num_nodes} nodes x {self.gpus_per_node} GPUs, {len(self.gpus)} in use)"


def _link(g: nx.DiGraph, a: str, b: str, capacity: float, latency: float, **extra: Any) -> None:
    g.add_edge(a, b, capacity=capacity, latency=latency, **extra)
    g.add_edge(b, a, capacity=capacity, latency=latency, **extra)


@functools.cache
def _node_template(spec: NodeSpec) -> nx.DiGraph:
    """One node's devices and links with local names (gpu0, nic0, nvswitch, pcie0, cpu)."""
    import networkx as nx

    g = nx.DiGraph()
    gpu_kind = "gcd" if spec.fabric is IntraFabric.XGMI else "gpu"
    g.add_node("cpu", kind="cpu")
    for i in range(spec.gpus):
        g.add_node(f"gpu{i}", kind=gpu_kind)
    for j in range(spec.nics):
        g.add_node(f"nic{j}", kind="nic")
    for s in range(spec.pcie_switches):
        g.add_node(f"pcie{s}", kind="pcie_switch")
        _link(g, f"pcie{s}", "cpu", spec.pcie, spec.pcie_latency_s)

    def host_of_gpu(i: int) -> str:
        return f"pcie{i * spec.pcie_switches // spec.gpus}" if spec.pcie_switches else "cpu"

    if spec.fabric is IntraFabric.NVSWITCH:
        g.add_node("nvswitch", kind="nvswitch")
        for i in range(spec.gpus):
            _link(g, f"gpu{i}", "nvswitch", spec.gpu_link, spec.gpu_link_latency_s)
            _link(g, f"gpu{i}", host_of_gpu(i), spec.pcie, spec.pcie_latency_s)
    elif spec.fabric is IntraFabric.PCIE:
        for i in range(spec.gpus):
            _link(g, f"gpu{i}", host_of_gpu(i), spec.gpu_link, spec.gpu_link_latency_s)
    else:  # xgmi: direct GCD-GCD links, each GCD also on the host
        for a, b, count in spec.xgmi_links:
            _link(g, f"gpu{a}", f"gpu{b}", count * spec.xgmi_link, spec.gpu_link_latency_s)
        for i in range(spec.gpus):
            _link(g, f"gpu{i}", host_of_gpu(i), spec.pcie, spec.pcie_latency_s)
    for j in range(spec.nics):
        first_gpu = j * spec.gpus_per_nic
        if spec.nic_attach is NicAttach.PCIE_SWITCH:
            host = f"pcie{j * spec.pcie_switches // spec.nics}"
        elif spec.nic_attach is NicAttach.CPU:
            host = "cpu"
        else:
            host = f"gpu{first_gpu}"
        _link(g, f"nic{j}", host, spec.pcie, spec.pcie_latency_s)
    gpus = [f"gpu{i}" for i in range(spec.gpus)]
    if spec.fabric is IntraFabric.XGMI and spec.gpus > 1:
        sub = g.subgraph(gpus)
        if not nx.is_weakly_connected(sub):
            part = min(nx.weakly_connected_components(sub), key=len)
            raise ConfigError(f"xgmi links leave GCDs {sorted(part)} unreachable from the others",
                              field=f"{spec.id}.xgmi_links", value=sorted(part))
    return g


@functools.cache
def _local_path(spec: NodeSpec, a: str, b: str) -> tuple[Edge, ...]:
    """Fewest-hop path inside one node (GPU-GPU avoids the host when the fabric joins them)."""
    g = _node_template(spec)
    if spec.fabric is not IntraFabric.PCIE and a.startswith("gpu") and b.startswith("gpu"):
        g = g.subgraph([v for v in g if v.startswith("gpu") or v == "nvswitch"])
    import networkx as nx

    nodes = nx.shortest_path(g, a, b)
    return tuple(zip(nodes[:-1], nodes[1:]))


def _prefixed(node: int, path: tuple[Edge, ...]) -> tuple[Edge, ...]:
    pre = f"n{node}."
    return tuple((pre + u, pre + v) for u, v in path)


# ---- loading -----------------------------------------------------------------------------------------
def parse_cluster(data: dict[str, Any], *, file: str, cluster_id: str, gpus: int | None = None) -> Cluster:
    reject_unknown(data, _TOP_KEYS, file=file)
    for section in ("cluster", "fabric"):
        if not isinstance(data.get(section), dict):
            raise ConfigError("missing required table", file=file, field=f"[{section}]")
    c, fab = data["cluster"], data["fabric"]
    reject_unknown(c, _CLUSTER_KEYS, file=file, section="cluster")
    reject_unknown(fab, _FABRIC_KEYS, file=file, section="fabric")
    extra_nics = {k: parse_nic(v, file=file, nic_id=k, section=f"nic_types.{k}")
                  for k, v in _table(data, "nic_types", file).items()}
    extra_nodes = {k: parse_node(v, file=file, node_id=k, section=f"node_types.{k}")
                   for k, v in _table(data, "node_types", file).items()}
    raw_groups = data.get("groups")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise ConfigError("need at least one [[groups]] table", file=file, field="groups")
    groups: list[NodeGroup] = []
    for i, rg in enumerate(raw_groups):
        sec = f"groups[{i}]"
        if not isinstance(rg, dict):
            raise ConfigError("must be a table", file=file, field=sec)
        reject_unknown(rg, _GROUP_KEYS, file=file, section=sec)
        node = load_node(get_str(rg, "node", file=file, section=sec), extra=extra_nodes, file=file,
                         field=f"{sec}.node")
        nic_id = get_str(rg, "nic", file=file, section=sec, default=node.nic)
        nics = get_number(rg, "nics_per_node", file=file, section=sec, default=node.nics, integer=True)
        if node.gpus % nics or (node.nic_attach is NicAttach.PCIE_SWITCH and nics % node.pcie_switches
                                 and node.pcie_switches % nics):
            raise ConfigError(f"{nics} NICs do not divide the {node.gpus} GPUs and {node.pcie_switches} PCIe "
                              "switches of the node evenly", file=file, field=f"{sec}.nics_per_node", value=nics)
        nic = load_nic(nic_id, extra=extra_nics, file=file, field=f"{sec}.nic")
        groups.append(NodeGroup(node=node.with_nics(nics, nic_id), nic=nic,
                                nodes=get_number(rg, "nodes", file=file, section=sec, integer=True)))

    def fnum(key: str, **kw: Any) -> Any:
        return get_number(fab, key, file=file, section="fabric", **kw)

    rail = fab.get("rail_optimised", True)
    if not isinstance(rail, bool):
        raise ConfigError(f"must be true or false, got {rail!r}", file=file, field="fabric.rail_optimised",
                          value=rail)
    over = fnum("oversubscription", default=1.0)
    if over < 1:
        raise ConfigError(f"must be >= 1 (downlink : uplink), got {over!r}", file=file,
                          field="fabric.oversubscription", value=over)
    sites, inter_rate, inter_lat = 1, 0.0, 0.0
    if "intercluster" in data:
        ic = data["intercluster"]
        if not isinstance(ic, dict):
            raise ConfigError("must be a table", file=file, field="intercluster")
        reject_unknown(ic, _INTER_KEYS, file=file, section="intercluster")
        sites = get_number(ic, "sites", file=file, section="intercluster", integer=True)
        inter_rate = get_number(ic, "link_gbit_per_s", file=file, section="intercluster") * 1e9 / 8
        inter_lat = get_number(ic, "latency_us", file=file, section="intercluster", allow_zero=True) * 1e-6
    fabric = Fabric(nodes_per_leaf=fnum("nodes_per_leaf", integer=True), rail_optimised=rail,
                    spines=fnum("spines", integer=True), oversubscription=over,
                    switch_latency_s=fnum("switch_latency_ns", allow_zero=True) * 1e-9, sites=sites,
                    intercluster_rate=inter_rate, intercluster_latency_s=inter_lat)
    gpn = groups[0].node.gpus
    capacity = sum(g.nodes for g in groups) * gpn
    if gpus is None:
        gpus = capacity
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"must be a whole number >= 1, got {gpus!r}", field="gpus", value=gpus)
    if gpus > capacity:
        raise ConfigError(f"{gpus} GPUs span nodes the cluster does not have: {cluster_id or file} has "
                          f"{capacity // gpn} nodes x {gpn} GPUs = {capacity}", file=file, field="gpus", value=gpus)
    need = math.ceil(gpus / gpn)
    sized: list[NodeGroup] = []
    for g in groups:
        take = min(g.nodes, need - sum(s.nodes for s in sized))
        if take <= 0:
            break
        sized.append(NodeGroup(node=g.node, nic=g.nic, nodes=take))
    name = get_str(c, "name", file=file, section="cluster")
    return Cluster(name, tuple(sized), fabric, num_gpus=gpus,
                   source=get_str(c, "source", file=file, section="cluster", default=""), file=file,
                   cluster_id=cluster_id, full_nodes=capacity // gpn)


def _table(data: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    t = data.get(key, {})
    if not isinstance(t, dict):
        raise ConfigError("must be a table of tables", file=file, field=key)
    return t


def load_cluster(name_or_path: str | Path, *, gpus: int | None = None) -> Cluster:
    """A cluster preset by id (``dgx-h100-superpod``) or a TOML path, sized to ``gpus`` GPUs (default: all)."""
    path, key = catalog_file(name_or_path, clusters_dir(), list_clusters(), kind="cluster", field="cluster")
    return parse_cluster(read_toml(path), file=str(path), cluster_id=key, gpus=gpus)
