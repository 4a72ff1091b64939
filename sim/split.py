"""Phase-split (Splitwise-style) serving: a prefill pool and a decode pool, KV caches moved between them.

``simulate_split(model, requests, cfg) -> SplitResult``. Each pool is N machines of one type
(:mod:`hwmodels.machines`), each machine running ``gpus / tp`` instances. An arriving request is routed
(join-shortest-queue by tokens, or round-robin) to a prefill instance: the existing replica and vLLM-V1
scheduler (:mod:`sim.replica`) with the request's output cut to its first token, so the instance only
prefills (its KV admission and chunking as in colocated serving). When its first token is out, the
request's KV cache (``prompt x kv_bytes_per_token`` of the whole model) moves to a decode instance over the
fabric (:func:`hwmodels.network.transfer.kv_transfer_time` on a cluster of the two pools' node types):

* ``serialized``: the whole transfer after the prefill: exposed ``T``;
* ``layerwise``: layer i is sent as soon as it is computed, so only what the prefill cannot hide is
  exposed: ``max(T / L, T - P (L - 1) / L)`` with ``P`` the request's prefill span (admission to first
  token) and ``L`` layers (Splitwise overlaps the KV transfer with the prompt phase layer by layer);
* ``none``: no cost (to compare with colocated serving).

The decode instance then admits it like any request (its whole KV must fit: admission blocks while the KV
cache is full) with the prompt already computed and one token generated, and decodes the rest. Requests of
one output token end at the prefill. An optional mixed pool (:class:`MixedPool`, Splitwise's overflow pool)
takes whole requests when the prefill pool is loaded and decodes when the decode pool has no KV room; without
one the simulation is exactly what it was before the mixed pool existed. Time is integer ns; the same inputs give
the same result.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import simpy

from hwmodels.engine import EngineProfile, EngineStepTimeModel
from hwmodels.machines import Machine
from hwmodels.memory import MemoryBreakdown, memory_breakdown
from hwmodels.network.nics import load_nic, load_node
from hwmodels.network.topology import Cluster, Fabric, NodeGroup
from hwmodels.network.transfer import kv_transfer_time
from hwmodels.step import StepTimeModel
from sim.config import ServeConfig
from sim.replica import DecodeClock, Replica
from sim.scheduler import SimRequest
from workloads.errors import CapacityError, ConfigError, WorkloadError
from workloads.model_spec import ModelSpec
from workloads.requests import Request


class TransferMode(enum.Enum):
    SERIALIZED = "serialized"
    LAYERWISE = "layerwise"
    NONE = "none"


class SplitRouter(enum.Enum):
    JSQ_TOKENS = "jsq"
    ROUND_ROBIN = "round-robin"


@dataclass(frozen=True)
class Pool:
    machine: Machine
    count: int
    tp: int

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"machine count must be a positive integer, got {self.count!r}", field="count",
                              value=self.count)
        if self.tp < 1 or self.machine.gpus % self.tp:
            raise ConfigError(f"tp {self.tp} must divide the {self.machine.gpus} GPUs of {self.machine.id}",
                              field="tp", value=self.tp)

    @property
    def instances(self) -> int:
        return self.count * self.machine.gpus // self.tp

    @property
    def cost_per_hour(self) -> float | None:
        c = self.machine.cost_per_hour
        return None if c is None else c * self.count

    @property
    def power_w(self) -> float:
        return self.machine.power_w * self.count


def parse_pool(spec: str, tp: int, field_name: str = "pool") -> Pool:
    """``<machine>:<count>`` (``dgx-h100:2``) -> a :class:`Pool`. Malformed: ``ConfigError``."""
    from hwmodels.machines import load_machine

    name, sep, count = spec.rpartition(":")
    if not sep or not name or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"expected <machine>:<count> with count >= 1, got {spec!r}", field=field_name, value=spec)
    return Pool(load_machine(name), int(count), tp)


@dataclass(frozen=True)
class MixedPool:
    """Splitwise's mixed pool: machines that take prefill or decode work when the dedicated pools are loaded.
    Each instance is a colocated replica (prefills and decodes share its iterations). Routing rule:

    * an arriving request overflows to the mixed pool when every prefill instance already has at least
      ``prefill_overflow_tokens`` prompt tokens routed and not yet prefilled (None: the engine's token budget,
      ``max_num_batched_tokens``: a full iteration waiting) and the least-loaded mixed instance has fewer
      outstanding tokens (prompt + output, the conservative count) than that; it then runs there whole (prefill and
      decode on one instance, no KV transfer);
    * a prefilled request's decode overflows when no decode instance can take its KV: every one has
      ``decode_overflow_tokens`` (None: its KV-cache tokens) or more outstanding with this request counted; its KV
      then moves to a mixed instance (same transfer model) and decodes there;

    both only when the request's whole KV fits a mixed instance; the mixed instance is the one with the fewest
    outstanding tokens (prompt + output of what it holds)."""

    pool: Pool
    prefill_overflow_tokens: int | None = None
    decode_overflow_tokens: int | None = None


@dataclass(frozen=True)
class SplitConfig:
    prefill: Pool
    decode: Pool
    transfer: TransferMode = TransferMode.LAYERWISE
    router: SplitRouter = SplitRouter.JSQ_TOKENS
    serve: ServeConfig = ServeConfig()      # engine limits of every instance (its tp is the pool's)
    engine: EngineProfile | None = None     # None: vLLM 0.19 (the serving simulation's default)
    mixed: MixedPool | None = None          # None: no mixed pool (Splitwise's overflow pool, :class:`MixedPool`)

    @property
    def iteration_overhead_s(self) -> float:
        """Every instance's iteration overhead: the engine profile's, else the serving config's."""
        return self.serve.iteration_overhead_s if self.engine is None else self.engine.iteration_s


@dataclass
class SplitResult:
    model: ModelSpec
    cfg: SplitConfig
    ids: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    arrival_ns: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    transfer_ns: np.ndarray          # exposed KV-transfer time (0 for one-token requests)
    kv_bytes: np.ndarray             # KV bytes moved per request
    prefill_instance: np.ndarray
    decode_instance: np.ndarray      # -1: finished at the prefill
    memory: dict[str, MemoryBreakdown] = field(default_factory=dict)
    steps: dict[str, StepTimeModel] = field(default_factory=dict)
    mixed_instance: np.ndarray | None = None   # -1: not on the mixed pool (None: no mixed pool)
    mixed_phase: np.ndarray | None = None      # 0 none, 1 the whole request there, 2 its decode there


class _HookedReplica(Replica):
    """A replica that reports each request it finishes (the prefill pool's hand-off point)."""

    def __init__(self, *a, on_done, **kw) -> None:  # type: ignore[no-untyped-def]
        self._on_done = on_done
        super().__init__(*a, **kw)

    def _retire(self) -> None:
        n = len(self.finished)
        super()._retire()
        for r in self.finished[n:]:
            self._on_done(self.index, r)


def step_model(model: ModelSpec, pool: Pool, cfg: SplitConfig) -> StepTimeModel:
    """The step-time model of one instance of ``pool`` (its machine's GPU at the pool's TP, ``cfg.engine``'s
    calibration if any); ``simulate split --colocated`` times its baseline with the same one."""
    gpu = pool.machine.effective_gpu
    max_len = cfg.serve.max_model_len or model.max_position_embeddings
    if cfg.engine is None:
        return StepTimeModel(model, gpu, pool.tp, max_kv_len=max_len)
    return EngineStepTimeModel(model, gpu, pool.tp, engine=cfg.engine, max_kv_len=max_len)


def _serve_cfg(pool: Pool, cfg: SplitConfig) -> ServeConfig:
    import dataclasses

    return dataclasses.replace(cfg.serve, tp=pool.tp, pp=1, replicas=pool.instances,
                               iteration_overhead_s=cfg.iteration_overhead_s)


def build_cluster(prefill: Pool, decode: Pool, mixed: Pool | None = None) -> tuple[Cluster, int]:
    """The pools as one cluster (prefill machines first, then decode, then mixed) on a rail-optimised non-blocking
    fabric (one leaf per rail per 32 nodes, as a DGX SuperPOD scalable unit); returns it and the prefill node
    count."""
    groups = []
    for pool in (prefill, decode) + (() if mixed is None else (mixed,)):
        if pool.machine.node is None:
            raise ConfigError(f"machine {pool.machine.id} has no network node type to move KV caches over",
                              field="machine", value=pool.machine.id)
        node = load_node(pool.machine.node)
        if node.gpus != pool.machine.gpus:
            raise ConfigError(f"node type {node.id} has {node.gpus} GPUs, machine {pool.machine.id} "
                              f"{pool.machine.gpus}", field="machine", value=pool.machine.id)
        groups.append(NodeGroup(node, load_nic(node.nic), pool.count))
    fabric = Fabric(nodes_per_leaf=32, rail_optimised=True, spines=8, oversubscription=1.0,
                    switch_latency_s=130e-9)
    total = (prefill.count + decode.count + (0 if mixed is None else mixed.count)) * prefill.machine.gpus
    return Cluster("split", tuple(groups), fabric, num_gpus=total), prefill.count


def simulate_split(model: ModelSpec, requests: Sequence[Request], cfg: SplitConfig) -> SplitResult:
    """Simulate phase-split serving of ``requests``. ``CapacityError`` when a request's KV cache cannot
    fit a prefill or a decode instance."""
    pp, dp = cfg.prefill, cfg.decode
    mx = None if cfg.mixed is None else cfg.mixed.pool
    pools = {"prefill": pp, "decode": dp, **({} if mx is None else {"mixed": mx})}
    steps = {k: step_model(model, pl, cfg) for k, pl in pools.items()}
    scfg = {k: _serve_cfg(pl, cfg) for k, pl in pools.items()}
    mem = {k: memory_breakdown(model, pools[k].machine.effective_gpu, tp=c.tp,
                               gpu_memory_utilization=c.gpu_memory_utilization,
                               max_num_batched_tokens=c.max_num_batched_tokens, max_num_seqs=c.max_num_seqs,
                               block_size=c.block_size) for k, c in scfg.items()}
    reqs = sorted(requests, key=lambda r: (r.arrival_s, r.id))
    for r in reqs:
        if r.output_tokens < 1 or r.prompt_tokens < 1:
            raise WorkloadError(f"request {r.id}: prompt and output tokens must be >= 1")
        for k, need in (("prefill", r.prompt_tokens + 1), ("decode", r.prompt_tokens + r.output_tokens)):
            if need > mem[k].kv_tokens:
                raise CapacityError(f"request {r.id} needs {need} KV tokens; a {k} instance holds {mem[k].kv_tokens}",
                                    breakdown={"kv_cache": mem[k].kv_cache_bytes})
    cluster = None
    if cfg.transfer is not TransferMode.NONE:
        cluster, _ = build_cluster(pp, dp, mx)
    env = simpy.Environment()
    n = len(reqs)
    idx = {r.id: i for i, r in enumerate(reqs)}
    first = np.full(n, -1, np.int64)
    last = np.full(n, -1, np.int64)
    xfer = np.zeros(n, np.int64)
    kvb = np.zeros(n)
    pre_inst = np.full(n, -1, np.int64)
    dec_inst = np.full(n, -1, np.int64)
    load = {k: [0] * pl.instances for k, pl in pools.items()}   # tokens routed, not yet done
    rr = {"prefill": 0, "decode": 0}
    mix_inst = np.full(n, -1, np.int64)
    mix_phase = np.zeros(n, np.int64)
    p_thr = d_thr = 0
    if cfg.mixed is not None:
        pt, dt = cfg.mixed.prefill_overflow_tokens, cfg.mixed.decode_overflow_tokens
        p_thr = scfg["prefill"].max_num_batched_tokens if pt is None else pt
        d_thr = mem["decode"].kv_tokens if dt is None else dt
    kv_per_token = model.kv_bytes_per_token(2)
    memo: dict[tuple[int, int, int], float] = {}
    layers = model.num_layers

    def route(pool: str) -> int:
        loads = load[pool]
        if cfg.router is SplitRouter.ROUND_ROBIN:
            k = rr[pool] % len(loads)
            rr[pool] += 1
            return k
        return min(range(len(loads)), key=loads.__getitem__)

    def gpus(base_gpu: int, inst: int, tp: int) -> list[str]:
        per_node = pp.machine.gpus
        return [f"n{(base_gpu + inst * tp + j) // per_node}.gpu{(base_gpu + inst * tp + j) % per_node}"
                for j in range(tp)]

    def transfer_s(src: int, dst: int, prompt: int, to_mixed: bool = False) -> float:
        key = (src, dst if not to_mixed else -1 - dst, prompt)
        t = memo.get(key)
        if t is None:
            assert cluster is not None
            s = gpus(0, src, pp.tp)
            if to_mixed:
                assert mx is not None
                d = gpus((pp.count + dp.count) * pp.machine.gpus, dst, mx.tp)
            else:
                d = gpus(pp.count * pp.machine.gpus, dst, dp.tp)
            t = memo[key] = kv_transfer_time(cluster, s, d, prompt * kv_per_token)
        return t

    dec_reps: list[Replica] = []
    mix_reps: list[Replica] = []

    def on_decode_done(inst: int, r: SimRequest) -> None:
        i = idx[r.id]
        last[i] = r.last_ns
        load["decode"][inst] -= r.prompt + r.output

    def on_mixed_done(inst: int, r: SimRequest) -> None:
        i = idx[r.id]
        if first[i] < 0:
            first[i] = r.first_ns
        last[i] = r.last_ns
        load["mixed"][inst] -= r.prompt + r.output

    def handoff(r: SimRequest, i: int, dst: int, delay: int, to_mixed: bool = False):  # type: ignore[no-untyped-def]
        if delay > 0:
            yield env.timeout(delay)
        o = reqs[i].output_tokens
        d = SimRequest(r.id, r.arrival_ns, r.prompt, o)
        d.num_tokens, d.num_computed, d.generated = r.prompt + 1, r.prompt, 1
        d.first_ns = d.last_ns = r.first_ns
        d.admitted_ns = r.admitted_ns
        (mix_reps if to_mixed else dec_reps)[dst].add(d)

    def mixed_target(need: int) -> int | None:
        """The mixed instance with the fewest outstanding tokens, if the request's whole KV fits one."""
        if cfg.mixed is None or need > mem["mixed"].kv_tokens:
            return None
        loads = load["mixed"]
        return min(range(len(loads)), key=loads.__getitem__)

    def on_prefill_done(inst: int, r: SimRequest) -> None:
        i = idx[r.id]
        first[i] = r.first_ns
        load["prefill"][inst] -= r.prompt
        o = reqs[i].output_tokens
        if o <= 1:
            last[i] = r.first_ns
            return
        to_mixed = False
        if cfg.mixed is not None and min(load["decode"]) + r.prompt + o > d_thr:
            m = mixed_target(r.prompt + o)
            if m is not None:
                to_mixed, dst = True, m
                load["mixed"][m] += r.prompt + o
                mix_inst[i], mix_phase[i] = m, 2
        if not to_mixed:
            dst = route("decode")
            load["decode"][dst] += r.prompt + o
            dec_inst[i] = dst
        kvb[i] = r.prompt * kv_per_token
        if cfg.transfer is TransferMode.NONE:
            exposed = 0.0
        else:
            t = transfer_s(inst, dst, r.prompt, to_mixed)
            if cfg.transfer is TransferMode.SERIALIZED:
                exposed = t
            else:
                span = (r.first_ns - r.admitted_ns) / 1e9
                exposed = max(t / layers, t - span * (layers - 1) / layers)
        xfer[i] = int(round(exposed * 1e9))
        env.process(handoff(r, i, dst, int(xfer[i]), to_mixed))

    pc, dc = scfg["prefill"], scfg["decode"]
    pclock = DecodeClock(steps["prefill"], int(round(pc.iteration_overhead_s * 1e9)))
    dclock = DecodeClock(steps["decode"], int(round(dc.iteration_overhead_s * 1e9)))
    pre_reps = [_HookedReplica(env, k, pc, steps["prefill"], mem["prefill"].num_blocks, False, pclock,
                               on_done=on_prefill_done) for k in range(pp.instances)]
    dec_reps.extend(_HookedReplica(env, k, dc, steps["decode"], mem["decode"].num_blocks, False, dclock,
                                   on_done=on_decode_done) for k in range(dp.instances))
    if mx is not None:
        mc = scfg["mixed"]
        mclock = DecodeClock(steps["mixed"], int(round(mc.iteration_overhead_s * 1e9)))
        mix_reps.extend(_HookedReplica(env, k, mc, steps["mixed"], mem["mixed"].num_blocks, False, mclock,
                                       on_done=on_mixed_done) for k in range(mx.instances))

    def arrivals():  # type: ignore[no-untyped-def]
        for i, r in enumerate(reqs):
            t = int(round(r.arrival_s * 1e9))
            if t > env.now:
                yield env.timeout(t - env.now)
            if cfg.mixed is not None and min(load["prefill"]) >= p_thr:
                m = mixed_target(r.prompt_tokens + r.output_tokens)
                if m is not None and load["mixed"][m] < min(load["prefill"]):
                    load["mixed"][m] += r.prompt_tokens + r.output_tokens
                    mix_inst[i], mix_phase[i] = m, 1
                    mix_reps[m].add(SimRequest(r.id, t, r.prompt_tokens, r.output_tokens))
                    continue
            k = route("prefill")
            load["prefill"][k] += r.prompt_tokens
            pre_inst[i] = k
            pre_reps[k].add(SimRequest(r.id, t, r.prompt_tokens, 1))

    env.process(arrivals())
    env.run()
    if (last < 0).any():  # pragma: no cover - a scheduler bug, not a user error
        raise RuntimeError(f"{int((last < 0).sum())} requests never finished")
    return SplitResult(model, cfg, np.array([r.id for r in reqs], np.int64),
                       np.array([r.prompt_tokens for r in reqs], np.int64),
                       np.array([r.output_tokens for r in reqs], np.int64),
                       np.array([int(round(r.arrival_s * 1e9)) for r in reqs], np.int64),
                       first, last, xfer, kvb, pre_inst, dec_inst, mem, steps,
                       None if mx is None else mix_inst, None if mx is None else mix_phase)
