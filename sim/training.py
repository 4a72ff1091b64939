"""One training step of a Megatron-style parallel layout, simulated: ``simulate_training(...) -> TrainReport``.

What is an event: every micro-batch's forward and backward of every model chunk on every pipeline
stage is a SimPy timeout on that stage's device (a process per stage, running its schedule's list in
order); a chunk waits for its input from the previous (forward) or next (backward) virtual stage,
which arrives a point-to-point send after the producer finished (the network fabric's send/recv
closed form between the two stages' GPUs on the cluster; sends are asynchronous for the sender, as
with Megatron's batched isend/irecv they overlap the sender's next compute). Time is integer ns.

Inside a chunk (closed form, :class:`StageCosts`): its layers' kernels from the GPU kernel model
(``GPUKernelModel(gpu, stack)``) and the tensor-parallel collectives from the fabric's closed form on
the TP group's GPUs; TP collectives are on the critical path (Megatron runs them synchronously
between the GEMMs), so they are exposed by construction and reported as such.

Schedules (Megatron-LM ``pipeline_parallel/schedules.py``): GPipe (all forwards, then all
backwards), 1F1B (``p - s - 1`` warm-up forwards on stage ``s``, then one forward one backward, then
the cool-down backwards), interleaved 1F1B with ``v`` model chunks per stage (chunk ``c`` of stage
``s`` is virtual stage ``c p + s``; warm-up ``2 (p - s - 1) + (v - 1) p`` forwards; micro-batches in
groups of ``p``).

Data parallelism: one DP replica's pipeline is simulated (the replicas are symmetric: same costs, same
schedule); its gradients are reduced across the DP group on each stage's communication stream, a FIFO
of buckets (Megatron's ``--overlap-grad-reduce``, buckets of ``bucket_params``): a chunk's gradients
become ready, bucket by bucket, during its last backward, and each bucket's all-reduce (fp32 grads;
ZeRO >= 1: reduce-scatter) starts when it is ready and the stream is free. After the last bucket the
optimizer step (Adam: a memory-bound pass over the stage's (sharded) fp32 states) and, for ZeRO >= 1,
the all-gather of the updated 16-bit weights. ZeRO-3 also all-gathers each chunk's weights before its
forward and its backward, prefetched on the communication stream (a chunk takes max(compute, gather)).

Reported: step time, Megatron model FLOP/s per GPU (Narayanan et al. 2021) and with recompute
(hardware), MFU/HFU against the GPU's dense peak, bubble fraction (mean over stages of the idle share
of the pipeline span, less the waits attributed to the sends), exposed communication by kind, memory
breakdown, and a per-stage timeline.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import GPUKernelModel
from hwmodels.network.collectives import CollectiveOp, Geometry, collective_time, geometry
from hwmodels.network.topology import Cluster
from hwmodels.train_memory import TrainMemory, check_fits, train_memory
from workloads.model_spec import ModelSpec
from workloads.ops import DType, Gemm, MemoryOp, OpKind
from workloads.specfile import unknown_name
from workloads.train_ops import (
    Recompute,
    RingAttention,
    Schedule,
    TrainLayout,
    TrainOp,
    check_layout,
    head_passes,
    layer_passes,
    model_flops_per_iteration,
)


class PipelineEngine(enum.Enum):
    """How :func:`simulate_training` evaluates the pipeline's dependency graph (both give identical times)."""

    LIST = "list"     # list-scheduling order, no event heap
    SIMPY = "simpy"   # every forward/backward a SimPy event on its stage


DEFAULT_STACK = "cublas"          # Megatron's GEMMs are cuBLAS calls; memory-bound ops fused grid kernels
DEFAULT_BUCKET_PARAMS = 40_000_000  # Megatron-LM DistributedDataParallel bucket size (params)
# Megatron-LM's mixed-precision optimizer step (``Float16OptimizerWithFloat16Params.step``), passes over
# the (sharded) fp32 state, bytes per parameter (read, written):
UNSCALE_BYTES = (4.0, 4.0)        # _amp_foreach_non_finite_check_and_unscale_ on the fp32 main grads
GRAD_NORM_BYTES = (4.0, 0.0)      # clip_grad_norm_fp32: multi_tensor_l2norm over the grads
ADAM_BYTES = (16.0, 12.0)         # apex FusedAdam: reads grad, master, m, v; writes master, m, v
COPY_BYTES = (4.0, 2.0)           # _copy_main_params_to_model_params: fp32 master -> 16-bit weights
ZERO_GRAD_BYTES = (0.0, 4.0)      # zero_grad_buffer: the fp32 main_grad buffer cleared before the step

# ---- schedules -----------------------------------------------------------------------------------
Item = tuple[bool, int, int]  # (is_forward, micro-batch, chunk)


def schedule_items(schedule: Schedule, p: int, stage: int, n: int, v: int = 1) -> list[Item]:
    """The order in which pipeline ``stage`` runs its forwards and backwards (Megatron-LM)."""
    if schedule is Schedule.GPIPE:
        return [(True, m, 0) for m in range(n)] + [(False, m, 0) for m in range(n)]
    if schedule is Schedule.ONE_F_ONE_B or v == 1:
        warm = min(p - stage - 1, n)
        items: list[Item] = [(True, m, 0) for m in range(warm)]
        for i in range(n - warm):
            items += [(True, warm + i, 0), (False, i, 0)]
        items += [(False, m, 0) for m in range(n - warm, n)]
        return items
    total = n * v
    warm = min((p - stage - 1) * 2 + (v - 1) * p, total)

    def mb(k: int) -> int:
        return (k // (p * v)) * p + k % p

    def fwd(k: int) -> Item:
        return (True, mb(k), (k // p) % v)

    def bwd(k: int) -> Item:
        return (False, mb(k), v - 1 - (k // p) % v)

    items = [fwd(k) for k in range(warm)]
    for i in range(total - warm):
        items += [fwd(warm + i), bwd(i)]
    items += [bwd(k) for k in range(total - warm, total)]
    return items


# ---- costs ---------------------------------------------------------------------------------------
_COLL = {"all_reduce": CollectiveOp.ALL_REDUCE, "all_gather": CollectiveOp.ALL_GATHER,
         "reduce_scatter": CollectiveOp.REDUCE_SCATTER, "all_to_all": CollectiveOp.ALL_TO_ALL}


@dataclass(frozen=True)
class CPGeo:
    """A context-parallel group on the cluster: the group (Ulysses' all-to-alls) and each rank -> next
    rank pair of its ring (ring attention's sends; a ring step waits for the slowest pair)."""

    group: Geometry
    links: tuple[Geometry, ...]


@dataclass
class PassCost:
    """Seconds of one pass over some ops, split into compute and TP collectives by kind."""

    compute: float = 0.0
    comm: dict[str, float] = field(default_factory=dict)
    flops: float = 0.0

    @property
    def total(self) -> float:
        return self.compute + sum(self.comm.values())

    def add(self, other: PassCost, times: float = 1.0) -> PassCost:
        comm = dict(self.comm)
        for k, v in other.comm.items():
            comm[k] = comm.get(k, 0.0) + times * v
        return PassCost(self.compute + times * other.compute, comm, self.flops + times * other.flops)


class StageCosts:
    """Closed-form times of a layer's passes on one GPU (kernels) and its TP group (collectives)."""

    def __init__(self, gpu: GPUSpec, stack: str = DEFAULT_STACK) -> None:
        self.kernels = GPUKernelModel(gpu, stack=stack)
        self._memo: dict[Any, float] = {}

    def op_time(self, op: TrainOp, tp_geo: Geometry | None, cp: CPGeo | None = None) -> tuple[float, str | None]:
        if op.comm is not None:
            g = tp_geo if op.comm.dim == "tp" else (cp.group if cp is not None else None)
            if g is None or op.comm.group <= 1:
                return 0.0, None
            key: Any = (op.comm, g)
            if key not in self._memo:
                self._memo[key] = collective_time(None, _COLL[op.comm.collective], op.comm.nbytes,
                                                  geo=g).time_s
            return self._memo[key], f"{op.comm.dim}_{op.comm.collective}"
        assert op.ring is None, "a ring-attention pass is costed by ring_cost"
        assert op.op is not None
        key = (op.op, op.fp32_accumulate)
        if key not in self._memo:
            if op.fp32_accumulate and isinstance(op.op, Gemm):
                self._memo[key] = self.fp32_accumulate_time(op.op)
            else:
                self._memo[key] = self.kernels.time(op.op)
        return op.scale * self._memo[key], None

    def fp32_accumulate_time(self, g: Gemm) -> float:
        """A weight-gradient GEMM that accumulates into Megatron's fp32 ``main_grad`` (``C += A B``, C fp32,
        beta = 1; apex ``wgrad_gemm_accum_fp32``): the kernel model's time for the 16-bit GEMM, with C
        read and written in fp32 (8 B per element instead of a 16-bit write) added where the kernel model
        puts C traffic: the epilogue of each round of co-resident CTAs (the C tile through the SM's L2
        port) and the kernel's DRAM traffic (at the rate the model drew for this GEMM), combined by the
        same rule (the larger of compute and memory plus ``gemm_overlap_loss`` of the smaller)."""
        t, bd = self.kernels.cost(g)
        cal, gpu = self.kernels.cal, self.kernels.gpu
        extra_per_elem = 8.0 - g.dtype.bytes
        split = bd.get("split_k", 1.0)
        nbytes = g.bytes + (8.0 * g.m * g.n * split if split > 1 else 0.0)
        c0, m0 = bd["compute_s"], bd["memory_s"]
        rounds = math.ceil(bd["waves"] / bd["ctas_per_sm"])
        feed_sm = cal.gemm_l2_bytes_per_clk_sm * (gpu.boost_clock_hz or 1.5e9)
        c1 = c0 + rounds * bd["tile_m"] * bd["tile_n"] * extra_per_elem / feed_sm
        m1 = m0 + m0 / nbytes * extra_per_elem * g.m * g.n

        def comb(c: float, m: float) -> float:
            return max(c, m) + cal.gemm_overlap_loss * min(c, m)

        return t + comb(c1, m1) - comb(c0, m0)

    def ring_cost(self, ring: RingAttention, cp: CPGeo | None) -> tuple[float, float]:
        """(compute, exposed send) seconds of a ring-attention pass: step ``k < cp - 1`` takes the larger of
        its kernels and the send to the next rank (the slowest pair of the ring; send/recv closed form,
        latency included), the last step its kernels, then the tail send (exposed)."""
        def send(nbytes: float) -> float:
            if cp is None or not nbytes:
                return 0.0
            key = ("ring_send", nbytes, cp.links)
            if key not in self._memo:
                self._memo[key] = max(collective_time(None, CollectiveOp.SEND_RECV, nbytes, geo=g).time_s
                                      for g in cp.links)
            return self._memo[key]

        x = send(ring.send_bytes)
        compute = exposed = 0.0
        for k, step in enumerate(ring.steps):
            c = sum(self.op_time(o, None)[0] for o in step)
            compute += c
            if k < len(ring.steps) - 1:
                exposed += max(0.0, x - c)
        return compute, exposed + send(ring.tail_bytes)

    def pass_cost(self, ops: Sequence[TrainOp], tp_geo: Geometry | None, cp: CPGeo | None = None) -> PassCost:
        pc = PassCost()
        for op in ops:
            if op.ring is not None:
                c, x = self.ring_cost(op.ring, cp)
                pc.compute += c
                pc.flops += op.flops
                if x:
                    pc.comm["cp_ring_send_recv"] = pc.comm.get("cp_ring_send_recv", 0.0) + x
                continue
            t, kind = self.op_time(op, tp_geo, cp)
            if kind is None:
                pc.compute += t
                pc.flops += op.flops
            else:
                pc.comm[kind] = pc.comm.get(kind, 0.0) + t
        return pc


# ---- the report ----------------------------------------------------------------------------------
@dataclass
class TrainReport:
    step_time_s: float
    tflops_per_gpu: float            # Megatron model FLOPs (72 form) / step / GPU
    hardware_tflops_per_gpu: float   # with the recompute's extra forward counted (96 form for full)
    mfu: float
    hfu: float
    bubble_fraction: float
    exposed_comm_s: dict[str, float]
    memory: TrainMemory
    stage_compute_s: list[float]
    chunk_times_s: dict[str, float]
    # (stage, kind, micro-batch, chunk, start ns, end ns); filled when record_events. kind: "F" / "B" a
    # chunk's forward / backward; "TPF" / "TPB" its TP (and CP) collectives summarised (their sum, from the chunk's
    # start: they run between its kernels); "SF" / "SB" the point-to-point send of its output / input
    # gradient (the sender waits on it); "DP" a gradient bucket's reduction on the stage's communication
    # stream (micro-batch field: the bucket index); "EMB" the tied-embedding all-reduce. The slowest replica's.
    events: list[tuple[int, str, int, int, int, int]] = field(default_factory=list)
    layout: TrainLayout | None = None
    gpus: int = 0
    pipeline_runs: int = 1           # distinct DP replicas simulated (replicas with equal costs share a run)

    def summary(self) -> dict[str, Any]:
        gib = 1024**3
        return {"step_time_s": self.step_time_s, "tflops_per_gpu": self.tflops_per_gpu,
                "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu, "mfu": self.mfu, "hfu": self.hfu,
                "bubble_fraction": self.bubble_fraction, "memory_gib_per_gpu": self.memory.total / gib,
                "memory_gib": self.memory.to_gib(), "exposed_comm_s": dict(self.exposed_comm_s),
                "chunk_times_s": dict(self.chunk_times_s), "gpus": self.gpus}


# ---- the simulation ------------------------------------------------------------------------------
def _rank(layout: TrainLayout, stage: int, dp_rank: int = 0, tp_rank: int = 0, cp_rank: int = 0) -> int:
    """Megatron-Core's default rank order "tp-cp-ep-dp-pp": TP fastest, then CP, then DP, then PP."""
    return tp_rank + layout.tp * (cp_rank + layout.cp * (dp_rank + layout.dp * stage))


@functools.lru_cache(maxsize=4096)
def _geo(cluster: Cluster, gpus: tuple[int, ...]) -> Geometry:
    """The geometry of the cluster GPUs at indices ``gpus`` (placement already applied)."""
    return geometry(cluster, [cluster.gpus[g] for g in gpus])


def _ready(bwd_ns: tuple[int, int], k: int, nb: int) -> float:
    """When bucket ``k`` of ``nb`` is ready: its share of the chunk's last backward (start, end ns) done."""
    b0, b1 = (x / 1e9 for x in bwd_ns)
    return b0 + (k + 1) / nb * (b1 - b0)


def _check_placement(placement: Sequence[int] | None, ranks: int, cluster_gpus: int) -> tuple[int, ...] | None:
    """``placement`` as a tuple (None: the identity), checked: one distinct cluster GPU index per rank."""
    if placement is None:
        return None
    from workloads.errors import ConfigError

    place = tuple(placement)
    if len(place) != ranks:
        raise ConfigError(f"the placement maps {len(place)} ranks, the layout has {ranks}", field="placement",
                          value=len(place))
    bad = [g for g in place if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < cluster_gpus]
    if bad:
        raise ConfigError(f"placement GPU index {bad[0]!r} is not one of the cluster's {cluster_gpus} GPUs",
                          field="placement", value=bad[0])
    if len(set(place)) != len(place):
        dup = next(g for g in place if place.count(g) > 1)
        raise ConfigError(f"placement puts two ranks on GPU {dup}", field="placement", value=dup)
    return place


def check_precision(gpu: GPUSpec, dtype: DType) -> None:
    """fp8 training (Transformer Engine's fp8 GEMMs, ``workloads.train_ops``) needs fp8 tensor cores: a
    :class:`ConfigError` on a GPU whose spec has no fp8 peak (``fp8_dense_tflops``), e.g. the A100."""
    if dtype is DType.FP8 and not gpu.fp8_flops:
        from workloads.errors import ConfigError

        raise ConfigError(f"--dtype fp8 runs the GEMMs on fp8 tensor cores (Transformer Engine); {gpu.name} has "
                          "none (its spec has no fp8_dense_tflops): use bf16 or fp16", field="dtype",
                          value=dtype.value)


def simulate_training(model: ModelSpec, layout: TrainLayout, gpu: GPUSpec, cluster: Cluster, *,
                      stack: str = DEFAULT_STACK, grad_bytes: int = 4, bucket_params: int = DEFAULT_BUCKET_PARAMS,
                      check_memory: bool = True, stage_slowdown: dict[int, float] | None = None,
                      record_events: bool = False,
                      engine: PipelineEngine | str = PipelineEngine.LIST,
                      placement: Sequence[int] | None = None) -> TrainReport:
    """Simulate one training step of ``model`` under ``layout`` on ``cluster`` (sized to at least
    ``layout.gpus`` GPUs of ``gpu``). ``stage_slowdown``: {stage: factor} makes a stage a straggler
    (its compute and TP collectives take ``factor`` x as long). ``engine``: ``"simpy"`` runs every
    forward/backward as a SimPy event on its stage; ``"list"`` (default) evaluates the same dependency
    graph in list-scheduling order without the event heap, giving identical times (tests assert it)
    at a fraction of the cost (a PP 64 pipeline of 512 micro-batches has 65,536 items); any other
    name is a ConfigError. ``placement``: logical rank (Megatron order, :func:`_rank`) -> index into
    ``cluster.gpus`` (default: the identity, the first ``layout.gpus`` GPUs in the cluster's order); a
    wrong length, a repeated or missing GPU is a ConfigError.

    DP replicas: each replica's TP groups and point-to-point sends are priced on its own GPUs; replicas
    whose costs are equal share one pipeline run, the others are simulated each (on a homogeneous
    cluster that is one run, as before). A DP bucket's reduction starts when every replica has it ready
    (the latest replica's backward), and the reported timeline, bubble and send waits are the slowest
    replica's."""
    if not isinstance(engine, PipelineEngine):
        known = [e.value for e in PipelineEngine]
        if engine not in known:
            raise unknown_name("pipeline engine", engine, known, field="engine")
        engine = PipelineEngine(engine)
    lay = layout
    check_layout(model, lay)
    check_precision(gpu, lay.dtype)
    if len(cluster.gpus) < lay.gpus:
        from workloads.errors import ConfigError

        raise ConfigError(f"the layout needs {lay.gpus} GPUs, the cluster was sized to {len(cluster.gpus)}",
                          field="gpus", value=len(cluster.gpus))
    place = _check_placement(placement, lay.gpus, len(cluster.gpus))

    def geo(ranks: tuple[int, ...]) -> Geometry:
        return _geo(cluster, ranks if place is None else tuple(place[r] for r in ranks))

    mem = train_memory(model, lay, grad_bytes=grad_bytes)
    if check_memory:
        cp_s = f"cp={lay.cp} ({lay.cp_impl.value}) " if lay.cp > 1 else ""
        check_fits(mem, gpu.memory_bytes, f"{model.name} with tp={lay.tp} pp={lay.pp} dp={lay.dp} {cp_s}"
                   f"micro-batch {lay.micro_batch} recompute {lay.recompute.value}")
    p, v, n = lay.pp, lay.chunks, lay.num_micro_batches
    costs = StageCosts(gpu, stack)
    passes = layer_passes(model, lay)
    first, last = head_passes(model, lay)
    layers_per_chunk = model.num_layers // (p * v)
    chunk_params = layers_per_chunk * model.layer_params() / lay.tp     # one chunk's layers, per TP rank
    slow = stage_slowdown or {}
    # each stage's data-parallel group (DP gradient reduction, ZeRO gathers): with context parallelism the
    # combined data-and-context-parallel group, dp x cp ranks (Megatron-Core reduces gradients over it)
    dpc = lay.dp * lay.cp
    dp_geo = [geo(tuple(_rank(lay, s, d, 0, c) for d in range(lay.dp) for c in range(lay.cp)))
              for s in range(p)] if dpc > 1 else []

    def cp_geo_of(s: int, d: int) -> CPGeo | None:
        """Stage ``s``'s CP group of replica ``d`` (TP rank 0's; the other TP ranks' are alike)."""
        if lay.cp <= 1:
            return None
        ranks = tuple(_rank(lay, s, d, 0, c) for c in range(lay.cp))
        pairs = {tuple(sorted((ranks[c], ranks[(c + 1) % lay.cp]))) for c in range(lay.cp)}
        return CPGeo(geo(ranks), tuple(geo(pr) for pr in sorted(pairs)))

    # per (stage, chunk): forward and backward (recompute included) costs, per distinct TP group geometry
    stage_memo: dict[tuple[int, Geometry | None, CPGeo | None], tuple[list[PassCost], list[PassCost]]] = {}

    def stage_costs(s: int, tp_geo: Geometry | None,
                    cp: CPGeo | None = None) -> tuple[list[PassCost], list[PassCost]]:
        key = (s, tp_geo, cp)
        if key in stage_memo:
            return stage_memo[key]
        lf = costs.pass_cost(passes.forward, tp_geo, cp)
        lb = costs.pass_cost(passes.recompute, tp_geo, cp).add(costs.pass_cost(passes.backward, tp_geo, cp))
        fs: list[PassCost] = []
        bs: list[PassCost] = []
        for c in range(v):
            vs = c * p + s
            f, b = PassCost().add(lf, layers_per_chunk), PassCost().add(lb, layers_per_chunk)
            if vs == 0:
                f, b = f.add(costs.pass_cost(first.forward, tp_geo)), b.add(costs.pass_cost(first.backward, tp_geo))
            if vs == p * v - 1:
                f, b = f.add(costs.pass_cost(last.forward, tp_geo)), b.add(costs.pass_cost(last.backward, tp_geo))
            k = slow.get(s, 1.0)
            fs.append(PassCost().add(f, k))
            bs.append(PassCost().add(b, k))
        stage_memo[key] = (fs, bs)
        return fs, bs

    zero3_gather: dict[tuple[int, int], float] = {}
    if lay.zero >= 3 and dpc > 1:
        for s in range(p):
            t_g = collective_time(None, CollectiveOp.ALL_GATHER, chunk_params * lay.act_dtype.bytes,
                                  geo=dp_geo[s]).time_s
            for c in range(v):
                zero3_gather[s, c] = t_g

    def dur_ns(pc: PassCost, s: int, c: int) -> int:
        t = pc.total
        if zero3_gather:
            t = max(t, zero3_gather[s, c])
        return max(1, round(t * 1e9))

    # point-to-point sends between consecutive stages: Megatron's scatter-gather optimisation (Narayanan
    # et al. 2021, Sec. 4.1) sends s b h / t per TP rank over each rank's own NIC; without sequence
    # parallelism the receiver all-gathers the full activation over the node's NVLink
    sp = lay.sequence_parallel and lay.tp > 1
    full = lay.seq // lay.cp * lay.micro_batch * model.hidden_size * lay.act_dtype.bytes   # this GPU's s/cp tokens
    msg = full / lay.tp
    send_memo: dict[tuple[Geometry, Geometry | None], int] = {}

    def send_time_ns(pair: Geometry, gather: Geometry | None) -> int:
        if (pair, gather) not in send_memo:
            t = collective_time(None, CollectiveOp.SEND_RECV, msg, geo=pair).time_s
            if gather is not None:
                t += collective_time(None, CollectiveOp.ALL_GATHER, full, geo=gather).time_s
            send_memo[pair, gather] = round(t * 1e9)
        return send_memo[pair, gather]

    def tp_geo_of(s: int, d: int) -> Geometry | None:
        return geo(tuple(_rank(lay, s, d, r) for r in range(lay.tp))) if lay.tp > 1 else None

    lists = [schedule_items(lay.schedule, p, s, n, v) for s in range(p)]
    run = _run_simpy if engine is PipelineEngine.SIMPY else _run_list
    # every DP replica's costs (they differ where its GPUs' links differ); equal ones share one run
    runs: dict[Any, Timeline] = {}
    tp_span: dict[Any, dict[tuple[int, int, bool], int]] = {}   # per run: a chunk's TP / CP collectives, ns
    fwd_c: dict[tuple[int, int], PassCost] = {}
    bwd_c: dict[tuple[int, int], PassCost] = {}
    emb_geos: set[Geometry] = set()
    for d in range(lay.dp):
        tp_geos = [tp_geo_of(s, d) for s in range(p)]
        dur: dict[tuple[int, int, bool], int] = {}
        for s in range(p):
            fs, bs = stage_costs(s, tp_geos[s], cp_geo_of(s, d))
            for c in range(v):
                dur[s, c, True], dur[s, c, False] = dur_ns(fs[c], s, c), dur_ns(bs[c], s, c)
                if d == 0:   # the report's per-chunk times and TP collectives: replica 0's
                    fwd_c[s, c], bwd_c[s, c] = fs[c], bs[c]
        send_ns: dict[tuple[int, int], int] = {}
        if p > 1:
            for s in range(p):
                for dst in ((s + 1) % p, (s - 1) % p):
                    ag_geo = tp_geos[dst] if lay.tp > 1 and not sp else None
                    send_ns[s, dst] = send_time_ns(geo((_rank(lay, s, d), _rank(lay, dst, d))), ag_geo)
            if model.tied_embeddings:
                emb_geos.add(geo((_rank(lay, 0, d), _rank(lay, p - 1, d))))
        sig = (tuple(sorted(dur.items())), tuple(sorted(send_ns.items())))
        if sig not in runs:
            runs[sig] = run(lists, dur, send_ns, p, v, record_events)
            if record_events:
                tp_span[sig] = {}
                for s in range(p):
                    fs, bs = stage_costs(s, tp_geos[s], cp_geo_of(s, d))
                    for c in range(v):
                        for fwd, pc in ((True, fs[c]), (False, bs[c])):
                            tp_span[sig][s, c, fwd] = round(sum(pc.comm.values()) * 1e9)
    sig_of = {id(x): k for k, x in runs.items()}
    timelines = list(runs.values())
    tl = max(timelines, key=lambda x: max(x.end_ns))   # the slowest replica (the first of equals)
    busy_ns, wait_comm_ns, events = tl.busy_ns, tl.comm_ns, list(tl.events)
    if record_events:
        # a chunk's TP (and CP) collectives run between its kernels: one summarised span per chunk, from the
        # chunk's start, as long as their sum
        spans = tp_span[sig_of[id(tl)]]
        events += [(e[0], "TP" + e[1], e[2], e[3], e[4], e[4] + spans[e[0], e[3], e[1] == "F"])
                   for e in tl.events if e[1] in ("F", "B") and spans[e[0], e[3], e[1] == "F"] > 0]
    end_ns = [max(x.end_ns[s] for x in timelines) for s in range(p)]

    # ---- DP gradient reduction on each stage's communication stream, then the optimizer ------------
    exposed: dict[str, float] = {}
    for s in range(p):
        for c in range(v):
            for pc in (fwd_c[s, c], bwd_c[s, c]):
                for kind, t in pc.comm.items():
                    exposed[kind] = exposed.get(kind, 0.0) + n * t
    # TP collectives: per GPU, the worst stage's sum (every stage runs them; report stage 0's share)
    exposed = {k: t / p for k, t in exposed.items()}
    exposed["pp_send_recv"] = max(wait_comm_ns) / 1e9 if p > 1 else 0.0
    sync_end: list[float] = []
    dp_exposed = 0.0
    param_gather = 0.0
    opt_pre: list[float] = []
    opt_norm: list[float] = []
    opt_post: list[float] = []
    zero_grad: list[float] = []

    def pass_s(name: str, n_params: float, rw: tuple[float, float]) -> float:
        op = MemoryOp(name, OpKind.ELEMENTWISE, max(1, int(n_params // 4096)), rw[0] * n_params, rw[1] * n_params)
        return costs.kernels.time(op)

    for s in range(p):
        t_end = end_ns[s] / 1e9
        params = {c: chunk_params for c in range(v)}
        stage_params = sum(params.values())
        if s == 0:
            params[0] += model.embedding_params() / lay.tp
        if s == p - 1:
            params[v - 1] += model.vocab_size * model.hidden_size / lay.tp
        stream = 0.0
        if dpc > 1:
            dgeo = dp_geo[s]
            op = CollectiveOp.ALL_REDUCE if lay.zero == 0 else CollectiveOp.REDUCE_SCATTER
            # chunks in the order their last backward finishes; a bucket is ready when every replica has it
            for c in sorted(range(v), key=lambda c: max(x.last_bwd[s, c][1] for x in timelines)):
                nb = max(1, math.ceil(params[c] / bucket_params))
                size = params[c] / nb * grad_bytes
                t_b = collective_time(None, op, size, geo=dgeo).time_s
                for k in range(nb):
                    ready_t = max(_ready(x.last_bwd[s, c], k, nb) for x in timelines)
                    start_t = max(stream, ready_t)
                    stream = start_t + t_b
                    if record_events:
                        events.append((s, "DP", k, c, round(start_t * 1e9), round(stream * 1e9)))
        sync_end.append(max(t_end, stream))
        dp_exposed = max(dp_exposed, sync_end[-1] - t_end)
        full_params = stage_params + (params[0] - chunk_params if s == 0 else 0.0)
        shard = full_params / (dpc if lay.zero >= 1 else 1)
        opt_pre.append(pass_s("unscale_check_inf", shard, UNSCALE_BYTES))
        opt_norm.append(pass_s("grad_norm", shard, GRAD_NORM_BYTES))
        t_opt = pass_s("adam_step", shard, ADAM_BYTES) + pass_s("copy_main_to_model", shard, COPY_BYTES)
        gather = 0.0
        if lay.zero >= 1 and dpc > 1:
            gather = collective_time(None, CollectiveOp.ALL_GATHER, sum(params.values()) * lay.act_dtype.bytes,
                                     geo=dp_geo[s]).time_s
        param_gather = max(param_gather, gather)
        opt_post.append(t_opt + gather)
        zero_grad.append(pass_s("zero_grad_buffer", sum(params.values()), ZERO_GRAD_BYTES))
    # tied input/output embedding (Megatron GPT): the first and last stage hold a copy of the word
    # embedding and all-reduce its fp32 gradient (``_allreduce_embedding_grads``, after the DP reduction)
    emb_s = 0.0
    if p > 1 and model.tied_embeddings:
        # every replica's pair reduces at once; the slowest pair's time
        emb_s = max(collective_time(None, CollectiveOp.ALL_REDUCE, model.vocab_size * model.hidden_size / lay.tp * 4.0,
                                    geo=egeo).time_s for egeo in emb_geos)
        t_emb = max(sync_end[0], sync_end[p - 1])
        for s in (0, p - 1):
            sync_end[s] = t_emb + emb_s
            if record_events:
                events.append((s, "EMB", 0, 0, round(t_emb * 1e9), round((t_emb + emb_s) * 1e9)))
    # the optimizer step: the found-inf flag and the gradient norm are all-reduced over the model-parallel
    # group (every stage waits for the slowest: two barriers), then Adam and the copy to the 16-bit
    # weights (and ZeRO's all-gather); the grad buffer is zeroed before the step's first forward, which
    # delays the pipeline's start on stage 0 (the other stages zero while they wait for their input)
    optim_s = max(opt_pre) + max(opt_norm) + max(opt_post)
    step = max(a + b for a, b in zip(sync_end, opt_pre, strict=True)) + max(opt_norm) + max(opt_post) + zero_grad[0]
    exposed["dp_grad_reduce"] = dp_exposed
    if emb_s:
        exposed["pp_embedding_all_reduce"] = emb_s
    if param_gather:
        exposed["dp_param_all_gather"] = param_gather
    if zero3_gather:
        exposed["zero3_param_all_gather"] = max(
            sum(max(0.0, zero3_gather[s, c] - fwd_c[s, c].total) + max(0.0, zero3_gather[s, c] - bwd_c[s, c].total)
                for c in range(v)) * n for s in range(p))

    span = max(end_ns) / 1e9
    idle = [(span - busy_ns[s] / 1e9 - wait_comm_ns[s] / 1e9) / span for s in range(p)]
    bubble = sum(idle) / p if p > 1 else 0.0
    gpus = lay.gpus
    peak = gpu.peak_flops(lay.dtype)
    mf = model_flops_per_iteration(model, lay)
    hf = model_flops_per_iteration(model, lay, lay.recompute if lay.recompute is not Recompute.NONE else None)
    chunk_times = {"forward_s": fwd_c[0, 0].total, "backward_s": bwd_c[0, 0].total,
                   "optimizer_s": optim_s}
    return TrainReport(step_time_s=step, tflops_per_gpu=mf / step / gpus / 1e12,
                       hardware_tflops_per_gpu=hf / step / gpus / 1e12, mfu=mf / step / gpus / peak,
                       hfu=hf / step / gpus / peak, bubble_fraction=bubble, exposed_comm_s=exposed, memory=mem,
                       stage_compute_s=[b / 1e9 for b in busy_ns], chunk_times_s=chunk_times,
                       events=events, layout=lay, gpus=gpus, pipeline_runs=len(timelines))


# ---- the pipeline: two engines over one dependency graph -------------------------------------------
@dataclass
class Timeline:
    busy_ns: list[int]                          # compute per stage
    end_ns: list[int]                           # when each stage finished its last item
    comm_ns: list[int]                          # blocked on point-to-point sends / late receives
    last_bwd: dict[tuple[int, int], tuple[int, int]]  # (stage, chunk) -> its last backward's (start, end)
    events: list[tuple[int, str, int, int, int, int]]


def _needs(fwd: bool, vs: int, nvs: int) -> bool:
    return (fwd and vs > 0) or (not fwd and vs < nvs - 1)


def _target(fwd: bool, mb: int, vs: int, nvs: int) -> tuple[bool, int, int] | None:
    """The item whose input this one produces (None: the pipeline's ends)."""
    if fwd:
        return (True, mb, vs + 1) if vs < nvs - 1 else None
    return (False, mb, vs - 1) if vs > 0 else None


def _run_simpy(lists: list[list[Item]], dur: dict[tuple[int, int, bool], int], send_ns: dict[tuple[int, int], int],
               p: int, v: int, record: bool) -> Timeline:
    """A SimPy process per stage: each item waits for its input, computes (a timeout), then sends its
    output (blocking the stage for the send: Megatron waits on its isend/irecv pair); the receiver's
    input arrives at the end of the send."""
    env = simpy.Environment()
    nvs = p * v
    ready: dict[tuple[bool, int, int], simpy.Event] = {}
    tl = Timeline([0] * p, [0] * p, [0] * p, {}, [])

    def arrival(key: tuple[bool, int, int]) -> simpy.Event:
        ev = ready.get(key)
        if ev is None:
            ev = ready[key] = env.event()
        return ev

    def stage(s: int, items: list[Item]):  # type: ignore[no-untyped-def]
        for fwd, mb, c in items:
            vs = c * p + s
            if _needs(fwd, vs, nvs):
                ev = arrival((fwd, mb, vs))
                if not ev.processed:
                    t0 = env.now
                    delay = yield ev
                    tl.comm_ns[s] += min(env.now - t0, delay)
            start = int(env.now)
            d = dur[s, c, fwd]
            yield env.timeout(d)
            tl.busy_ns[s] += d
            end = int(env.now)
            if record:
                tl.events.append((s, "F" if fwd else "B", mb, c, start, end))
            if not fwd:
                tl.last_bwd[s, c] = (start, end)
            tgt = _target(fwd, mb, vs, nvs)
            if tgt is not None:
                delay = send_ns[s, tgt[2] % p]
                if delay > 0:
                    yield env.timeout(delay)
                    tl.comm_ns[s] += delay
                    if record:
                        tl.events.append((s, "SF" if fwd else "SB", mb, c, end, int(env.now)))
                arrival(tgt).succeed(delay)
        tl.end_ns[s] = int(env.now)

    for s in range(p):
        env.process(stage(s, lists[s]))
    env.run()
    if any(not ev.processed for ev in ready.values()):
        raise RuntimeError("pipeline schedule deadlocked")  # a schedule bug, not a user error
    return tl


def _run_list(lists: list[list[Item]], dur: dict[tuple[int, int, bool], int], send_ns: dict[tuple[int, int], int],
              p: int, v: int, record: bool) -> Timeline:
    """The same dependency graph as :func:`_run_simpy`, evaluated stage by stage as far as each
    stage's inputs have arrived (list scheduling): every item starts at max(its stage free, its input
    arrived), the times the event simulation gives."""
    nvs = p * v
    arrived: dict[tuple[bool, int, int], tuple[int, int]] = {}   # key -> (arrival time, send delay)
    tl = Timeline([0] * p, [0] * p, [0] * p, {}, [])
    ptr = [0] * p
    now = [0] * p
    left = sum(len(x) for x in lists)
    while left:
        progressed = False
        for s in range(p):
            items, i, t = lists[s], ptr[s], now[s]
            busy = comm = 0
            while i < len(items):
                fwd, mb, c = items[i]
                vs = c * p + s
                if _needs(fwd, vs, nvs):
                    got = arrived.pop((fwd, mb, vs), None)
                    if got is None:
                        break
                    arr, delay = got
                    if arr > t:
                        comm += min(arr - t, delay)
                        t = arr
                start = t
                d = dur[s, c, fwd]
                t += d
                busy += d
                if record:
                    tl.events.append((s, "F" if fwd else "B", mb, c, start, t))
                if not fwd:
                    tl.last_bwd[s, c] = (start, t)
                tgt = _target(fwd, mb, vs, nvs)
                if tgt is not None:
                    delay = send_ns[s, tgt[2] % p]
                    if record and delay > 0:
                        tl.events.append((s, "SF" if fwd else "SB", mb, c, t, t + delay))
                    t += delay
                    comm += delay
                    arrived[tgt] = (t, delay)
                i += 1
            if i != ptr[s]:
                progressed = True
                left -= i - ptr[s]
                ptr[s], now[s] = i, t
                tl.busy_ns[s] += busy
                tl.comm_ns[s] += comm
        if not progressed:
            raise RuntimeError("pipeline schedule deadlocked")
    tl.end_ns = now
    if record:
        tl.events.sort(key=lambda e: (e[4], e[0]))
    return tl
