"""Training planner: the fastest Megatron-style layout of a model on N GPUs (``xpusim plan train``).

Search space (every combination the simulator accepts, :func:`enumerate_layouts`):

- TP: divisors of the node size (TP stays inside a node's NVLink, as Megatron runs it) that divide the
  attention heads (and the GPU count);
- PP: divisors of the layer count that divide ``gpus / TP``; DP = ``gpus / (TP PP)``;
- micro-batch: divisors of the per-replica batch ``global_batch / DP``;
- schedule: 1F1B, and interleaved 1F1B with ``v`` virtual stages for every ``v > 1`` dividing
  ``layers / PP`` when PP > 1 and the micro-batches per replica are a multiple of PP (Megatron-LM's rule).
  GPipe is not searched: its bubble is 1F1B's and it holds every micro-batch in flight (never faster,
  never smaller: Narayanan et al. 2021, Sec. 2.2.1);
- recompute none / selective / full; sequence parallelism on whenever TP > 1 (it removes the
  replicated layer-norm and dropout activations and costs no more communication: Korthikanti et al.
  2022, Sec. 4.2.2) and the sequence divides by TP;
- ZeRO 0-3 when DP > 1 (with DP 1 it shards nothing).

Pruning, in order: the memory model (:func:`hwmodels.train_memory.train_memory`; a layout over the GPU's
memory is out, as ``simulate_training`` would raise ``CapacityError``), then a closed-form step time
(:class:`Estimator`): per-stage compute from the same kernel model and fabric closed forms the simulator
uses (``sim.training.StageCosts``, memoised per TP x micro-batch x recompute), the 1F1B pipeline as
``(n - 1)`` micro-batches of the slowest stage plus one pass through all stages (fill and drain), the
interleaved one with the fill divided by ``v``, i.e. the bubble ``(p - 1) / (v n)`` of Narayanan et al.
2021 (Sec. 2.2.2), the blocking point-to-point sends (``2 v`` per micro-batch and stage), each
stage's DP gradient reduction on its own DP group, the part not hidden under its backwards (the same
bucket rule as the simulator; the slowest stage bounds the step; on a cluster with several NIC types
under each placement the planner will simulate, the fastest counted),
the optimizer's memory-bound passes, ZeRO's all-gathers and the tied-embedding all-reduce.
The ``top`` layouts by estimate are then simulated (:func:`sim.training.simulate_training`) and the
fastest simulated one is the plan; the others are its runner-ups. :func:`exhaustive` simulates every
feasible layout: the reference the tests hold the planner to.

NIC-aware placement (:func:`place_nic_aware`; Holmes, Yang et al. 2023, "Holmes: Towards Distributed
Training Across Clusters with Heterogeneous NIC Environment", arXiv:2312.03549): on a cluster whose nodes
have several NIC types, a layout's pipeline stages are put on blocks of whole nodes (a stage's TP x DP
GPUs), and Holmes' rule decides which nodes form which block: the DP groups, which carry the large
gradient reduction, inside one NIC group (pure blocks) where the group sizes allow it, the fastest NIC
groups first; the pipeline stages, which exchange only ``s b h`` activations point-to-point, across the
NIC boundaries. Which block holds which stage is searched exhaustively (every distinct order simulated)
when there are at most ``MAX_ORDERS`` distinct orders; else two orders are simulated, fastest block first
and the two fastest blocks on the first and last stage with the slowest in the middle (the end stages
hold the embedding and all-reduce its tied gradient after both their DP reductions, so a slow DP group
there delays the step; the exhaustive searches put the slow blocks in the middle for that reason).
The comparison is Megatron's default order over the cluster's node list (the first ``layout.gpus``
GPUs, NIC-oblivious), simulated on the same cluster. Not done: Holmes' speed-balanced layer partition
across stages (every stage holds ``layers / PP`` layers here) and its per-NIC-type NCCL selection.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hwmodels.gpu import GPUSpec
from hwmodels.network.collectives import CollectiveOp, Geometry, collective_time, geometry
from hwmodels.network.topology import Cluster
from hwmodels.train_memory import train_memory
from sim.training import (
    ADAM_BYTES,
    COPY_BYTES,
    DEFAULT_BUCKET_PARAMS,
    DEFAULT_STACK,
    GRAD_NORM_BYTES,
    UNSCALE_BYTES,
    ZERO_GRAD_BYTES,
    StageCosts,
    TrainReport,
    check_precision,
    simulate_training,
)
from workloads.errors import ConfigError, Infeasible
from workloads.model_spec import ModelSpec
from workloads.ops import DType, MemoryOp, OpKind
from workloads.train_ops import (
    AttentionImpl,
    Recompute,
    Schedule,
    TrainLayout,
    check_layout,
    head_passes,
    layer_passes,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]   # (simulated so far, to simulate)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_layouts(model: ModelSpec, gpus: int, global_batch: int, *, seq: int = 2048, gpus_per_node: int = 8,
                      attention: AttentionImpl = AttentionImpl.FLASH, dtype: DType = DType.BF16,
                      recompute: Sequence[Recompute] = tuple(Recompute),
                      zero: Sequence[int] = (0, 1, 2, 3)) -> Iterator[TrainLayout]:
    """Every layout of the search space (module docstring) that passes :func:`check_layout`."""
    layers = model.num_layers
    for tp in _divisors(gpus_per_node):
        if gpus % tp or model.num_heads % tp:
            continue
        for pp in _divisors(layers):
            if (gpus // tp) % pp:
                continue
            dp = gpus // (tp * pp)
            if global_batch % dp:
                continue
            per_replica = global_batch // dp
            sp = tp > 1 and seq % tp == 0
            for mb in _divisors(per_replica):
                n = per_replica // mb
                scheds = [(Schedule.ONE_F_ONE_B, 1)]
                if pp > 1 and n % pp == 0:
                    scheds += [(Schedule.INTERLEAVED, v) for v in _divisors(layers // pp) if v > 1]
                for sched, v in scheds:
                    for rec in recompute:
                        for z in (zero if dp > 1 else (0,)):
                            lay = TrainLayout(tp=tp, pp=pp, dp=dp, micro_batch=mb, global_batch=global_batch,
                                              seq=seq, sequence_parallel=sp, recompute=rec, schedule=sched,
                                              virtual_stages=v, zero=z, attention=attention, dtype=dtype)
                            try:
                                check_layout(model, lay, gpus)
                            except ConfigError:
                                continue
                            yield lay


def _rank(lay: TrainLayout, stage: int, dp_rank: int = 0, tp_rank: int = 0) -> int:
    """Megatron-LM's default rank order (as ``sim.training``): TP fastest, then DP, then PP."""
    return tp_rank + lay.tp * (dp_rank + lay.dp * stage)


class Estimator:
    """Closed-form step time of a layout (module docstring), memoised so that thousands of layouts cost
    little: a layer's passes are costed once per (TP, micro-batch, recompute, SP), a collective once per
    group and size.

    Communication over the data-parallel groups is priced per pipeline stage on that stage's own DP group
    (TP rank 0's, as the simulator does; on a heterogeneous cluster the groups differ) and the slowest
    stage bounds the step; the tied-embedding all-reduce on the slowest first/last-stage pair of all the
    replicas. ``placement_cluster`` (several NIC types): the planner will also place each layout NIC-aware
    on it (:func:`place_nic_aware`), so a layout's estimate is the fastest over the placements that would
    try (Megatron's order, and each NIC-aware stage order); without it, Megatron's order on ``cluster``."""

    def __init__(self, model: ModelSpec, gpu: GPUSpec, cluster: Cluster, *, stack: str = DEFAULT_STACK,
                 grad_bytes: int = 4, bucket_params: int = DEFAULT_BUCKET_PARAMS,
                 placement_cluster: Cluster | None = None) -> None:
        self.model, self.gpu = model, gpu
        pcl = placement_cluster
        self.place_nic = pcl is not None and len(nic_groups(pcl)) > 1
        self.cluster = pcl if self.place_nic and pcl is not None else cluster
        self.costs = StageCosts(gpu, stack)
        self.grad_bytes, self.bucket_params = grad_bytes, bucket_params
        self._layer: dict[Any, tuple[float, float, float, float]] = {}
        self._coll: dict[Any, float] = {}
        self._pass: dict[Any, float] = {}
        self._geos: dict[tuple[int, ...], Geometry] = {}
        self._places: dict[tuple[int, int, int], list[tuple[int, ...] | None]] = {}
        self._dp_geos: dict[tuple[int, int, int, int], list[Geometry]] = {}
        self._dp_kinds: dict[tuple[int, int, int, int], list[tuple[Geometry, bool, bool]]] = {}
        self._pair_geos: dict[tuple[int, int, int, int], set[Geometry]] = {}
        self._emb_geos: dict[tuple[int, int, int, int], set[Geometry]] = {}

    def _geo(self, ranks: tuple[int, ...]) -> Geometry:
        if ranks not in self._geos:
            self._geos[ranks] = geometry(self.cluster, [self.cluster.gpus[r] for r in ranks])
        return self._geos[ranks]

    def _collective(self, op: CollectiveOp, nbytes: float, ranks: tuple[int, ...]) -> float:
        key = (op, nbytes, ranks)
        if key not in self._coll:
            self._coll[key] = collective_time(None, op, nbytes, geo=self._geo(ranks)).time_s
        return self._coll[key]

    def _mem_pass(self, name: str, n_params: float, rw: tuple[float, float]) -> float:
        key = (name, n_params)
        if key not in self._pass:
            op = MemoryOp(name, OpKind.ELEMENTWISE, max(1, int(n_params // 4096)), rw[0] * n_params,
                          rw[1] * n_params)
            self._pass[key] = self.costs.kernels.time(op)
        return self._pass[key]

    def placements(self, lay: TrainLayout) -> list[tuple[int, ...] | None]:
        """The rank -> GPU maps the planner will simulate for ``lay`` (None: Megatron's order)."""
        key = (lay.tp, lay.pp, lay.dp)
        if key not in self._places:
            places: list[tuple[int, ...] | None] = [None]
            if self.place_nic:
                places += nic_aware_candidates(lay, self.cluster)[1]
            self._places[key] = places
        return self._places[key]

    def layer_costs(self, lay: TrainLayout) -> tuple[float, float, float, float]:
        """(layer forward, layer backward with recompute, first-stage extras, last-stage extras) seconds
        of one micro-batch on one GPU, TP collectives included (stage 0's TP group)."""
        key = (lay.tp, lay.micro_batch, lay.recompute, lay.sequence_parallel, lay.seq, lay.attention, lay.dtype)
        if key not in self._layer:
            geo = self._geo(tuple(range(lay.tp))) if lay.tp > 1 else None
            pc = self.costs.pass_cost
            passes = layer_passes(self.model, lay)
            first, last = head_passes(self.model, lay)
            self._layer[key] = (pc(passes.forward, geo).total,
                                pc(passes.recompute, geo).total + pc(passes.backward, geo).total,
                                pc(first.forward, geo).total + pc(first.backward, geo).total,
                                pc(last.forward, geo).total + pc(last.backward, geo).total)
        return self._layer[key]

    def step_time(self, lay: TrainLayout) -> float:
        """The estimate: the fastest of :meth:`placements`."""
        return min(self._step_time(lay, place, i) for i, place in enumerate(self.placements(lay)))

    def _step_time(self, lay: TrainLayout, place: tuple[int, ...] | None, place_id: int = 0) -> float:
        m = self.model
        p, v, n, t = lay.pp, lay.chunks, lay.num_micro_batches, lay.tp

        def ranks(*rs: int) -> tuple[int, ...]:
            return rs if place is None else tuple(place[r] for r in rs)

        gkey = (lay.tp, p, lay.dp, place_id)
        if gkey not in self._dp_geos:    # each stage's DP group (TP rank 0's), once per degrees and placement
            self._dp_geos[gkey] = [self._geo(ranks(*(_rank(lay, s, d) for d in range(lay.dp))))
                                   for s in range(p)] if lay.dp > 1 else []
            # stages whose DP groups have the same geometry and hold the same parameters cost the same
            self._dp_kinds[gkey] = list({(g, s == 0, s == p - 1) for s, g in enumerate(self._dp_geos[gkey])})
        kinds = self._dp_kinds[gkey]

        def coll(op: CollectiveOp, nbytes: float, geo: Geometry) -> float:
            key = (op, nbytes, geo)
            if key not in self._coll:
                self._coll[key] = collective_time(None, op, nbytes, geo=geo).time_s
            return self._coll[key]

        lf, lb, h_first, h_last = self.layer_costs(lay)
        per_chunk = m.num_layers // (p * v)
        cf, cb = per_chunk * lf, per_chunk * lb
        chunk_params = per_chunk * m.layer_params() / t
        if lay.zero >= 3 and lay.dp > 1:
            g = max(coll(CollectiveOp.ALL_GATHER, chunk_params * lay.act_dtype.bytes, k[0]) for k in kinds)
            cf, cb = max(cf, g), max(cb, g)
        body = v * (cf + cb)
        heads = max(h_first, h_last) if p > 1 else h_first + h_last
        w_max = body + heads
        w_sum = p * body + h_first + h_last
        send = 0.0
        if p > 1:
            full = lay.seq * lay.micro_batch * m.hidden_size * lay.act_dtype.bytes
            # the slowest stage-to-stage pair of any replica (on a heterogeneous cluster they differ)
            if gkey not in self._pair_geos:
                pairs = {ranks(_rank(lay, s, d), _rank(lay, (s + 1) % p, d)) for s in range(p) for d in range(lay.dp)}
                self._pair_geos[gkey] = {self._geo(pr) for pr in pairs}
            send = max(coll(CollectiveOp.SEND_RECV, full / t, g) for g in self._pair_geos[gkey])
            if t > 1 and not lay.sequence_parallel:
                send += self._collective(CollectiveOp.ALL_GATHER, full, tuple(range(t)))
        # (n - 1) micro-batches at the slowest stage's pace plus one pass through every stage (the fill and
        # drain; a chunk's share of it when interleaved); each chunk's forward and backward sends block
        pipe = (n - 1) * (w_max + 2 * v * send) + (w_max + (w_sum - w_max) / v + 2 * (p - 1) * send)
        # DP, per stage on its own DP group, a FIFO stream of buckets: chunk c's buckets become ready during
        # its last backward, which ends c p backward chunks before the stage's last one (the interleaved
        # cool-down runs each chunk's last p micro-batches in turn; 1F1B has one chunk); what the stream has
        # left after the stage's last backward is exposed. The slowest stage bounds the step.
        stage = v * chunk_params + m.embedding_params() / t
        exposed = gather = 0.0
        if lay.dp > 1:
            op = CollectiveOp.ALL_REDUCE if lay.zero == 0 else CollectiveOp.REDUCE_SCATTER
            for dgeo, first, last in kinds:
                stream = -math.inf
                for c in range(v - 1, -1, -1):
                    own = chunk_params + (m.embedding_params() / t if first and c == 0 else 0.0)
                    if last and c == v - 1 and p > 1:
                        own += m.vocab_size * m.hidden_size / t
                    nb = max(1, math.ceil(own / self.bucket_params))
                    t_b = coll(op, own / nb * self.grad_bytes, dgeo)
                    end = -c * p * cb if v > 1 else 0.0
                    for k in range(nb):
                        stream = max(stream, end - cb + (k + 1) / nb * cb) + t_b
                exposed = max(exposed, stream)
                if lay.zero >= 1:
                    gather = max(gather, coll(CollectiveOp.ALL_GATHER, stage * lay.act_dtype.bytes, dgeo))
        shard = stage / (lay.dp if lay.zero >= 1 else 1)
        opt = (self._mem_pass("unscale_check_inf", shard, UNSCALE_BYTES)
               + self._mem_pass("grad_norm", shard, GRAD_NORM_BYTES)
               + self._mem_pass("adam_step", shard, ADAM_BYTES)
               + self._mem_pass("copy_main_to_model", shard, COPY_BYTES)
               + self._mem_pass("zero_grad_buffer", stage, ZERO_GRAD_BYTES)) + gather
        emb = 0.0
        if p > 1 and m.tied_embeddings:
            if gkey not in self._emb_geos:
                self._emb_geos[gkey] = {self._geo(ranks(_rank(lay, 0, d), _rank(lay, p - 1, d)))
                                        for d in range(lay.dp)}
            emb = max(coll(CollectiveOp.ALL_REDUCE, m.vocab_size * m.hidden_size / t * 4.0, g)
                      for g in self._emb_geos[gkey])
        return pipe + exposed + emb + opt


# ---- NIC-aware placement (Holmes) ---------------------------------------------------------------------
MAX_ORDERS = 24          # distinct stage orders simulated exhaustively; more: the fastest-first order
_PROBE_BYTES = 64e6      # the all-reduce that ranks NIC groups by speed (a DP bucket's order of size)


@dataclass(frozen=True)
class NicGroup:
    """Nodes of a cluster with the same node type, NIC type and NIC count (Holmes' "NIC environment")."""

    label: str
    nodes: tuple[int, ...]


def nic_groups(cluster: Cluster) -> list[NicGroup]:
    """The cluster's nodes grouped by (node type, NIC type, NICs per node), in node order."""
    by_key: dict[tuple[str, str, int], list[int]] = {}
    for node in range(cluster.num_nodes):
        spec, nic = cluster.node_spec(node), cluster.nic_spec(node)
        by_key.setdefault((spec.id, nic.id, spec.nics), []).append(node)
    return [NicGroup(f"{nic} x{k}" + (f" ({node})" if len({k2[0] for k2 in by_key}) > 1 else ""), tuple(nodes))
            for (node, nic, k), nodes in by_key.items()]


@dataclass
class Placement:
    """A layout placed NIC-aware and NIC-oblivious on one cluster, both simulated."""

    layout: TrainLayout
    aware: TrainReport
    oblivious: TrainReport
    gpus: tuple[int, ...]                 # logical rank (Megatron order) -> index into cluster.gpus
    stage_groups: list[list[str]]         # per stage: the NIC groups of its nodes
    simulated: int                        # placements simulated (the oblivious one not counted)
    search: str                           # "exhaustive" | "heuristic" | "single-group" | "node-shared"

    @property
    def gain(self) -> float:
        """NIC-oblivious step time / NIC-aware step time."""
        return self.oblivious.step_time_s / self.aware.step_time_s

    def dp_groups_pure(self) -> bool:
        """Every stage's nodes (hence its DP groups) in one NIC group."""
        return all(len(g) == 1 for g in self.stage_groups)

    def to_dict(self) -> dict[str, Any]:
        return {"nic_aware_step_s": self.aware.step_time_s, "nic_oblivious_step_s": self.oblivious.step_time_s,
                "gain": self.gain, "stage_nic_groups": self.stage_groups, "placements_simulated": self.simulated,
                "search": self.search}


def _block_gpus(lay: TrainLayout, blocks: Sequence[Sequence[int]], gpn: int) -> tuple[int, ...]:
    """Rank -> GPU index when stage ``s`` holds the nodes ``blocks[s]`` (Megatron order inside a stage)."""
    per_stage = lay.gpus // lay.pp
    out = []
    for r in range(lay.gpus):
        s, i = divmod(r, per_stage)
        out.append(blocks[s][i // gpn] * gpn + i % gpn)
    return tuple(out)


def _distinct_orders(kinds: list[int], limit: int) -> list[tuple[int, ...]] | None:
    """Distinct permutations of the multiset ``kinds`` (None when there are more than ``limit``)."""
    count = math.factorial(len(kinds))
    for k in set(kinds):
        count //= math.factorial(kinds.count(k))
    if count > limit:
        return None
    return sorted(set(itertools.permutations(kinds)))


def nic_aware_candidates(lay: TrainLayout, cluster: Cluster, *,
                         max_orders: int = MAX_ORDERS) -> tuple[str, list[tuple[int, ...]]]:
    """(search, placements): the rank -> GPU maps Holmes' rule (module docstring) would simulate for
    ``lay`` on ``cluster``: ``"single-group"`` / ``"node-shared"`` with none (nothing to place),
    ``"exhaustive"`` with every distinct stage order, or ``"heuristic"`` with two."""
    gpn = cluster.gpus_per_node
    groups = nic_groups(cluster)
    per_stage = lay.gpus // lay.pp
    if len(groups) == 1 or per_stage % gpn:
        # one NIC type: nothing to choose; a stage smaller than a node: stages share nodes, not placed here
        return ("single-group" if len(groups) == 1 else "node-shared"), []
    label = {n: g.label for g in groups for n in g.nodes}
    k = per_stage // gpn                         # nodes per stage block

    # rank the NIC groups by the time of a DP-sized all-reduce over TP rank 0's GPUs of (up to) k of their nodes
    def speed(g: NicGroup) -> float:
        nodes = g.nodes[:max(2, k)]
        ranks = tuple(n * gpn for n in nodes)
        return collective_time(None, CollectiveOp.ALL_REDUCE, _PROBE_BYTES,
                               geo=geometry(cluster, [cluster.gpus[r] for r in ranks])).time_s
    order = sorted(groups, key=speed)            # fastest first
    rank_of = {g.label: i for i, g in enumerate(order)}
    pure: list[tuple[int, ...]] = []
    left: list[int] = []
    for g in order:
        nb = len(g.nodes) // k
        pure += [g.nodes[i * k:(i + 1) * k] for i in range(nb)]
        left += list(g.nodes[nb * k:])
    if len(pure) >= lay.pp:
        blocks = pure[:lay.pp]
    else:                                       # mixed blocks from the leftover nodes, fastest first
        blocks = pure + [tuple(left[i * k:(i + 1) * k]) for i in range(lay.pp - len(pure))]

    def kind(b: Sequence[int]) -> tuple[int, ...]:   # a block's NIC groups by speed rank, slowest first
        return tuple(sorted((rank_of[label[n]] for n in b), reverse=True))

    kinds = sorted({kind(b) for b in blocks})     # fastest kind first
    kind_id = [kinds.index(kind(b)) for b in blocks]
    orders = _distinct_orders(kind_id, max_orders)
    search = "exhaustive"
    if orders is None:
        # two heuristic orders: fastest first; and the two fastest blocks on the first and last stage
        # (they also hold the embedding and all-reduce its tied gradient after both their DP reductions),
        # the slowest in the middle
        ranked_ids = sorted(kind_id)
        ends = [ranked_ids[0]] + ranked_ids[2:][::-1] + [ranked_ids[1]] if len(ranked_ids) > 2 else ranked_ids
        orders, search = sorted({tuple(ranked_ids), tuple(ends)}), "heuristic"
    places = []
    for o in orders:
        pool = {i: [b for b, kid in zip(blocks, kind_id, strict=True) if kid == i] for i in set(kind_id)}
        places.append(_block_gpus(lay, [pool[i].pop(0) for i in o], gpn))
    return search, places


def place_nic_aware(model: ModelSpec, lay: TrainLayout, gpu: GPUSpec, cluster: Cluster, *,
                    stack: str = DEFAULT_STACK, grad_bytes: int = 4, max_orders: int = MAX_ORDERS,
                    oblivious: TrainReport | None = None) -> Placement:
    """Holmes' NIC-aware placement of ``lay`` on ``cluster`` (module docstring), simulated against the
    NIC-oblivious one (Megatron's default order over the first ``lay.gpus`` GPUs; pass its report as
    ``oblivious`` when already simulated on this cluster). The cluster may hold more nodes than the
    layout needs: the placement chooses which nodes to use."""
    gpn = cluster.gpus_per_node
    if len(cluster.gpus) < lay.gpus:
        raise ConfigError(f"the layout needs {lay.gpus} GPUs, the cluster was sized to {len(cluster.gpus)}",
                          field="gpus", value=len(cluster.gpus))

    def sim(place: tuple[int, ...] | None) -> TrainReport:
        return simulate_training(model, lay, gpu, cluster, stack=stack, grad_bytes=grad_bytes, placement=place)

    base = oblivious if oblivious is not None else sim(None)
    label = {n: g.label for g in nic_groups(cluster) for n in g.nodes}
    ident = tuple(range(lay.gpus))

    def stage_labels(place: tuple[int, ...]) -> list[list[str]]:
        per = lay.gpus // lay.pp
        return [sorted({label[place[r] // gpn] for r in range(s * per, (s + 1) * per)}) for s in range(lay.pp)]

    search, places = nic_aware_candidates(lay, cluster, max_orders=max_orders)
    if not places:
        return Placement(lay, base, base, ident, stage_labels(ident), 0, search)
    best: tuple[TrainReport, tuple[int, ...]] | None = None
    for place in places:
        rep = sim(place)
        if best is None or rep.step_time_s < best[0].step_time_s:
            best = (rep, place)
    assert best is not None
    log.info("NIC-aware placement of %s: %d orders (%s), %.4g s vs %.4g s oblivious", lay, len(places), search,
             best[0].step_time_s, base.step_time_s)
    return Placement(lay, best[0], base, best[1], stage_labels(best[1]), len(places), search)


@dataclass
class Candidate:
    layout: TrainLayout
    estimate_s: float
    memory_bytes: float
    report: TrainReport | None = None
    placement: Placement | None = None    # on a cluster with several NIC types

    @property
    def chosen_report(self) -> TrainReport | None:
        """The simulation report of the placement the plan uses: the NIC-aware one when it was placed and is
        faster than Megatron's order, else Megatron's order (``report``)."""
        if self.placement is not None and (self.report is None
                                           or self.placement.aware.step_time_s < self.report.step_time_s):
            return self.placement.aware
        return self.report

    @property
    def nic_aware(self) -> bool:
        """Whether the plan uses the NIC-aware placement (:attr:`chosen_report` is it)."""
        return self.placement is not None and self.chosen_report is self.placement.aware \
            and self.placement.search not in ("single-group", "node-shared")

    @property
    def step_time_s(self) -> float:
        """The simulated step of the chosen placement (:attr:`chosen_report`)."""
        rep = self.chosen_report
        return rep.step_time_s if rep is not None else math.inf

    def label(self) -> str:
        lay = self.layout
        sched = f"interleaved x{lay.virtual_stages}" if lay.chunks > 1 else lay.schedule.value
        return (f"tp{lay.tp} pp{lay.pp} dp{lay.dp} mb{lay.micro_batch} {sched} recompute {lay.recompute.value}"
                f"{' sp' if lay.sequence_parallel else ''}{f' zero{lay.zero}' if lay.zero else ''}")

    def to_dict(self) -> dict[str, Any]:
        lay = self.layout
        out: dict[str, Any] = {
            "label": self.label(), "tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "micro_batch": lay.micro_batch,
            "schedule": lay.schedule.value, "virtual_stages": lay.virtual_stages,
            "recompute": lay.recompute.value, "sequence_parallel": lay.sequence_parallel, "zero": lay.zero,
            "estimate_s": self.estimate_s, "memory_gib_per_gpu": self.memory_bytes / 1024**3}
        rep = self.chosen_report
        if rep is not None:   # every figure from the chosen placement's own simulation
            out.update(rep.summary())
        if self.placement is not None:
            out["placement"] = {**self.placement.to_dict(), "chosen": "nic-aware" if self.nic_aware
                                else "megatron-order"}
        return out


@dataclass
class TrainPlan:
    best: Candidate
    runner_ups: list[Candidate]
    enumerated: int                  # layouts of the search space
    fit: int                         # of those, within the GPU's memory
    simulated: int
    wall_s: float
    stats: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"plan": self.best.to_dict(), "runner_ups": [c.to_dict() for c in self.runner_ups],
               "layouts_enumerated": self.enumerated, "layouts_fit_memory": self.fit,
               "layouts_simulated": self.simulated, "wall_s": self.wall_s}
        if self.best.placement is not None:
            out["placement"] = self.best.placement.to_dict()
        return out


def _no_layout(model: ModelSpec, gpus: int, global_batch: int, gpn: int) -> Infeasible:
    return Infeasible(f"no parallel layout of {model.name} on {gpus} GPUs with global batch {global_batch}: TP must "
                      f"divide the node size ({gpn}), the {model.num_heads} heads and the GPU count; PP the "
                      f"{model.num_layers} layers and gpus / TP; DP = gpus / (TP x PP) times a micro-batch the "
                      f"global batch")


def feasible(model: ModelSpec, gpu: GPUSpec, gpus: int, global_batch: int, *, seq: int = 2048, gpus_per_node: int = 8,
             attention: AttentionImpl = AttentionImpl.FLASH, dtype: DType = DType.BF16,
             grad_bytes: int = 4, headroom_bytes: float = 0.0) -> tuple[int, list[tuple[TrainLayout, float]]]:
    """(layouts enumerated, [(layout, memory bytes) of those that fit the GPU's memory less
    ``headroom_bytes``]). ``Infeasible`` when none is enumerated or none fits."""
    if gpus < 1 or global_batch < 1:
        raise ConfigError(f"gpus and global batch must be >= 1, got {gpus} and {global_batch}", field="gpus",
                          value=gpus)
    if not 0.0 <= headroom_bytes < gpu.memory_bytes:
        raise ConfigError(f"memory headroom must be >= 0 and below the GPU's memory, got {headroom_bytes / 1024**3:g} "
                          "GiB", field="memory_headroom", value=headroom_bytes)
    check_precision(gpu, dtype)
    limit = gpu.memory_bytes - headroom_bytes
    count, fits, least = 0, [], math.inf
    for lay in enumerate_layouts(model, gpus, global_batch, seq=seq, gpus_per_node=gpus_per_node,
                                 attention=attention, dtype=dtype):
        count += 1
        mem = train_memory(model, lay, grad_bytes=grad_bytes).total
        least = min(least, mem)
        if mem <= limit:
            fits.append((lay, mem))
    if not count:
        raise _no_layout(model, gpus, global_batch, gpus_per_node)
    if not fits:
        raise Infeasible(f"none of the {count} layouts of {model.name} on {gpus} GPUs fits in {gpu.name}'s "
                         f"{gpu.memory_bytes / 1024**3:.1f} GiB (less {headroom_bytes / 1024**3:g} GiB headroom): "
                         f"the smallest needs {least / 1024**3:.1f} GiB per GPU")
    return count, fits


def plan_train(model: ModelSpec, gpu: GPUSpec, cluster: Cluster, gpus: int, global_batch: int, *, seq: int = 2048,
               top: int = 5, attention: AttentionImpl = AttentionImpl.FLASH, dtype: DType = DType.BF16,
               stack: str = DEFAULT_STACK, grad_bytes: int = 4, headroom_bytes: float = 0.0,
               progress: Progress | None = None, placement_cluster: Cluster | None = None) -> TrainPlan:
    """The fastest layout of ``model`` on ``gpus`` GPUs of ``cluster`` (sized to at least ``gpus``) for
    ``global_batch`` sequences of ``seq`` tokens: enumerate, prune by memory, rank by the closed-form
    estimate, simulate the ``top`` best; the fastest simulated layout with its report and the runner-ups.
    ``headroom_bytes``: memory per GPU kept free beyond the memory model (CUDA context, NCCL buffers,
    allocator fragmentation, which the model does not count). On a cluster with several NIC types
    (``placement_cluster``, default ``cluster``: the nodes a placement may choose from) every simulated
    layout is also placed NIC-aware (:func:`place_nic_aware`) and ranked by the faster placement."""
    t0 = time.perf_counter()
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}", field="top", value=top)
    if len(cluster.gpus) < gpus:
        raise ConfigError(f"the plan needs {gpus} GPUs, the cluster was sized to {len(cluster.gpus)}", field="gpus",
                          value=gpus)
    count, fits = feasible(model, gpu, gpus, global_batch, seq=seq, gpus_per_node=cluster.gpus_per_node,
                           attention=attention, dtype=dtype, grad_bytes=grad_bytes, headroom_bytes=headroom_bytes)
    pcl = cluster if placement_cluster is None else placement_cluster
    est = Estimator(model, gpu, cluster, stack=stack, grad_bytes=grad_bytes, placement_cluster=pcl)
    ranked = sorted((Candidate(lay, est.step_time(lay), mem) for lay, mem in fits),
                    key=lambda c: (c.estimate_s, c.memory_bytes))
    t1 = time.perf_counter()
    # layouts whose estimates tie and that differ only in what the closed form does not price (ZeRO 1 vs 2,
    # recompute none vs selective with FlashAttention: the same step) take one simulation slot, the one
    # with less memory: the ``top`` slots go to distinct candidates
    chosen: list[Candidate] = []
    seen: set[tuple[Any, ...]] = set()
    for c in ranked:
        lay = c.layout
        sig = (c.estimate_s, lay.tp, lay.pp, lay.dp, lay.micro_batch, lay.schedule, lay.virtual_stages)
        if sig not in seen:
            seen.add(sig)
            chosen.append(c)
            if len(chosen) == top:
                break
    for i, c in enumerate(chosen):
        _simulate(c, model, gpu, cluster, pcl, stack, grad_bytes)
        if progress is not None:
            progress(i + 1, len(chosen))
    done = sorted(chosen, key=lambda c: (c.step_time_s, c.memory_bytes))
    wall = time.perf_counter() - t0
    log.info("plan train: %d layouts, %d fit, %d simulated in %.2f s", count, len(fits), len(chosen), wall)
    return TrainPlan(done[0], done[1:], count, len(fits), len(chosen), wall,
                     {"estimate_wall_s": t1 - t0, "simulate_wall_s": wall - (t1 - t0)})


def _simulate(c: Candidate, model: ModelSpec, gpu: GPUSpec, cluster: Cluster, pcl: Cluster, stack: str,
              grad_bytes: int) -> None:
    """Simulate ``c`` on ``cluster`` (Megatron's order) and, where ``pcl`` has several NIC types, place it
    NIC-aware on ``pcl``."""
    c.report = simulate_training(model, c.layout, gpu, cluster, stack=stack, grad_bytes=grad_bytes)
    if len(nic_groups(pcl)) > 1:
        c.placement = place_nic_aware(model, c.layout, gpu, pcl, stack=stack, grad_bytes=grad_bytes,
                                      oblivious=c.report if pcl is cluster else None)


def exhaustive(model: ModelSpec, gpu: GPUSpec, cluster: Cluster, gpus: int, global_batch: int, *, seq: int = 2048,
               attention: AttentionImpl = AttentionImpl.FLASH, dtype: DType = DType.BF16,
               stack: str = DEFAULT_STACK, grad_bytes: int = 4,
               placement_cluster: Cluster | None = None) -> list[Candidate]:
    """Every layout that fits, simulated (and placed NIC-aware as :func:`plan_train` does), fastest first:
    the reference for :func:`plan_train`."""
    _, fits = feasible(model, gpu, gpus, global_batch, seq=seq, gpus_per_node=cluster.gpus_per_node,
                       attention=attention, dtype=dtype, grad_bytes=grad_bytes)
    pcl = cluster if placement_cluster is None else placement_cluster
    est = Estimator(model, gpu, cluster, stack=stack, grad_bytes=grad_bytes, placement_cluster=pcl)
    out = []
    for lay, mem in fits:
        c = Candidate(lay, est.step_time(lay), mem)
        _simulate(c, model, gpu, cluster, pcl, stack, grad_bytes)
        out.append(c)
    return sorted(out, key=lambda c: (c.step_time_s, c.memory_bytes))


__all__ = ["Candidate", "Estimator", "NicGroup", "Placement", "TrainPlan", "enumerate_layouts", "exhaustive",
           "feasible", "nic_aware_candidates", "nic_groups", "place_nic_aware", "plan_train"]
