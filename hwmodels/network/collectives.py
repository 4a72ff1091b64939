"""Closed-form (alpha-beta) collectives on a :class:`~hwmodels.network.topology.Cluster`.

Each (algorithm, protocol) pair costs ``launch + latency(steps) + bus_bytes / bandwidth``, the form
of NCCL's own tuner (``src/graph/tuning.cc``: a base latency per algorithm and protocol, a per-step
latency per link type, and a bus bandwidth scaled per protocol); ``auto`` takes the fastest, as the
tuner does. The constants live in ``specs/collectives.toml`` with what they were fitted on.

Protocols (why small messages are latency-bound): NCCL moves data with LL (8-byte stores carrying
4 bytes of data and a flag: lowest latency, a quarter of the bandwidth for all-reduce), LL128 (120
of every 128 bytes: 0.92 of the bandwidth, NVLink only) and Simple (full bandwidth, the highest
per-step latency). The minimum over the three makes the busbw curve's knee: below ~1 MB the time is
the steps' latency, above ~100 MB it is the bandwidth.

Bandwidths (per direction, bytes/s), from the cluster:
- intra-node: the bottleneck link of the ring through the node's GPUs (NVLink per GPU on an NVSwitch
  node, the PCIe x16 link of a host-staged node, the thinnest Infinity Fabric hop of a Frontier
  ring) x the fabric's NCCL efficiency;
- inter-node, per node: the NICs the group's GPUs use x each NIC's effective rate (line rate x
  efficiency; a stream-capped transport such as TCP at most one ``stream_rate`` per GPU on the NIC),
  x ``duplex_efficiency`` when it sends and receives at once, divided by the leaf oversubscription
  when the group spans leaf units, at most the inter-site link when it spans sites; the slowest node
  of the group counts.

Algorithms (``n`` ranks on ``m`` nodes, ``g`` per node, buffer ``S`` bytes):
- ring: NCCL's multi-node ring; all-reduce moves ``2 (n-1)/n S`` over the slowest link of the ring
  in ``2 (n-1)`` steps (``2 (m-1)`` of them across the network); all-gather / reduce-scatter half.
- tree: NCCL's double binary tree across nodes with a chain inside each: latency of
  ``2 ((g-1) intra + log2(m) inter)`` steps; bandwidth ``0.9 x 0.5`` of the bus bandwidth (tuning.cc).
- nvls: NVLink SHARP on one NVSwitch node that has it (Hopper and later): the switch reduces, so each
  GPU sends and receives ``S`` once; multi-node NVLS is the hierarchical form below.
- hierarchical: intra-node reduce-scatter, inter-node all-reduce of ``S/g`` per GPU over the rails,
  intra-node all-gather (NVLS inside the node when it has it).

Bus bandwidth follows nccl-tests (``doc/PERFORMANCE.md``): algbw = S / t; busbw = algbw x 2(n-1)/n
for all-reduce, (n-1)/n for all-gather, reduce-scatter and all-to-all, 1 for broadcast and send/recv.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hwmodels.network import nccl_tuner
from hwmodels.network.nics import IntraFabric, NICSpec, specs_dir
from hwmodels.network.topology import Cluster
from workloads.errors import ConfigError
from workloads.specfile import get_number, read_toml, reject_unknown, unknown_name


class CollectiveOp(enum.Enum):
    ALL_REDUCE = "all_reduce"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_GATHER = "all_gather"
    ALL_TO_ALL = "all_to_all"
    BROADCAST = "broadcast"
    SEND_RECV = "send_recv"


class Algorithm(enum.Enum):
    RING = "ring"
    TREE = "tree"
    NVLS = "nvls"
    HIERARCHICAL = "hierarchical"
    PAIRWISE = "pairwise"   # all-to-all and send/recv: direct point-to-point transfers
    AUTO = "auto"


class Protocol(enum.Enum):
    LL = "ll"
    LL128 = "ll128"
    SIMPLE = "simple"


# busbw / algbw (nccl-tests doc/PERFORMANCE.md)
def bus_factor(op: CollectiveOp, n: int) -> float:
    if n <= 1:
        return 1.0
    if op is CollectiveOp.ALL_REDUCE:
        return 2.0 * (n - 1) / n
    if op in (CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_TO_ALL):
        return (n - 1) / n
    return 1.0


ALGORITHMS: dict[CollectiveOp, tuple[Algorithm, ...]] = {
    CollectiveOp.ALL_REDUCE: (Algorithm.RING, Algorithm.TREE, Algorithm.NVLS, Algorithm.HIERARCHICAL),
    CollectiveOp.REDUCE_SCATTER: (Algorithm.RING,),
    CollectiveOp.ALL_GATHER: (Algorithm.RING,),
    CollectiveOp.BROADCAST: (Algorithm.RING,),
    CollectiveOp.ALL_TO_ALL: (Algorithm.PAIRWISE,),
    CollectiveOp.SEND_RECV: (Algorithm.PAIRWISE,),
}
# what NCCL's tuner chooses among (hierarchical is asked for by name)
AUTO_CHOICES = (Algorithm.RING, Algorithm.TREE, Algorithm.NVLS, Algorithm.PAIRWISE)


@dataclass(frozen=True)
class ProtocolParams:
    base_s: float          # per collective, beyond the launch
    nvlink_step_s: float   # per step over NVLink / Infinity Fabric
    pcie_step_s: float     # per step over PCIe (host-staged)
    net_step_s: float      # per step across the network (beyond the route's own latency)
    bw_fraction: float     # of the Simple protocol's bandwidth
    cap_efficiency: float = 1.0  # of NCCL's own ceiling for the protocol (nccl_tuner.bus_caps) it reaches
    tree_nvlink_step_s: float | None = None  # a tree's step inside a node (None: the ring's)
    tree_net_step_s: float | None = None     # a tree's step across the network (None: the ring's)


@dataclass(frozen=True)
class CollectiveParams:
    """The algorithm constants of ``specs/collectives.toml`` (SI). The flow-level decomposition uses
    the same ones, so both fidelities agree when nothing contends."""

    launch_s: float
    nvlink_efficiency: float
    pcie_efficiency: float
    xgmi_efficiency: float
    p2p_efficiency: float          # point-to-point copy over NVLink, of the link rate
    tree_bw_factor: float
    protocols: dict[Protocol, ProtocolParams] = field(default_factory=dict)
    source: str = ""
    tree_net_efficiency: float = 1.0  # of the network rate a double binary tree reaches (per node, S each way)
    emulate_tuner: bool = True        # auto = NCCL's own pick (nccl_tuner); False: the fastest by this model


_TOP = {"source", "nccl", "ll", "ll128", "simple"}
_NCCL_KEYS = {"launch_us", "nvlink_efficiency", "pcie_efficiency", "xgmi_efficiency", "p2p_efficiency",
              "tree_bw_factor", "tree_net_efficiency", "emulate_tuner"}
_PROTO_KEYS = {"base_us", "nvlink_step_us", "pcie_step_us", "net_step_us", "bw_fraction", "cap_efficiency",
               "tree_nvlink_step_us", "tree_net_step_us"}


def parse_params(data: dict[str, Any], *, file: str) -> CollectiveParams:
    reject_unknown(data, _TOP, file=file)
    nccl = data.get("nccl")
    if not isinstance(nccl, dict):
        raise ConfigError("missing required table", file=file, field="[nccl]")
    reject_unknown(nccl, _NCCL_KEYS, file=file, section="nccl")

    def num(t: dict[str, Any], key: str, section: str, **kw: Any) -> Any:
        return get_number(t, key, file=file, section=section, **kw)

    protos: dict[Protocol, ProtocolParams] = {}
    for p in Protocol:
        t = data.get(p.value)
        if not isinstance(t, dict):
            raise ConfigError("missing required table", file=file, field=f"[{p.value}]")
        reject_unknown(t, _PROTO_KEYS, file=file, section=p.value)
        protos[p] = ProtocolParams(
            base_s=num(t, "base_us", p.value, allow_zero=True) * 1e-6,
            nvlink_step_s=num(t, "nvlink_step_us", p.value, allow_zero=True) * 1e-6,
            pcie_step_s=num(t, "pcie_step_us", p.value, allow_zero=True) * 1e-6,
            net_step_s=num(t, "net_step_us", p.value, allow_zero=True) * 1e-6,
            bw_fraction=num(t, "bw_fraction", p.value),
            cap_efficiency=num(t, "cap_efficiency", p.value, default=1.0),
            tree_nvlink_step_s=_opt_us(t, "tree_nvlink_step_us", p.value, num),
            tree_net_step_s=_opt_us(t, "tree_net_step_us", p.value, num))
    src = data.get("source", {})
    return CollectiveParams(
        launch_s=num(nccl, "launch_us", "nccl", allow_zero=True) * 1e-6,
        nvlink_efficiency=num(nccl, "nvlink_efficiency", "nccl"),
        pcie_efficiency=num(nccl, "pcie_efficiency", "nccl"),
        xgmi_efficiency=num(nccl, "xgmi_efficiency", "nccl"),
        p2p_efficiency=num(nccl, "p2p_efficiency", "nccl"),
        tree_bw_factor=num(nccl, "tree_bw_factor", "nccl"),
        tree_net_efficiency=num(nccl, "tree_net_efficiency", "nccl", default=1.0),
        emulate_tuner=_flag(nccl, "emulate_tuner", file),
        protocols=protos,
        source=str(src.get("fitted_on", "")) if isinstance(src, dict) else "")


def _opt_us(t: dict[str, Any], key: str, section: str, num: Any) -> float | None:
    return None if key not in t else float(num(t, key, section, allow_zero=True)) * 1e-6


def _flag(t: dict[str, Any], key: str, file: str) -> bool:
    v = t.get(key, True)
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}", file=file, field=f"nccl.{key}", value=v)
    return v


@functools.cache
def default_params() -> CollectiveParams:
    path = specs_dir() / "collectives.toml"
    return parse_params(read_toml(path), file=str(path))


# ---- the group's geometry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """What the closed forms need of a group of GPUs on a cluster (SI, per direction)."""

    n: int
    nodes: int
    per_node: int                 # most ranks on one node
    fabric: IntraFabric
    nvls: bool
    intra_link: float             # bottleneck link of the intra-node ring (physical rate)
    p2p_link: float               # one GPU's own link into the node fabric (physical rate)
    nics_per_node: int            # NICs the group uses on its most constrained node
    nic: NICSpec                  # the slowest NIC type in the group
    oversubscription: float       # applies when the group spans leaf units (else 1)
    inter_site_rate: float | None
    net_latency_s: float          # one-way route latency between two nodes of the group
    gpu: str = ""                 # GPU catalog id of the slowest node (NCCL's tuner tables are per architecture)


def geometry(cluster: Cluster, gpus: Sequence[str] | None = None) -> Geometry:
    """The geometry of ``gpus`` (default: every GPU the cluster was sized to)."""
    gpn = cluster.gpus_per_node
    if gpus is None:
        n = len(cluster.gpus)
        node_ids: list[int] = list(range(math.ceil(n / gpn)))
        counts = {i: min(gpn, n - i * gpn) for i in node_ids}
        locals_by_node: dict[int, list[int]] | None = None
    else:
        if len(set(gpus)) != len(gpus):
            raise ConfigError("a GPU appears twice in the group", field="gpus", value=list(gpus))
        n = len(gpus)
        locals_by_node = {}
        for gpu in gpus:
            node = cluster.node_of(gpu)
            locals_by_node.setdefault(node, []).append(int(gpu.split(".gpu")[1]))
        node_ids = sorted(locals_by_node)
        counts = {i: len(v) for i, v in locals_by_node.items()}
    if n < 1:
        raise ConfigError("a collective needs at least one GPU", field="gpus", value=n)
    # node types: the group's slowest node decides (hetero clusters)
    kinds = {cluster._node_group[i] for i in node_ids}
    grp = [cluster.groups[k] for k in sorted(kinds)]
    spec = min((gr.node for gr in grp), key=lambda s: s.gpu_link or s.xgmi_link)
    nic = min((gr.nic for gr in grp), key=lambda x: x.rate if x.stream_rate is None else min(x.rate, x.stream_rate))
    per_node = max(counts.values())
    intra = intra_ring_link(spec, per_node, None if locals_by_node is None else locals_by_node[node_ids[0]])
    if locals_by_node is None:
        nics_used = min(math.ceil(c / spec.gpus_per_nic) for c in counts.values())
    else:
        nics_used = min(len({cluster.node_spec(i).nic_index(loc) for loc in locs})
                        for i, locs in locals_by_node.items())
    units = {cluster._unit[i] for i in node_ids}
    sites = {cluster.site_of(i) for i in node_ids}
    f = cluster.fabric
    hops = 0 if len(node_ids) == 1 else (1 if len(units) == 1 else 3 if len(sites) == 1 else 5)
    net_lat = 2 * nic.latency_s + hops * f.switch_latency_s + (f.intercluster_latency_s if len(sites) > 1 else 0)
    return Geometry(
        n=n, nodes=len(node_ids), per_node=per_node, fabric=spec.fabric, nvls=spec.nvls,
        intra_link=intra, p2p_link=spec.gpu_link if spec.fabric is not IntraFabric.XGMI else intra,
        nics_per_node=max(1, nics_used), nic=nic,
        oversubscription=f.oversubscription if len(units) > 1 else 1.0,
        inter_site_rate=f.intercluster_rate if len(sites) > 1 else None,
        net_latency_s=net_lat, gpu=spec.gpu)


def intra_ring_link(spec: Any, g: int, locals_: list[int] | None) -> float:
    if spec.fabric is not IntraFabric.XGMI:
        return float(spec.gpu_link)
    if g <= 1:
        return float(spec.xgmi_link * 4)
    ids = sorted(locals_) if locals_ else list(range(g))
    links = {(min(a, b), max(a, b)): c * spec.xgmi_link for a, b, c in spec.xgmi_links}
    worst = math.inf
    for a, b in zip(ids, ids[1:] + ids[:1]):
        worst = min(worst, links.get((min(a, b), max(a, b)), spec.xgmi_link))  # no direct link: one hop via a neighbour
    return worst


# ---- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollectiveResult:
    op: CollectiveOp
    algo: Algorithm
    protocol: Protocol
    nbytes: float
    n: int
    time_s: float
    breakdown: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def algbw(self) -> float:
        """Bytes/s: nbytes / time (nccl-tests' algbw)."""
        return self.nbytes / self.time_s if self.time_s > 0 else math.inf

    @property
    def busbw(self) -> float:
        return self.algbw * bus_factor(self.op, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "algbw_gb_per_s": self.algbw / 1e9, "busbw_gb_per_s": self.busbw / 1e9,
                "algo": self.algo.value, "protocol": self.protocol.value, "op": self.op.value, "gpus": self.n,
                "bytes": self.nbytes}


# ---- the model --------------------------------------------------------------------------------------
class CollectiveCostModel:
    def __init__(self, geo: Geometry, params: CollectiveParams) -> None:
        self.g, self.p = geo, params
        eff = {IntraFabric.NVSWITCH: params.nvlink_efficiency, IntraFabric.PCIE: params.pcie_efficiency,
               IntraFabric.XGMI: params.xgmi_efficiency}[geo.fabric]
        self.intra_bw = geo.intra_link * eff
        k = geo.nics_per_node
        gpus_on_nic = math.ceil(geo.per_node / k)
        # a NIC moves its effective rate; a stream-capped transport (TCP) at most that many streams,
        # one per GPU using the NIC, and a stream that sends and receives at once loses duplex_efficiency.
        # A ring's channel enters a node at one GPU and leaves at another, so its connections pair up
        # two GPUs: ceil(g / 2) streams; a double binary tree runs two trees per channel: 2 g streams.
        self.net_uni = self._net(k * self._nic_rate(gpus_on_nic, duplex=False))       # one direction only
        self.net_duplex = self._net(k * self._nic_rate(gpus_on_nic, duplex=True))     # all NICs both ways
        self.net_ring = self._net(k * self._nic_rate(math.ceil(gpus_on_nic / 2), duplex=True))
        self.net_tree = self._net(k * self._nic_rate(2 * gpus_on_nic, duplex=True)) * params.tree_net_efficiency
        # NCCL's per-architecture protocol ceilings (tuning.cc's tables; RCCL's differ: none on xgmi)
        self.view = tuner_view(geo) if geo.fabric is not IntraFabric.XGMI else None

    def bus_cap(self, algo: Algorithm, proto: Protocol) -> float | None:
        """Bytes/s: the most bus bandwidth ``proto`` moves in ``algo`` on this GPU architecture with
        NCCL's channel count: the ceiling NCCL's tuner emulation applies (:func:`nccl_tuner.bus_caps`:
        LL128 per-channel cap x channels, LL's llMaxBw, the tree's perChMaxTreeBw, each from tuning.cc's
        row for the GPU's architecture) x the protocol's ``cap_efficiency`` (LL128: the share of that
        ceiling A100 reaches, held from its measurements). Tuner and cost read the same per-architecture
        table and channel count, so an architecture's LL128 ceiling moves both. None: links only."""
        if self.view is None or algo not in (Algorithm.RING, Algorithm.TREE):
            return None
        cap = nccl_tuner.bus_caps(self.view, algo.value, proto.value)
        return None if cap is None else cap * self.p.protocols[proto].cap_efficiency

    def _nic_rate(self, streams: int, *, duplex: bool) -> float:
        nic = self.g.nic
        d = nic.duplex_efficiency if duplex else 1.0
        if nic.stream_rate is None:
            return nic.rate * d
        return min(nic.rate, streams * nic.stream_rate * d) if duplex else min(nic.rate, streams * nic.stream_rate)

    def _net(self, rate: float) -> float:
        rate /= self.g.oversubscription
        return rate if self.g.inter_site_rate is None else min(rate, self.g.inter_site_rate)

    def protocols(self) -> tuple[Protocol, ...]:
        # LL128 runs only where every hop is NVLink (NCCL enables it on NVLink only)
        if self.g.fabric is IntraFabric.NVSWITCH:
            return (Protocol.LL, Protocol.LL128, Protocol.SIMPLE)
        return (Protocol.LL, Protocol.SIMPLE)

    def _step(self, pp: ProtocolParams) -> float:
        return pp.pcie_step_s if self.g.fabric is IntraFabric.PCIE else pp.nvlink_step_s

    def _lat(self, pp: ProtocolParams, intra_steps: float, inter_steps: float) -> float:
        return (self.p.launch_s + pp.base_s + intra_steps * self._step(pp)
                + inter_steps * (pp.net_step_s + self.g.net_latency_s))

    def _tree_lat(self, pp: ProtocolParams, intra_steps: float, inter_steps: float) -> float:
        """A tree's steps: its chunks are larger than a ring's (NCCL's tuner charges 28 µs per Simple tree
        step against 3.4 per ring step), so its per-step latencies are its own."""
        intra = self._step(pp) if pp.tree_nvlink_step_s is None or self.g.fabric is IntraFabric.PCIE \
            else pp.tree_nvlink_step_s
        net = pp.net_step_s if pp.tree_net_step_s is None else pp.tree_net_step_s
        return (self.p.launch_s + pp.base_s + intra_steps * intra
                + inter_steps * (net + self.g.net_latency_s))

    def ring_bw(self) -> float:
        return self.intra_bw if self.g.nodes == 1 else min(self.intra_bw, self.net_ring)

    def tree_bw(self) -> float:
        """Algorithm bandwidth of the double binary tree: inside a node a chain at ``tree_bw_factor`` of
        the link (tuning.cc's 0.9 x 0.5); across nodes each node sends and receives ``S`` once, at the
        tree's network rate."""
        bw = self.intra_bw * self.p.tree_bw_factor
        return bw if self.g.nodes == 1 else min(bw, self.net_tree)

    def _bw(self, bw: float, pp: ProtocolParams, cap: float | None = None) -> float:
        """A protocol's bandwidth: its fraction of ``bw``, at most ``cap``."""
        bw *= pp.bw_fraction
        return bw if cap is None else min(bw, cap)

    def cost(self, op: CollectiveOp, algo: Algorithm, proto: Protocol, S: float) -> tuple[float, dict[str, float]]:
        g, pp = self.g, self.p.protocols[proto]
        n, m = g.n, g.nodes
        f = pp.bw_fraction
        if op is CollectiveOp.SEND_RECV:
            bw = (g.p2p_link * self.p.p2p_efficiency if m == 1 else self.net_uni) * f
            lat = self._lat(pp, 1 if m == 1 else 0, 0 if m == 1 else 1)
            return lat + S / bw, {"latency_s": lat, "transfer_s": S / bw}
        if op is CollectiveOp.ALL_TO_ALL:
            # each rank sends S/n to every other rank: (per_node-1)/n S inside its node, the rest out
            intra_b = (g.per_node - 1) / n * S
            inter_b = (n - g.per_node) / n * S
            t_intra = intra_b / (g.p2p_link * self.p.p2p_efficiency * f) if intra_b else 0.0
            t_inter = inter_b * g.per_node / (self.net_duplex * f) if inter_b else 0.0
            lat = self._lat(pp, g.per_node - 1, (n - g.per_node) / max(1, g.per_node))
            return lat + max(t_intra, t_inter), {"latency_s": lat, "intra_s": t_intra, "inter_s": t_inter}
        if algo is Algorithm.RING:
            if op is CollectiveOp.ALL_REDUCE:
                steps, inter = 2 * (n - 1), 2 * (m - 1)
            elif op is CollectiveOp.BROADCAST:
                steps, inter = n - 1, m - 1
            else:
                steps, inter = n - 1, m - 1
            bus = S * bus_factor(op, n)
            bw = self._bw(self.ring_bw(), pp, self.bus_cap(algo, proto))
            lat = self._lat(pp, steps - inter, inter)
            return lat + bus / bw, {"latency_s": lat, "transfer_s": bus / bw}
        if algo is Algorithm.TREE:
            steps_intra = 2 * (g.per_node - 1)
            steps_inter = 2 * math.log2(m) if m > 1 else 0.0
            cap = self.bus_cap(algo, proto)
            bw = self._bw(self.tree_bw(), pp, None if cap is None else cap / 2)  # tree algbw = busbw / 2
            lat = self._tree_lat(pp, steps_intra, steps_inter)
            return lat + S / bw, {"latency_s": lat, "transfer_s": S / bw}
        if algo is Algorithm.NVLS:
            bw = g.p2p_link * self.p.nvlink_efficiency * f
            lat = self._lat(pp, 2, 0)
            return lat + S / bw, {"latency_s": lat, "transfer_s": S / bw}
        if algo is Algorithm.HIERARCHICAL:
            k = g.per_node
            if g.nvls:
                t_node = (S / (g.p2p_link * self.p.nvlink_efficiency * f)) / 2  # RS and AG halves of NVLS
                lat_node = self._lat(pp, 1, 0) - self.p.launch_s
            else:
                t_node = (k - 1) / k * S / (self.intra_bw * f)
                lat_node = self._lat(pp, k - 1, 0) - self.p.launch_s
            t_net = 2 * (m - 1) / m * S / (self.net_duplex * f) if m > 1 else 0.0
            lat_net = self._lat(pp, 0, 2 * (m - 1)) if m > 1 else self.p.launch_s
            total = 2 * (lat_node + t_node) + lat_net + t_net
            return total, {"intra_s": 2 * t_node, "inter_s": t_net, "latency_s": 2 * lat_node + lat_net}
        raise ConfigError(f"algorithm {algo.value} does not implement {op.value}", field="algo", value=algo.value)

    def applicable(self, op: CollectiveOp, algo: Algorithm) -> bool:
        if algo not in ALGORITHMS[op]:
            return False
        if algo is Algorithm.NVLS:
            return self.g.nvls and self.g.nodes == 1 and self.g.fabric is IntraFabric.NVSWITCH
        if algo is Algorithm.HIERARCHICAL:
            return self.g.nodes > 1
        if algo is Algorithm.TREE:
            return self.g.n > 2
        return True


def parse_enum(enum_cls: type[enum.Enum], value: Any, field_name: str) -> Any:
    """``value`` as a member of ``enum_cls`` (a member, or its value in any case, ``-`` for ``_``; algorithm
    names also without ``_``); a ConfigError naming ``field_name`` and the known values otherwise."""
    if isinstance(value, enum_cls):
        return value
    known = [e.value for e in enum_cls]
    key = str(value).strip().lower().replace("-", "_")
    if enum_cls is Algorithm:
        key = key.replace("_", "")
    for e in enum_cls:
        if e.value == key:
            return e
    raise unknown_name(field_name, value, known, field=field_name)


def collective_time(cluster: Cluster | None, op: CollectiveOp | str, nbytes: float, *,
                    gpus: Sequence[str] | None = None, algo: Algorithm | str = Algorithm.AUTO,
                    params: CollectiveParams | None = None, geo: Geometry | None = None) -> CollectiveResult:
    """Time of one collective of ``nbytes`` (nccl-tests' size: the per-rank buffer of all-reduce and
    broadcast, the whole gathered/scattered buffer of all-gather/reduce-scatter, each rank's send buffer
    of all-to-all, the message of send/recv) among ``gpus`` (default: all the cluster's GPUs)."""
    op_e: CollectiveOp = parse_enum(CollectiveOp, op, "op")
    algo_e: Algorithm = parse_enum(Algorithm, algo, "algo")
    if not (isinstance(nbytes, (int, float)) and nbytes >= 0 and math.isfinite(nbytes)):
        raise ConfigError(f"message size must be a finite number of bytes >= 0, got {nbytes!r}", field="size",
                          value=nbytes)
    params = params or default_params()
    if geo is None:
        if cluster is None:
            raise ValueError("collective_time needs a cluster or a geometry")
        geo = geometry(cluster, gpus)
    if op_e is CollectiveOp.SEND_RECV and geo.n != 2:
        raise ConfigError(f"send/recv is between 2 GPUs, got {geo.n}", field="gpus", value=geo.n)
    if geo.n == 1 or nbytes == 0:
        return CollectiveResult(op_e, Algorithm.RING if algo_e is Algorithm.AUTO else algo_e, Protocol.SIMPLE,
                                float(nbytes), geo.n, 0.0)
    model = CollectiveCostModel(geo, params)
    if algo_e is Algorithm.AUTO:
        algos = [a for a in AUTO_CHOICES if model.applicable(op_e, a)]
    else:
        if not model.applicable(op_e, algo_e):
            why = {Algorithm.NVLS: "needs one NVSwitch node with NVLink SHARP (Hopper or later)",
                   Algorithm.HIERARCHICAL: "needs a group on more than one node",
                   Algorithm.TREE: "needs more than 2 GPUs"}.get(algo_e, "")
            supported = ", ".join(a.value for a in ALGORITHMS[op_e])
            detail = f" ({why})" if why and algo_e in ALGORITHMS[op_e] else f"; {op_e.value} runs {supported}"
            raise ConfigError(f"algorithm {algo_e.value} does not apply to {op_e.value} here{detail}",
                              field="algo", value=algo_e.value)
        algos = [algo_e]
    if params.emulate_tuner and op_e is CollectiveOp.ALL_REDUCE:
        # NCCL runs what its own tuner predicts fastest; xpusim prices that choice on its hardware model
        names = tuple(a.value for a in algos if a in (Algorithm.RING, Algorithm.TREE, Algorithm.NVLS))
        if names:
            a_name, p_name = nccl_tuner.choose(tuner_view(geo), float(nbytes), names)
            a_e, p_e = Algorithm(a_name), Protocol(p_name)
            t, br = model.cost(op_e, a_e, p_e, float(nbytes))
            return CollectiveResult(op_e, a_e, p_e, float(nbytes), geo.n, t, br)
    best: CollectiveResult | None = None
    for a in algos:
        for proto in model.protocols():
            if a is Algorithm.NVLS and proto is not Protocol.SIMPLE:
                continue   # NCCL runs NVLS with Simple only (tuning.cc skips its LL and LL128)
            t, br = model.cost(op_e, a, proto, float(nbytes))
            if best is None or t < best.time_s:
                best = CollectiveResult(op_e, a, proto, float(nbytes), geo.n, t, br)
    assert best is not None
    return best


def tuner_view(geo: Geometry) -> nccl_tuner.TunerView:
    """The group as NCCL's tuner sees it (:mod:`hwmodels.network.nccl_tuner`): NVLink at 0.8 of its
    spec rate, PCIe Gen4 at 24 GB/s, each NIC at the speed its port reports (the line rate)."""
    arch, scale = nccl_tuner.arch_index(geo.gpu)
    if geo.fabric is IntraFabric.PCIE:
        intra, kind = nccl_tuner.PCI_VIEW_BPS * geo.intra_link / 31.5e9, "pci"
    else:
        intra, kind = nccl_tuner.NVLINK_VIEW * geo.intra_link, "nvlink"
    ring = tree = intra
    if geo.nodes > 1:
        net = geo.nics_per_node * geo.nic.line_rate
        if geo.inter_site_rate is not None:
            net = min(net, geo.inter_site_rate)
        ring, tree = min(intra, net), min(intra, 2 * net)
    rdma = geo.nic.transport.value in ("infiniband", "roce")
    return nccl_tuner.TunerView(n=geo.n, nodes=geo.nodes, per_node=geo.per_node, intra=kind, ring_bw=ring,
                                tree_bw=tree, arch=arch, arch_scale=scale, amd_cpu=arch < 2, ll128_net=rdma,
                                ll128_intra=geo.fabric is IntraFabric.NVSWITCH and geo.gpu.startswith(
                                    ("a100", "h100", "h200", "b200", "v100", "gh200", "gb200", "b100")),
                                nvls=geo.nvls)


def all_reduce(cluster: Cluster, nbytes: float, **kw: Any) -> CollectiveResult:
    return collective_time(cluster, CollectiveOp.ALL_REDUCE, nbytes, **kw)


def reduce_scatter(cluster: Cluster, nbytes: float, **kw: Any) -> CollectiveResult:
    return collective_time(cluster, CollectiveOp.REDUCE_SCATTER, nbytes, **kw)


def all_gather(cluster: Cluster, nbytes: float, **kw: Any) -> CollectiveResult:
    return collective_time(cluster, CollectiveOp.ALL_GATHER, nbytes, **kw)


def all_to_all(cluster: Cluster, nbytes: float, **kw: Any) -> CollectiveResult:
    return collective_time(cluster, CollectiveOp.ALL_TO_ALL, nbytes, **kw)


def broadcast(cluster: Cluster, nbytes: float, **kw: Any) -> CollectiveResult:
    return collective_time(cluster, CollectiveOp.BROADCAST, nbytes, **kw)


def send_recv(cluster: Cluster, nbytes: float, src: str, dst: str, **kw: Any) -> CollectiveResult:
    return collective_time(cluster, CollectiveOp.SEND_RECV, nbytes, gpus=[src, dst], **kw)


def all_to_allv(cluster: Cluster, send_bytes: Sequence[Sequence[float]], *, gpus: Sequence[str] | None = None,
                params: CollectiveParams | None = None) -> CollectiveResult:
    """All-to-all with uneven sizes: ``send_bytes[i][j]`` bytes from rank i to rank j of the group. The
    busiest rank decides: the most any rank sends or receives inside its node and across the network."""
    params = params or default_params()
    members = list(gpus) if gpus is not None else list(cluster.gpus)
    n = len(members)
    if len(send_bytes) != n or any(len(row) != n for row in send_bytes):
        raise ConfigError(f"send_bytes must be {n} x {n} (one row and column per GPU of the group)",
                          field="send_bytes")
    geo = geometry(cluster, members)
    model = CollectiveCostModel(geo, params)
    node = [cluster.node_of(x) for x in members]
    per_node_count: dict[int, int] = {}
    for nd in node:
        per_node_count[nd] = per_node_count.get(nd, 0) + 1
    best: CollectiveResult | None = None
    total = float(sum(sum(r) for r in send_bytes))
    for proto in model.protocols():
        pp = params.protocols[proto]
        worst = 0.0
        for i in range(n):
            intra_o = sum(send_bytes[i][j] for j in range(n) if j != i and node[j] == node[i])
            intra_i = sum(send_bytes[j][i] for j in range(n) if j != i and node[j] == node[i])
            inter_o = sum(send_bytes[i][j] for j in range(n) if node[j] != node[i])
            inter_i = sum(send_bytes[j][i] for j in range(n) if node[j] != node[i])
            share = model.net_duplex / per_node_count[node[i]] * pp.bw_fraction
            t = max(max(intra_o, intra_i) / (geo.p2p_link * params.p2p_efficiency * pp.bw_fraction),
                    max(inter_o, inter_i) / share)
            worst = max(worst, t)
        lat = model._lat(pp, geo.per_node - 1, (n - geo.per_node) / max(1, geo.per_node))
        res = CollectiveResult(CollectiveOp.ALL_TO_ALL, Algorithm.PAIRWISE, proto, total / n, n, lat + worst,
                               {"latency_s": lat, "transfer_s": worst})
        if best is None or res.time_s < best.time_s:
            best = res
    assert best is not None
    return best
