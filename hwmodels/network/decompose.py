"""Collectives decomposed into flows: the input of the flow-level simulation (``sim.fabric``).

A collective over a group of GPUs of a :class:`~hwmodels.network.topology.Cluster` becomes a
:class:`~hwmodels.network.flows.FlowSchedule` whose steps hold the flows of the algorithm, each on
the cluster's own route (:meth:`Cluster.route`).

Large steps (an all-to-all among 1,024 GPUs has ~10^6 flows) are :class:`FlowBatch` objects: the
flows of one step in array form (endpoint indices, sizes, per-flow overhead and cap, routes as a CSR
of indices into the batch's distinct edges). A batch is a ``Sequence[Flow]`` (indexing it builds the
:class:`Flow`), so code that walks flows one by one still works, and the simulator reads the arrays
directly: building a million frozen ``Flow`` objects and hashing eight million edge tuples would
cost more than simulating them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from hwmodels.network.collectives import (
    Algorithm,
    CollectiveOp,
    CollectiveParams,
    Geometry,
    Protocol,
    bus_factor,
    default_params,
)
from hwmodels.network.flows import Edge, Flow, FlowSchedule
from hwmodels.network.topology import Cluster
from workloads.errors import ConfigError

if TYPE_CHECKING:  # only annotations here; the graph itself is the cluster's (built on first use)
    import networkx as nx


@dataclass(frozen=True, eq=False)
class FlowBatch(Sequence[Flow]):
    """The flows of one step in array form (SI units).

    Flow ``k`` goes from ``nodes[src[k]]`` to ``nodes[dst[k]]`` with ``nbytes[k]`` bytes over the
    edges ``edges[indices[indptr[k]:indptr[k + 1]]]``, in order; ``overhead_s[k]`` and
    ``rate_cap[k]`` (``inf`` = no cap) as in :class:`Flow`."""

    nodes: tuple[str, ...]
    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    edges: tuple[Edge, ...]
    indptr: np.ndarray
    indices: np.ndarray
    overhead_s: np.ndarray
    rate_cap: np.ndarray

    def __post_init__(self) -> None:
        n = self.src.size
        for name in ("dst", "nbytes", "overhead_s", "rate_cap"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"FlowBatch.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if self.indptr.shape != (n + 1,) or int(self.indptr[-1]) != self.indices.size:
            raise ValueError(f"FlowBatch.indptr does not describe {self.indices.size} route entries of {n} flows")

    def __len__(self) -> int:
        return int(self.src.size)

    @overload
    def __getitem__(self, k: int) -> Flow: ...
    @overload
    def __getitem__(self, k: slice) -> Sequence[Flow]: ...

    def __getitem__(self, k: int | slice) -> Flow | Sequence[Flow]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        lo, hi = int(self.indptr[k]), int(self.indptr[k + 1])
        cap = float(self.rate_cap[k])
        return Flow(self.nodes[int(self.src[k])], self.nodes[int(self.dst[k])], float(self.nbytes[k]),
                    tuple(self.edges[i] for i in self.indices[lo:hi].tolist()), float(self.overhead_s[k]),
                    None if cap == np.inf else cap)

    def __iter__(self) -> Iterator[Flow]:
        return (self[k] for k in range(len(self)))

    @property
    def total_bytes(self) -> float:
        return float(self.nbytes.sum())


class _Edges:
    """Distinct edges of a batch under construction: edge -> index."""

    def __init__(self) -> None:
        self.index: dict[Edge, int] = {}

    def ids(self, route: Sequence[Edge]) -> list[int]:
        idx = self.index
        out = []
        for e in route:
            i = idx.get(e)
            if i is None:
                i = idx[e] = len(idx)
            out.append(i)
        return out

    def as_tuple(self) -> tuple[Edge, ...]:
        return tuple(self.index)


def _ragged(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter(map(len, rows), np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    flat = np.fromiter((i for r in rows for i in r), np.int64, count=int(indptr[-1]))
    return indptr, flat


class RouteTable:
    """Routes between many GPU pairs of a cluster, fast and equal to :meth:`Cluster.route`.

    Between nodes of one site the cluster's route is the source GPU's way up to its leaf (the same for
    every destination on another node), then a spine when the destination's leaf differs (ECMP:
    :meth:`Cluster.spine_of`), then the destination's way down from its leaf. The table asks
    :meth:`Cluster.route` once per GPU for those two pieces and composes the rest, and asks it for
    every pair that is inside one node or between sites. ``tests/test_flow_vs_closed_form.py``
    checks the composition against :meth:`Cluster.route` on every pair of small clusters."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._kind = {v: d.get("kind") for v, d in cluster.graph.nodes(data=True)}
        self._up: dict[str, tuple[Edge, ...]] = {}
        self._down: dict[str, tuple[Edge, ...]] = {}

    def _learn(self, src: str, dst: str) -> tuple[Edge, ...]:
        r = self.cluster.route(src, dst)
        kind = self._kind
        first = next(k for k, e in enumerate(r) if kind[e[1]] == "leaf")
        last = max(k for k, e in enumerate(r) if kind[e[0]] == "leaf")
        self._up.setdefault(src, r[:first + 1])
        self._down.setdefault(dst, r[last:])
        return r

    def up(self, src: str, peer: str) -> tuple[Edge, ...]:
        """``src``'s edges up to (and including) its NIC -> leaf edge; ``peer`` is any GPU on
        another node (asked once)."""
        if src not in self._up:
            self._learn(src, peer)
        return self._up[src]

    def down(self, dst: str, peer: str) -> tuple[Edge, ...]:
        if dst not in self._down:
            self._learn(peer, dst)
        return self._down[dst]

    def route(self, src: str, dst: str) -> tuple[Edge, ...]:
        """Equal to ``cluster.route(src, dst)``."""
        cl = self.cluster
        ns, nd = cl.node_of(src), cl.node_of(dst)
        if ns == nd or cl.site_of(ns) != cl.site_of(nd):
            return cl.route(src, dst)
        u, w = self.up(src, dst), self.down(dst, src)
        ls, ld = u[-1][1], w[0][0]
        if ls == ld:
            return u + w
        sp = cl.spine_of(cl.site_of(ns), src, dst)
        return u + ((ls, sp), (sp, ld)) + w


def pair_batch(cluster: Cluster, pairs_src: Sequence[str], pairs_dst: Sequence[str], nbytes: np.ndarray, *,
               overhead_s: float | np.ndarray = 0.0, rate_cap: np.ndarray | None = None,
               routes: RouteTable | None = None) -> FlowBatch:
    """One flow per (src, dst) pair, on the cluster's routes."""
    n = len(pairs_src)
    if len(pairs_dst) != n or np.shape(nbytes) != (n,):
        raise ValueError("pair_batch: src, dst and nbytes must have the same length")
    rt = routes or RouteTable(cluster)
    names: dict[str, int] = {}
    src_i = np.fromiter((names.setdefault(s, len(names)) for s in pairs_src), np.int64, count=n)
    dst_i = np.fromiter((names.setdefault(d, len(names)) for d in pairs_dst), np.int64, count=n)
    edges = _Edges()
    rows = [edges.ids(rt.route(s, d)) for s, d in zip(pairs_src, pairs_dst)]
    indptr, indices = _ragged(rows)
    over = np.broadcast_to(np.asarray(overhead_s, float), (n,)).copy()
    cap = np.full(n, np.inf) if rate_cap is None else np.asarray(rate_cap, float)
    return FlowBatch(tuple(names), src_i, dst_i, np.asarray(nbytes, float), edges.as_tuple(), indptr, indices,
                     over, cap)


def matrix_batch(cluster: Cluster, group: Sequence[str], sizes: np.ndarray, *, overhead_s: float = 0.0,
                 rate_cap: np.ndarray | None = None, routes: RouteTable | None = None) -> FlowBatch:
    """One flow from ``group[i]`` to ``group[j]`` of ``sizes[i, j]`` bytes for every ``i != j`` with
    ``sizes[i, j] > 0`` (an all-to-all(v) step), vectorised over pairs.

    Inter-node pairs of one site compose their routes from per-GPU pieces (:class:`RouteTable`)
    with numpy: pairs are grouped by the lengths of their three pieces, and each group's route matrix
    is one gather. ``rate_cap`` is an ``(n, n)`` matrix (``inf`` = none) or None."""
    cl = cluster
    n = len(group)
    sizes = np.asarray(sizes, float)
    if sizes.shape != (n, n):
        raise ConfigError(f"all-to-all size matrix has shape {sizes.shape}, expected ({n}, {n})",
                          field="sizes", value=sizes.shape)
    if (sizes < 0).any() or not np.isfinite(sizes).all():
        raise ConfigError("all-to-all sizes must be finite and >= 0", field="sizes")
    if len(set(group)) != n:
        raise ConfigError("a GPU appears twice in the group", field="group", value=list(group))
    rt = routes or RouteTable(cl)
    node = np.fromiter((cl.node_of(g) for g in group), np.int64, count=n)
    site = np.fromiter((cl.site_of(int(x)) for x in node), np.int64, count=n)
    mask = sizes > 0
    np.fill_diagonal(mask, False)
    si, di = np.nonzero(mask)
    edges = _Edges()
    inter = (node[si] != node[di]) & (site[si] == site[di])
    blocks: list[tuple[np.ndarray, np.ndarray, list[list[int]] | np.ndarray]] = []  # (src, dst, rows)

    # pairs the cluster routes itself: inside one node, across sites
    other = np.flatnonzero(~inter)
    if other.size:
        rows = [edges.ids(cl.route(group[a], group[b])) for a, b in zip(si[other].tolist(), di[other].tolist())]
        blocks.append((si[other], di[other], rows))

    idx = np.flatnonzero(inter)
    if idx.size:
        s_in, d_in = si[idx], di[idx]
        # pieces: each GPU's way up and way down, learnt from one route to a GPU on another node
        peer = {}
        for k in np.unique(np.r_[s_in, d_in]).tolist():
            other_node = np.flatnonzero(node != node[k])
            peer[k] = int(other_node[0])
        up_ids: dict[int, list[int]] = {}
        dn_ids: dict[int, list[int]] = {}
        up_leaf = np.full(n, -1, np.int64)
        dn_leaf = np.full(n, -1, np.int64)
        leaf_id: dict[str, int] = {}
        for k in np.unique(s_in).tolist():
            u = rt.up(group[k], group[peer[k]])
            up_ids[k] = edges.ids(u)
            up_leaf[k] = leaf_id.setdefault(u[-1][1], len(leaf_id))
        for k in np.unique(d_in).tolist():
            w = rt.down(group[k], group[peer[k]])
            dn_ids[k] = edges.ids(w)
            dn_leaf[k] = leaf_id.setdefault(w[0][0], len(leaf_id))
        leaves = list(leaf_id)
        up_len = np.zeros(n, np.int64)
        dn_len = np.zeros(n, np.int64)
        for k, v in up_ids.items():
            up_len[k] = len(v)
        for k, v in dn_ids.items():
            dn_len[k] = len(v)
        cross = up_leaf[s_in] != dn_leaf[d_in]
        # spine hops (ECMP by the cluster's own hash): edge ids of leaf -> spine and spine -> leaf
        hop1 = np.full(idx.size, -1, np.int64)
        hop2 = np.full(idx.size, -1, np.int64)
        xi = np.flatnonzero(cross)
        if xi.size:
            spine_of = cl.spine_of
            eidx = edges.index
            a_l = up_leaf[s_in[xi]].tolist()
            b_l = dn_leaf[d_in[xi]].tolist()
            st = site[s_in[xi]].tolist()
            h1 = np.empty(xi.size, np.int64)
            h2 = np.empty(xi.size, np.int64)
            for j, (a, b, s_, la, lb) in enumerate(zip(s_in[xi].tolist(), d_in[xi].tolist(), st, a_l, b_l)):
                sp = spine_of(s_, group[a], group[b])
                e1 = (leaves[la], sp)
                e2 = (sp, leaves[lb])
                i1 = eidx.get(e1)
                if i1 is None:
                    i1 = eidx[e1] = len(eidx)
                i2 = eidx.get(e2)
                if i2 is None:
                    i2 = eidx[e2] = len(eidx)
                h1[j] = i1
                h2[j] = i2
            hop1[xi] = h1
            hop2[xi] = h2
        # group pairs by (up length, mid length, down length); each group is a dense route matrix
        mid = np.where(cross, 2, 0)
        key = (up_len[s_in] * 1000 + mid) * 1000 + dn_len[d_in]
        up_mat = np.full((n, int(up_len.max())), -1, np.int64)
        dn_mat = np.full((n, int(dn_len.max())), -1, np.int64)
        for k, v in up_ids.items():
            up_mat[k, :len(v)] = v
        for k, v in dn_ids.items():
            dn_mat[k, :len(v)] = v
        for kv in np.unique(key).tolist():
            sel = np.flatnonzero(key == kv)
            ul, rest = divmod(kv, 1000 * 1000)
            ml, dl = divmod(rest, 1000)
            parts = [up_mat[s_in[sel], :ul]]
            if ml:
                parts += [hop1[sel, None], hop2[sel, None]]
            parts.append(dn_mat[d_in[sel], :dl])
            blocks.append((s_in[sel], d_in[sel], np.hstack(parts)))

    src_l, dst_l, ptr_l, ind_l = [], [], [], []
    base = 0
    for s_b, d_b, block in blocks:
        if isinstance(block, np.ndarray):
            ptr = base + np.arange(block.shape[0], dtype=np.int64) * block.shape[1]
            flat = block.ravel()
        else:
            p, flat = _ragged(block)
            ptr = base + p[:-1]
        src_l.append(s_b)
        dst_l.append(d_b)
        ptr_l.append(ptr)
        ind_l.append(flat)
        base += flat.size
    src_a = np.concatenate(src_l) if src_l else np.zeros(0, np.int64)
    dst_a = np.concatenate(dst_l) if dst_l else np.zeros(0, np.int64)
    indptr = np.concatenate(ptr_l + [np.array([base], np.int64)])
    indices = np.concatenate(ind_l) if ind_l else np.zeros(0, np.int64)
    cap = (np.full(src_a.size, np.inf) if rate_cap is None
           else np.asarray(rate_cap, float)[src_a, dst_a])
    return FlowBatch(tuple(group), src_a, dst_a, sizes[src_a, dst_a], edges.as_tuple(), indptr, indices,
                     np.full(src_a.size, float(overhead_s)), cap)


# ---- the simulated fabric and the algorithms --------------------------------------------------------

def fabric_graph(cluster: Cluster, params: CollectiveParams | None = None) -> nx.DiGraph:
    """The cluster's graph with the capacities the collectives reach, for flow-level simulation.

    The closed forms (:mod:`hwmodels.network.collectives`) rate a node's fabric at its link rate x
    NCCL's efficiency on it, and the NIC at its effective rate (already on the NIC's edges) x its
    ``duplex_efficiency`` when it sends and receives at once. The same factors scale the edges here:
    edges to and from an NVSwitch x ``nvlink_efficiency``; a PCIe-fabric node's GPU, PCIe-switch and
    host edges x ``pcie_efficiency``; Infinity Fabric GCD-GCD edges x ``xgmi_efficiency``; a NIC's
    edges to its leaf x its ``duplex_efficiency`` (collectives send and receive at once; a send/recv
    makes up for it in its bytes, see :func:`decompose`). Other edges (PCIe to the NICs on an
    NVSwitch node, leaf/spine/core) keep their physical rate."""
    from hwmodels.network.nics import IntraFabric

    p = params or default_params()
    g = cluster.graph.copy()
    kind = {v: d.get("kind") for v, d in g.nodes(data=True)}
    for u, v, d in g.edges(data=True):
        ku, kv = kind[u], kind[v]
        if "nic" in (ku, kv) and ("leaf" in (ku, kv)):
            nic = u if ku == "nic" else v
            d["capacity"] = d["capacity"] * cluster.nic_spec(int(nic.split(".")[0][1:])).duplex_efficiency
            continue
        if "nvswitch" in (ku, kv):
            d["capacity"] = d["capacity"] * p.nvlink_efficiency
            continue
        if not (u.startswith("n") and "." in u and u.split(".")[0] == v.split(".")[0]):
            continue
        if "nic" in (ku, kv):
            continue
        fab = cluster.node_spec(int(u.split(".")[0][1:])).fabric
        if fab is IntraFabric.PCIE:
            d["capacity"] = d["capacity"] * p.pcie_efficiency
        elif fab is IntraFabric.XGMI and ku in ("gpu", "gcd") and kv in ("gpu", "gcd"):
            d["capacity"] = d["capacity"] * p.xgmi_efficiency
    return g


def _route_latency(b: FlowBatch, graph: nx.DiGraph) -> np.ndarray:
    elat = np.fromiter((graph.edges[e].get("latency", 0.0) for e in b.edges), float, count=len(b.edges))
    lens = np.diff(b.indptr)
    out = np.zeros(len(b))
    ne = lens > 0
    if ne.any():
        out[ne] = np.add.reduceat(elat[b.indices], b.indptr[:-1][ne])
    return out


def with_latency(b: FlowBatch, graph: nx.DiGraph, total_s: float | np.ndarray) -> FlowBatch:
    """The batch with each flow's overhead set so that its route's latency plus its overhead is
    ``total_s`` (the closed form's latency budget of the step; a route slower than the budget keeps
    its own latency and no overhead)."""
    over = np.maximum(np.asarray(total_s, float) - _route_latency(b, graph), 0.0)
    return replace(b, overhead_s=np.broadcast_to(over, (len(b),)).copy())


def scaled(b: FlowBatch, factor: float | np.ndarray) -> FlowBatch:
    return replace(b, nbytes=b.nbytes * factor)


def _by_node(cluster: Cluster, group: Sequence[str]) -> list[list[str]]:
    """The group's GPUs per node, nodes in order of first appearance, each node's GPUs by local rank."""
    nodes: dict[int, list[str]] = {}
    for gpu in group:
        nodes.setdefault(cluster.node_of(gpu), []).append(gpu)
    return [sorted(v, key=lambda x: int(x.split(".gpu")[1])) for v in nodes.values()]


def ring_orders(cluster: Cluster, group: Sequence[str]) -> list[list[str]]:
    """NCCL-like rings over ``group``: one per NIC the group uses on a node (one ring on one node).

    Ring ``c`` enters the first node at the GPU of rail ``c`` and walks the node's GPUs upwards, so
    it leaves from the GPU before it (rail ``c - 1``); it enters the next node on that same rail and
    walks it downwards, leaving on rail ``c``; and so on, alternating. Every inter-node hop thus
    stays on one rail (one leaf, no spine inside a scalable unit; with an odd number of nodes the
    closing hop changes rail), and over the rings every NIC of every node sends once and receives
    once, as NCCL's rings do (a channel per NIC)."""
    per_node = _by_node(cluster, group)
    if len(per_node) == 1:
        return [per_node[0]]
    k = min(len({cluster.nic_of(x) for x in gpus}) for gpus in per_node)
    rings = []
    for c in range(k):
        order: list[str] = []
        for i, gpus in enumerate(per_node):
            nics = sorted({cluster.nic_of(x) for x in gpus}, key=lambda x: int(x.split(".nic")[1]))
            start = next(j for j, x in enumerate(gpus) if cluster.nic_of(x) == nics[c % len(nics)])
            up = gpus[start:] + gpus[:start]
            # even nodes: c, c+1, ..., c-1; odd nodes: the reverse, entering where the last one left
            order += up if i % 2 == 0 else up[::-1]
        rings.append(order)
    return rings


def _ring_batch(cluster: Cluster, rings: list[list[str]], hop_bytes: float, *, chain: bool = False,
                routes: RouteTable | None = None) -> FlowBatch:
    """One flow per hop of every ring (``chain``: without the closing hop, for a broadcast)."""
    src: list[str] = []
    dst: list[str] = []
    for ring in rings:
        n = len(ring)
        hops = n - 1 if chain else n
        src += [ring[i] for i in range(hops)]
        dst += [ring[(i + 1) % n] for i in range(hops)]
    nb = np.full(len(src), hop_bytes)
    return pair_batch(cluster, src, dst, nb, routes=routes)


def decompose(cluster: Cluster, op: CollectiveOp | str, nbytes: float, algo: Algorithm | str = "auto", *,
              group: Sequence[str] | None = None, protocol: Protocol | str | None = None,
              params: CollectiveParams | None = None, graph: nx.DiGraph | None = None, root: int = 0,
              name: str = "") -> FlowSchedule:
    """The flows of one collective of ``nbytes`` (nccl-tests' size, as in
    :func:`~hwmodels.network.collectives.collective_time`) among ``group`` (default: every GPU of
    the cluster), to be simulated on :func:`fabric_graph` (or ``graph``).

    The algorithm and protocol are the closed form's (``auto`` takes its choice), and so are its
    constants: each flow's bytes are divided by the protocol's ``bw_fraction`` (LL's flags, LL128's
    headers travel too), and each step's latency (launch, base and per-step latencies, as the closed
    form sums them) is paid by every flow of the step: its route's latency plus an overhead making up
    the rest. NCCL pipelines a ring's or a tree's chunks, so in the fluid limit every hop carries its
    whole share concurrently; a pipelined algorithm is therefore one step of concurrent flows and a
    phased one (hierarchical) a step per phase:

    - ring (all-reduce, reduce-scatter, all-gather): the rings of :func:`ring_orders`, each carrying
      ``S / rings``; every hop moves ``bus_factor x S / rings`` bytes (``2 (n-1)/n`` for all-reduce).
    - ring broadcast: the same rings as chains from ``root``, every hop moving ``S / rings``.
    - nvls (one node): every GPU sends ``S`` to the NVSwitch and receives ``S`` from it.
    - hierarchical: intra-node reduce-scatter (ring per node, or NVLS: ``S / 2`` each way), an
      all-reduce of ``S / g`` per rail over the nodes (one ring per local rank), intra-node all-gather.
    - tree: NCCL's double binary tree over nodes (two trees, each with half the data, up and down at
      once) and a chain inside every node; each flow is sized so that the busiest GPU's NVLink and the
      busiest node's NICs carry ``S / tree_bw_factor`` over the ring bandwidth, as the closed form
      rates the tree (NCCL's tuner does not derive the tree's rate from its links either).
    - all-to-all (pairwise): one flow of ``S / n`` from every rank to every other (:func:`matrix_batch`);
      all-to-allv: :func:`decompose_all_to_allv`.
    - send/recv: one flow of ``S`` from ``group[0]`` to ``group[1]``.
    """
    from hwmodels.network.collectives import CollectiveCostModel, collective_time, geometry, parse_enum

    op_e: CollectiveOp = parse_enum(CollectiveOp, op, "op")
    algo_e: Algorithm = parse_enum(Algorithm, algo, "algo")
    p = params or default_params()
    members = list(group) if group is not None else list(cluster.gpus)
    geo = geometry(cluster, members)
    closed = collective_time(cluster, op_e, nbytes, algo=algo_e, params=p, geo=geo)
    proto = closed.protocol if protocol is None else parse_enum(Protocol, protocol, "protocol")
    a = closed.algo
    label = name or f"{op_e.value}/{a.value}"
    meta: dict[str, object] = {"op": op_e, "algo": a, "protocol": proto, "nbytes": float(nbytes), "n": geo.n}
    if geo.n <= 1 or nbytes == 0:
        return FlowSchedule((), name=label, meta=meta)
    g = graph if graph is not None else fabric_graph(cluster, p)
    model = CollectiveCostModel(geo, p)
    pp = p.protocols[proto]
    f = pp.bw_fraction
    S = float(nbytes)
    n, m = geo.n, geo.nodes
    rt = RouteTable(cluster)
    lat = model._lat

    if op_e is CollectiveOp.SEND_RECV:
        b = pair_batch(cluster, [members[0]], [members[1]], np.array([S]), routes=rt)
        if m == 1:
            factor = p.nvlink_efficiency / p.p2p_efficiency if geo.fabric.value == "nvswitch" else \
                _fabric_eff(p, geo) / p.p2p_efficiency
        else:
            factor = geo.nic.duplex_efficiency if geo.nic.stream_rate is None else 1.0
        b = with_latency(scaled(b, factor / f), g, lat(pp, 1 if m == 1 else 0, 0 if m == 1 else 1))
        return FlowSchedule((b,), name=label, meta=meta)

    if op_e is CollectiveOp.ALL_TO_ALL:
        return decompose_all_to_allv(cluster, np.full((n, n), S / n), group=members, protocol=proto, params=p,
                                     graph=g, name=label, routes=rt)

    if a is Algorithm.RING:
        rings = ring_orders(cluster, members)
        k = len(rings)
        if op_e is CollectiveOp.ALL_REDUCE:
            steps, inter = 2 * (n - 1), 2 * (m - 1)
        else:
            steps, inter = n - 1, m - 1
        if op_e is CollectiveOp.BROADCAST:
            r0 = members[root]
            rings = [ring[ring.index(r0):] + ring[:ring.index(r0)] for ring in rings]
            b = _ring_batch(cluster, rings, S / k / f, chain=True, routes=rt)
        else:
            b = _ring_batch(cluster, rings, bus_factor(op_e, n) * S / k / f, routes=rt)
        max_bw = model.bus_cap(a, proto)
        if max_bw:
            # a protocol's own ceiling on the ring's bus bandwidth (NCCL's per-architecture table:
            # LL128 per channel x channels, LL's total), shared by the k rings; in wire bytes max_bw / f
            b = replace(b, rate_cap=np.full(len(b), max_bw / k / f))
        b = with_latency(b, g, lat(pp, steps - inter, inter))
        return FlowSchedule((b,), name=label, meta=meta)

    if a is Algorithm.NVLS:
        node = cluster.node_of(members[0])
        sw = f"n{node}.nvswitch"
        b = _switch_batch(members, sw, S / f)
        b = with_latency(b, g, lat(pp, 2, 0))
        return FlowSchedule((b,), name=label, meta=meta)

    if a is Algorithm.HIERARCHICAL:
        per_node = _by_node(cluster, members)
        k = geo.per_node
        # phase 1 and 3: inside every node at once
        if geo.nvls:
            node_b = _concat([_switch_batch(gp, f"n{cluster.node_of(gp[0])}.nvswitch", S / 2 / f)
                              for gp in per_node])
            lat_node = lat(pp, 1, 0) - p.launch_s
        else:
            node_b = _concat([_ring_batch(cluster, [gp], (len(gp) - 1) / len(gp) * S / f, routes=rt)
                              for gp in per_node if len(gp) > 1])
            lat_node = lat(pp, k - 1, 0) - p.launch_s
        # phase 2: one ring per local rank over the nodes, each all-reducing S / k
        rails = [[gp[i] for gp in per_node if i < len(gp)] for i in range(k)]
        net_b = _concat([_ring_batch(cluster, [r], 2 * (m - 1) / m * S / k / f, routes=rt)
                         for r in rails if len(r) > 1])
        net_b = with_latency(net_b, g, lat(pp, 0, 2 * (m - 1)))
        node_b = with_latency(node_b, g, lat_node)
        return FlowSchedule((node_b, net_b, node_b), name=label, meta=meta)

    if a is Algorithm.TREE:
        b = _tree_batch(cluster, members, S, model, p, f, routes=rt)
        bus_cap = model.bus_cap(a, proto)
        if bus_cap:
            # the protocol's ceiling on the tree's algbw (= bus cap / 2, tuning.cc) on S / time: no flow
            # may finish its bytes faster than S / max_bw
            max_bw = bus_cap / 2
            b = replace(b, rate_cap=b.nbytes * max_bw / S)
        # the tree's own step latencies (tree_nvlink_step_us, tree_net_step_us), as the closed form
        b = with_latency(b, g, model._tree_lat(pp, 2 * (geo.per_node - 1), 2 * math.log2(m) if m > 1 else 0.0))
        return FlowSchedule((b,), name=label, meta=meta)
    raise ConfigError(f"algorithm {a.value} does not implement {op_e.value}", field="algo", value=a.value)


def _fabric_eff(p: CollectiveParams, geo: Geometry) -> float:
    from hwmodels.network.nics import IntraFabric

    return {IntraFabric.NVSWITCH: p.nvlink_efficiency, IntraFabric.PCIE: p.pcie_efficiency,
            IntraFabric.XGMI: p.xgmi_efficiency}[geo.fabric]


def _switch_batch(gpus: Sequence[str], switch: str, nbytes: float) -> FlowBatch:
    """NVLS: every GPU sends ``nbytes`` into the switch and receives ``nbytes`` from it."""
    nodes = tuple(gpus) + (switch,)
    n = len(gpus)
    sw = n
    edges = tuple((x, switch) for x in gpus) + tuple((switch, x) for x in gpus)
    src = np.r_[np.arange(n), np.full(n, sw)]
    dst = np.r_[np.full(n, sw), np.arange(n)]
    return FlowBatch(nodes, src.astype(np.int64), dst.astype(np.int64), np.full(2 * n, nbytes), edges,
                     np.arange(2 * n + 1, dtype=np.int64), np.arange(2 * n, dtype=np.int64), np.zeros(2 * n),
                     np.full(2 * n, np.inf))


def _concat(batches: Sequence[FlowBatch]) -> FlowBatch:
    """One batch holding the flows of several (their node and edge tables merged)."""
    nodes: dict[str, int] = {}
    edges: dict[Edge, int] = {}
    src, dst, nb, ptr, ind, over, cap = [], [], [], [], [], [], []
    base = 0
    for b in batches:
        nmap = np.fromiter((nodes.setdefault(x, len(nodes)) for x in b.nodes), np.int64, count=len(b.nodes))
        emap = np.fromiter((edges.setdefault(e, len(edges)) for e in b.edges), np.int64, count=len(b.edges))
        src.append(nmap[b.src])
        dst.append(nmap[b.dst])
        nb.append(b.nbytes)
        ptr.append(base + b.indptr[:-1])
        ind.append(emap[b.indices])
        over.append(b.overhead_s)
        cap.append(b.rate_cap)
        base += b.indices.size

    def cat(xs: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)

    return FlowBatch(tuple(nodes), cat(src, np.int64), cat(dst, np.int64), cat(nb, float), tuple(edges),
                     np.r_[cat(ptr, np.int64), base].astype(np.int64), cat(ind, np.int64), cat(over, float),
                     cat(cap, float))


def _tree_batch(cluster: Cluster, members: list[str], S: float, model: Any, p: CollectiveParams, f: float, *,
                routes: RouteTable) -> FlowBatch:
    """Double binary tree in ``k`` channels (one per NIC the group uses on a node, as the rings).

    Channel ``c``: inside every node a chain starting at the GPU of rail ``c`` (the node's head in
    that channel), flows up (child -> parent) and down at once; over the nodes' heads two balanced
    binary trees (tree 1 is tree 0 mirrored, so a node interior in one is a leaf in the other, as in
    NCCL), each edge with a flow up and one down.

    Sizes: the closed form rates the tree inside a node at ``tree_bw_factor`` x the node's link
    rate (a chain at tuning.cc's 0.9 x 0.5) and across nodes at ``tree_net_efficiency`` x the node's
    ``k`` NICs. A chain GPU sends a flow to its parent and one to its child over its one link, in
    every channel (one, at a chain's end), so with ``c_max`` the most chain flows any GPU sends, each
    chain flow carries ``S / (tree_bw_factor f) / c_max`` (``c_max = 2`` on one node); a node's NIC of rail
    ``c`` sends one flow per tree edge the node has (``load`` of them, at most ``load_max`` over the
    nodes), so each tree flow carries ``S / (tree_net_efficiency f) / load_max / k``. Alone, the
    busiest GPU link and NIC then take the closed form's times; the algorithm takes the larger."""
    per_node = _by_node(cluster, members)
    m = len(per_node)
    k = max(1, model.g.nics_per_node) if m > 1 else 1
    t_target = S / (p.tree_bw_factor * f)
    t_net = S / (getattr(p, "tree_net_efficiency", p.tree_bw_factor) * f)
    src: list[str] = []
    dst: list[str] = []
    nb: list[float] = []
    edges0 = _btree_edges(m) if m > 1 else []
    edges1 = [(m - 1 - x, m - 1 - y) for x, y in edges0]
    load = np.zeros(max(m, 1))
    for x, y in edges0 + edges1:
        load[x] += 1
        load[y] += 1
    tree_bytes = t_net / float(load.max()) / k if m > 1 else 0.0
    chain_src: list[str] = []
    chain_dst: list[str] = []
    for c in range(k):
        heads = []
        for gp in per_node:
            nics = sorted({cluster.nic_of(x) for x in gp}, key=lambda x: int(x.split(".nic")[1]))
            start = next(i for i, x in enumerate(gp) if cluster.nic_of(x) == nics[c % len(nics)]) if m > 1 else 0
            chain = gp[start:] + gp[:start]
            heads.append(chain[0])
            for a, b in zip(chain, chain[1:]):
                chain_src += [b, a]
                chain_dst += [a, b]
        for x, y in edges0 + edges1:
            src += [heads[y], heads[x]]
            dst += [heads[x], heads[y]]
            nb += [tree_bytes, tree_bytes]
    if chain_src:
        sends: dict[str, int] = {}
        for who in chain_src:
            sends[who] = sends.get(who, 0) + 1
        chain_bytes = t_target / max(sends.values())
        src += chain_src
        dst += chain_dst
        nb += [chain_bytes] * len(chain_src)
    return pair_batch(cluster, src, dst, np.asarray(nb), routes=routes)


def _btree_edges(m: int) -> list[tuple[int, int]]:
    """(parent, child) edges of a balanced binary tree over 0..m-1 in in-order layout."""
    out: list[tuple[int, int]] = []

    def build(lo: int, hi: int) -> int | None:
        if lo > hi:
            return None
        mid = (lo + hi) // 2
        for c in (build(lo, mid - 1), build(mid + 1, hi)):
            if c is not None:
                out.append((mid, c))
        return mid

    build(0, m - 1)
    return out


def decompose_all_to_allv(cluster: Cluster, sizes: np.ndarray, *, group: Sequence[str] | None = None,
                          protocol: Protocol | str | None = None, params: CollectiveParams | None = None,
                          graph: nx.DiGraph | None = None, name: str = "all_to_allv",
                          routes: RouteTable | None = None) -> FlowSchedule:
    """All-to-all(v): ``sizes[i, j]`` bytes from ``group[i]`` to ``group[j]``, every pair at once
    (NCCL's grouped send/recv). Latency as the closed form's all-to-all; intra-node flows carry
    ``nvlink_efficiency / p2p_efficiency`` more bytes on an NVSwitch node (the closed form rates a
    point-to-point copy at ``p2p_efficiency`` of the link, the graph at ``nvlink_efficiency``)."""
    from hwmodels.network.collectives import CollectiveCostModel, geometry, parse_enum

    p = params or default_params()
    members = list(group) if group is not None else list(cluster.gpus)
    sizes = np.asarray(sizes, float)
    geo = geometry(cluster, members)
    model = CollectiveCostModel(geo, p)
    if protocol is None:
        protos = model.protocols()
        proto = Protocol.SIMPLE if Protocol.SIMPLE in protos else protos[-1]
        # the closed form's choice for this size (it picks the fastest protocol)
        from hwmodels.network.collectives import all_to_allv as closed_v

        if len(members) <= 64:
            proto = closed_v(cluster, sizes.tolist(), gpus=members, params=p).protocol
    else:
        proto = parse_enum(Protocol, protocol, "protocol")
    pp = p.protocols[proto]
    g = graph if graph is not None else fabric_graph(cluster, p)
    b = matrix_batch(cluster, members, sizes, routes=routes)
    node = np.fromiter((cluster.node_of(x) for x in members), np.int64, count=len(members))
    intra = node[b.src] == node[b.dst]
    factor = np.where(intra, _fabric_eff(p, geo) / p.p2p_efficiency, 1.0) / pp.bw_fraction
    b = scaled(b, factor)
    n = geo.n
    b = with_latency(b, g, model._lat(pp, geo.per_node - 1, (n - geo.per_node) / max(1, geo.per_node)))
    meta: dict[str, object] = {"op": CollectiveOp.ALL_TO_ALL, "algo": Algorithm.PAIRWISE, "protocol": proto,
                               "nbytes": float(sizes.sum()) / max(n, 1), "n": n}
    return FlowSchedule((b,), name=name, meta=meta)
