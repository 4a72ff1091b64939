"""Serving simulation: requests arrive, a router spreads them over replicas, each replica runs its
scheduler's iterations. ``simulate_serving(model, gpu, requests, cfg) -> ServeResult``.

SimPy processes: one per replica (``sim.replica``) and one for arrivals + routing. Arrivals are
scheduled URGENT so that a request arriving exactly at an iteration boundary is in the queue when
the replica schedules at that boundary, in stepping and in fast-forward mode alike.
Simulated time is integer nanoseconds.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np
import simpy
from simpy.events import URGENT

from hwmodels.gpu import GPUSpec
from hwmodels.memory import MemoryBreakdown, memory_breakdown
from hwmodels.step import StepTimeModel
from sim.config import ServeConfig
from sim.replica import DecodeClock, Replica
from sim.router import ROUTERS
from sim.scheduler import SimRequest
from workloads.errors import CapacityError, WorkloadError
from workloads.model_spec import ModelSpec
from workloads.requests import Request

Progress = Callable[[int, int], None]


@dataclass
class ServeResult:
    """Raw outcome: per-request arrays (ns), ITL samples, per-replica KV occupancy and iteration log."""

    model: ModelSpec
    gpu: GPUSpec
    cfg: ServeConfig
    memory: MemoryBreakdown
    ids: np.ndarray
    replica: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    arrival_ns: np.ndarray
    admitted_ns: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    preemptions: np.ndarray
    itl_ns: np.ndarray
    itl_weight: np.ndarray
    iterations: int
    events: int
    busy_ns: list[int]
    flops: float
    bytes: float
    kv_t: list[np.ndarray] = field(default_factory=list)
    kv_used: list[np.ndarray] = field(default_factory=list)
    logs: list[list[tuple]] = field(default_factory=list)


def _urgent_at(env: simpy.Environment, delay: int) -> simpy.Event:
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    env.schedule(ev, URGENT, delay)
    return ev


def simulate_serving(model: ModelSpec, gpu: GPUSpec, requests: Sequence[Request], cfg: ServeConfig, *,
                     progress: Progress | None = None, record_timeline: bool = False,
                     step_model: StepTimeModel | None = None) -> ServeResult:
    """Simulate serving ``requests`` (arrival order by ``arrival_s``). Raises ``CapacityError``
    when the model (or one request's KV cache) does not fit."""
    mem = memory_breakdown(model, gpu, tp=cfg.tp, pp=cfg.pp, gpu_memory_utilization=cfg.gpu_memory_utilization,
                           max_num_batched_tokens=cfg.max_num_batched_tokens, max_num_seqs=cfg.max_num_seqs,
                           block_size=cfg.block_size, device_bytes=cfg.device_memory_bytes)
    max_len = cfg.max_model_len or model.max_position_embeddings
    step = step_model or StepTimeModel(model, gpu, cfg.tp, cfg.pp, max_kv_len=max_len)
    reqs = sorted(requests, key=lambda r: (r.arrival_s, r.id))
    for r in reqs:
        if r.output_tokens < 1 or r.prompt_tokens < 1:
            raise WorkloadError(f"request {r.id}: prompt and output tokens must be >= 1, got "
                                f"{r.prompt_tokens} and {r.output_tokens}")
        need = r.prompt_tokens + r.output_tokens
        if need > mem.kv_tokens:
            raise CapacityError(f"request {r.id} needs {need} tokens of KV cache but a replica holds "
                                f"{mem.kv_tokens} ({mem.num_blocks} blocks)", breakdown=_bd(mem))
    env = simpy.Environment()
    clock = DecodeClock(step, int(round(cfg.iteration_overhead_s * 1e9)))
    replicas = [Replica(env, i, cfg, step, mem.num_blocks, record_timeline, clock) for i in range(cfg.replicas)]
    router = ROUTERS.get(cfg.router)()
    sims = [SimRequest(r.id, int(round(r.arrival_s * 1e9)), r.prompt_tokens, r.output_tokens) for r in reqs]
    total = len(sims)
    every = max(1, total // 100)
    route = router.route
    nxt = 0   # the next request to arrive

    def arrive(_ev: simpy.Event) -> None:
        """Callback of an arrival event: route every request that has arrived by now, then schedule
        the next arrival (a chain of callbacks: what a process yielding each arrival's event would do,
        without resuming a generator per arrival)."""
        nonlocal nxt
        now = int(env.now)   # simulated time is integer ns
        i = nxt
        while i < total:
            sr = sims[i]
            if sr.arrival_ns > now:
                _urgent_at(env, sr.arrival_ns - now).callbacks.append(arrive)
                break
            replicas[route(sr.prompt, sr.output, replicas, now)].add(sr)
            i += 1
            if progress is not None and i % every == 0:
                progress(i, total)
        nxt = i

    def tick(_ev: simpy.Event) -> None:
        """Progress when the replicas take their requests in themselves: at every ``every``-th arrival."""
        nonlocal nxt
        nxt += every
        assert progress is not None
        progress(nxt, total)
        if nxt + every <= total:
            _urgent_at(env, sims[nxt + every - 1].arrival_ns - int(env.now)).callbacks.append(tick)

    if not getattr(router, "reads_state", True):   # the assignment is known in advance: no event per arrival
        assigned: list[list[SimRequest]] = [[] for _ in replicas]
        for sr in sims:
            assigned[route(sr.prompt, sr.output, replicas, sr.arrival_ns)].append(sr)
        for rep, mine in zip(replicas, assigned):
            rep.assign(mine)
        if progress is not None and every <= total:
            _urgent_at(env, max(0, sims[every - 1].arrival_ns)).callbacks.append(tick)
    elif sims:
        _urgent_at(env, max(0, sims[0].arrival_ns)).callbacks.append(arrive)
    # The run allocates millions of short-lived objects (events, plans, tuples) and almost no reference
    # cycles; the cyclic collector would repeatedly scan the long-lived ones (requests, per-step
    # records) for nothing (~10% of the run). It is paused for the run and the result's assembly,
    # and restored after.
    with _gc_paused():
        env.run()
        return _result(model, gpu, cfg, mem, sims, replicas, clock, total, progress)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused inside, restored (if it was on) after."""
    gc_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc_on:
            gc.enable()


def _result(model: ModelSpec, gpu: GPUSpec, cfg: ServeConfig, mem: MemoryBreakdown, sims: list[SimRequest],
            replicas: list[Replica], clock: DecodeClock, total: int, progress: Progress | None) -> ServeResult:
    """The finished run's :class:`ServeResult`."""
    if progress is not None:
        progress(total, total)
    unfinished = [s.id for s in sims if s.generated < s.output]
    if unfinished:  # pragma: no cover - a scheduler bug, not a user error
        raise RuntimeError(f"{len(unfinished)} requests never finished, e.g. {unfinished[:5]}")

    def arr(attr: str) -> np.ndarray:
        return np.fromiter(map(attrgetter(attr), sims), np.int64, len(sims))

    # ITL samples (a multiset: the order carries nothing): those counted once, the arrays (each with
    # its weight), then the decode clock's counted one-sequence gaps
    arrays = [a for rep in replicas for a in rep.stats.itl_arrays]
    ws = [w for rep in replicas for w in rep.stats.itl_w]
    ones = [_ints(rep.stats.itl_ones) for rep in replicas]
    n1 = sum(a.size for a in ones)
    v1, w1 = clock.itl_samples()
    itl = np.concatenate([*arrays, *ones, v1]).astype(np.int64, copy=False)
    itw = np.concatenate([np.repeat(np.array(ws, dtype=np.int64), [a.size for a in arrays]),
                          np.ones(n1, dtype=np.int64), w1])
    return ServeResult(
        model=model, gpu=gpu, cfg=cfg, memory=mem, ids=arr("id"), replica=arr("replica"), prompt=arr("prompt"),
        output=arr("output"), arrival_ns=arr("arrival_ns"), admitted_ns=arr("admitted_ns"),
        first_ns=arr("first_ns"), last_ns=arr("last_ns"), preemptions=arr("preemptions"),
        itl_ns=itl, itl_weight=itw,
        iterations=sum(r.stats.iterations for r in replicas), events=sum(r.stats.events for r in replicas),
        busy_ns=[r.stats.busy_ns for r in replicas],
        flops=sum(r.stats.flops for r in replicas), bytes=sum(r.stats.bytes for r in replicas),
        kv_t=[_ints(r.stats.kv_t) for r in replicas],
        kv_used=[_ints(r.stats.kv_used) for r in replicas],
        logs=[r.stats.log for r in replicas])


def _ints(values: list[int]) -> np.ndarray:
    """``np.array(values, np.int64)`` of a long list of ints, without its type and shape discovery."""
    return np.fromiter(values, np.int64, len(values))


def _bd(mem: MemoryBreakdown) -> dict[str, float]:
    return {"weights": mem.weights_bytes, "activation": mem.activation_bytes,
            "non_torch": mem.non_torch_bytes, "kv_cache": mem.kv_cache_bytes}
