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
2021 (Sec. 2.2.2), the blocking point-to-point sends (``2 v`` per micro-batch and stage), the DP
gradient reduction's part not hidden under the last backward (the same bucket rule as the simulator),
the optimizer's memory-bound passes, ZeRO's all-gathers and the tied-embedding all-reduce.
The ``top`` layouts by estimate are then simulated (:func:`sim.training.simulate_training`) and the
fastest simulated one is the plan; the others are its runner-ups. :func:`exhaustive` simulates every
feasible layout: the reference the tests hold the planner to.

Not done here: NIC-aware placement of stages and DP groups on heterogeneous-NIC clusters (Holmes,
Yang et al. 2023, arXiv:2312.03549); the layouts use Megatron's default rank order (TP fastest, then DP, then PP).
"""

from __future__ import annotations

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
    group and size."""

    def __init__(self, model: ModelSpec, gpu: GPUSpec, cluster: Cluster, *, stack: str = DEFAULT_STACK,
                 grad_bytes: int = 4, bucket_params: int = DEFAULT_BUCKET_PARAMS) -> None:
        self.model, self.gpu, self.cluster = model, gpu, cluster
        self.costs = StageCosts(gpu, stack)
        self.grad_bytes, self.bucket_params = grad_bytes, bucket_params
        self._layer: dict[Any, tuple[float, float, float, float]] = {}
        self._coll: dict[Any, float] = {}
        self._pass: dict[Any, float] = {}
        self._geos: dict[tuple[int, ...], Geometry] = {}

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
        m = self.model
        p, v, n, t = lay.pp, lay.chunks, lay.num_micro_batches, lay.tp
        lf, lb, h_first, h_last = self.layer_costs(lay)
        per_chunk = m.num_layers // (p * v)
        cf, cb = per_chunk * lf, per_chunk * lb
        chunk_params = per_chunk * m.layer_params() / t
        if lay.zero >= 3 and lay.dp > 1:
            g = self._collective(CollectiveOp.ALL_GATHER, chunk_params * lay.dtype.bytes,
                                 tuple(_rank(lay, 0, d) for d in range(lay.dp)))
            cf, cb = max(cf, g), max(cb, g)
        body = v * (cf + cb)
        heads = max(h_first, h_last) if p > 1 else h_first + h_last
        w_max = body + heads
        w_sum = p * body + h_first + h_last
        send = 0.0
        if p > 1:
            full = lay.seq * lay.micro_batch * m.hidden_size * lay.dtype.bytes
            send = self._collective(CollectiveOp.SEND_RECV, full / t, (0, _rank(lay, 1)))
            if t > 1 and not lay.sequence_parallel:
                send += self._collective(CollectiveOp.ALL_GATHER, full, tuple(range(t)))
        # (n - 1) micro-batches at the slowest stage's pace plus one pass through every stage (the fill and
        # drain; a chunk's share of it when interleaved); each chunk's forward and backward sends block
        pipe = (n - 1) * (w_max + 2 * v * send) + (w_max + (w_sum - w_max) / v + 2 * (p - 1) * send)
        # DP: the stage's last backward (chunk 0 of stage 0) releases its buckets; what the stream has
        # left after it is exposed (earlier chunks' buckets reduced under later backwards)
        own = chunk_params + m.embedding_params() / t
        stage = v * chunk_params + m.embedding_params() / t
        exposed = 0.0
        dp_ranks = tuple(_rank(lay, 0, d) for d in range(lay.dp))
        if lay.dp > 1:
            op = CollectiveOp.ALL_REDUCE if lay.zero == 0 else CollectiveOp.REDUCE_SCATTER
            nb = max(1, math.ceil(own / self.bucket_params))
            t_b = self._collective(op, own / nb * self.grad_bytes, dp_ranks)
            stream = 0.0
            for k in range(nb):
                stream = max(stream, (k + 1) / nb * cb) + t_b
            exposed = max(0.0, stream - cb)
        shard = stage / (lay.dp if lay.zero >= 1 else 1)
        opt = (self._mem_pass("unscale_check_inf", shard, UNSCALE_BYTES)
               + self._mem_pass("grad_norm", shard, GRAD_NORM_BYTES)
               + self._mem_pass("adam_step", shard, ADAM_BYTES)
               + self._mem_pass("copy_main_to_model", shard, COPY_BYTES)
               + self._mem_pass("zero_grad_buffer", stage, ZERO_GRAD_BYTES))
        if lay.zero >= 1 and lay.dp > 1:
            opt += self._collective(CollectiveOp.ALL_GATHER, stage * lay.dtype.bytes, dp_ranks)
        emb = 0.0
        if p > 1 and m.tied_embeddings:
            emb = self._collective(CollectiveOp.ALL_REDUCE, m.vocab_size * m.hidden_size / t * 4.0,
                                   (0, _rank(lay, p - 1)))
        return pipe + exposed + emb + opt


@dataclass
class Candidate:
    layout: TrainLayout
    estimate_s: float
    memory_bytes: float
    report: TrainReport | None = None

    @property
    def step_time_s(self) -> float:
        return self.report.step_time_s if self.report is not None else math.inf

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
        if self.report is not None:
            out.update(self.report.summary())
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
        return {"plan": self.best.to_dict(), "runner_ups": [c.to_dict() for c in self.runner_ups],
                "layouts_enumerated": self.enumerated, "layouts_fit_memory": self.fit,
                "layouts_simulated": self.simulated, "wall_s": self.wall_s}


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
               progress: Progress | None = None) -> TrainPlan:
    """The fastest layout of ``model`` on ``gpus`` GPUs of ``cluster`` (sized to at least ``gpus``) for
    ``global_batch`` sequences of ``seq`` tokens: enumerate, prune by memory, rank by the closed-form
    estimate, simulate the ``top`` best; the fastest simulated layout with its report and the runner-ups.
    ``headroom_bytes``: memory per GPU kept free beyond the memory model (CUDA context, NCCL buffers,
    allocator fragmentation, which the model does not count)."""
    t0 = time.perf_counter()
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}", field="top", value=top)
    if len(cluster.gpus) < gpus:
        raise ConfigError(f"the plan needs {gpus} GPUs, the cluster was sized to {len(cluster.gpus)}", field="gpus",
                          value=gpus)
    count, fits = feasible(model, gpu, gpus, global_batch, seq=seq, gpus_per_node=cluster.gpus_per_node,
                           attention=attention, dtype=dtype, grad_bytes=grad_bytes, headroom_bytes=headroom_bytes)
    est = Estimator(model, gpu, cluster, stack=stack, grad_bytes=grad_bytes)
    ranked = sorted((Candidate(lay, est.step_time(lay), mem) for lay, mem in fits),
                    key=lambda c: (c.estimate_s, c.memory_bytes))
    t1 = time.perf_counter()
    chosen = ranked[:top]
    for i, c in enumerate(chosen):
        c.report = simulate_training(model, c.layout, gpu, cluster, stack=stack, grad_bytes=grad_bytes)
        if progress is not None:
            progress(i + 1, len(chosen))
    done = sorted(chosen, key=lambda c: (c.step_time_s, c.memory_bytes))
    wall = time.perf_counter() - t0
    log.info("plan train: %d layouts, %d fit, %d simulated in %.2f s", count, len(fits), len(chosen), wall)
    return TrainPlan(done[0], done[1:], count, len(fits), len(chosen), wall,
                     {"estimate_wall_s": t1 - t0, "simulate_wall_s": wall - (t1 - t0)})


def exhaustive(model: ModelSpec, gpu: GPUSpec, cluster: Cluster, gpus: int, global_batch: int, *, seq: int = 2048,
               attention: AttentionImpl = AttentionImpl.FLASH, dtype: DType = DType.BF16,
               stack: str = DEFAULT_STACK, grad_bytes: int = 4) -> list[Candidate]:
    """Every layout that fits, simulated, fastest first (the reference for :func:`plan_train`)."""
    _, fits = feasible(model, gpu, gpus, global_batch, seq=seq, gpus_per_node=cluster.gpus_per_node,
                       attention=attention, dtype=dtype, grad_bytes=grad_bytes)
    est = Estimator(model, gpu, cluster, stack=stack, grad_bytes=grad_bytes)
    out = [Candidate(lay, est.step_time(lay), mem,
                     simulate_training(model, lay, gpu, cluster, stack=stack, grad_bytes=grad_bytes))
           for lay, mem in fits]
    return sorted(out, key=lambda c: (c.step_time_s, c.memory_bytes))


__all__ = ["Candidate", "Estimator", "TrainPlan", "enumerate_layouts", "exhaustive", "feasible", "plan_train"]
