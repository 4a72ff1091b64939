"""Flow-level network simulation: max-min fair sharing of the links among concurrent flows.

The fabric is a fluid model. Every flow (:class:`hwmodels.network.flows.Flow`) crosses the
directed edges of its route; at any moment each flow receives the **max-min fair** rate over the
edges' ``capacity`` (bytes/s) and its own optional ``rate_cap``: no flow can get more without
taking from a flow that has no more than it (Bertsekas & Gallager, *Data Networks*, 2nd ed.,
section 6.5.2). Rates change only when a flow starts or finishes, so the simulation is a sequence
of events at flow starts and completions, with the rates recomputed at each.

Timing of one flow: its bytes start flowing when its step starts; it is complete ``latency``
(the summed ``latency`` of its route's edges, propagation and switching) plus ``overhead_s`` (the
per-message software cost) after its last byte was sent. Alone on idle links, a flow of ``b``
bytes whose tightest edge (or cap) gives ``r`` bytes/s takes ``latency + overhead_s + b / r``:
the alpha-beta form of one message, which is what lets a decomposed collective equal its closed
form when nothing contends.

Water-filling in vectorised rounds. The classical progressive filling raises all rates together
until some link saturates, freezes the flows through it, and repeats: one round per distinct
rate level. Here a round freezes every link whose fair share (residual capacity over its unfrozen
flows) is no larger than the share of any link (or cap) met by any of its flows (a *locally*
minimal link): shares only grow as the filling proceeds, so such a link saturates at exactly its
present share and its flows' rates are final. All locally minimal links are settled in the same
round, and a rate cap is a private link of its flow. Each round is a few passes over the
flows x links incidence (CSR and CSC index arrays, ``np.minimum.reduceat`` for the per-row and
per-column minima, scipy.sparse products for the residual updates); there are no Python loops
over flows or links per event. Completions closer than a relative 1e-9 of a flow's size are one
event, so equal flows on symmetric routes (a ring step, a uniform all-to-all) finish together.

SimPy drives the events: :class:`Fabric` is a resource of an environment. A process asks it to
move a step's flows with ``yield fabric.transfer(flows)`` and resumes when the last of them is
complete, so a schedule is a process stepping through its steps, and schedules given together run
concurrently and contend (:func:`simulate_flows`). Time in the environment may be seconds
(``tick_s=1``) or the integer nanoseconds of the system-level simulations (``tick_s=1e-9``);
inside, the fluid state is kept in float seconds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import simpy

from hwmodels.network.collectives import (
    Algorithm,
    CollectiveOp,
    CollectiveParams,
    CollectiveResult,
    default_params,
)
from hwmodels.network.decompose import FlowBatch, decompose, fabric_graph
from hwmodels.network.flows import Edge, Flow, FlowSchedule
from hwmodels.network.topology import Cluster
from workloads.errors import ConfigError

if TYPE_CHECKING:  # graphs are passed in; only the annotations name networkx
    import networkx as nx

log = logging.getLogger(__name__)

# flows whose remaining bytes are below this fraction of their size are complete (float noise of
# the fluid state; also what merges the completions of equal flows into one event)
DONE_REL = 1e-9
_route_of = attrgetter("route")
_Encoded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# a link whose share is within this relative margin of its flows' tightest constraint is settled
SHARE_REL = 1e-9


def link_arrays(graph: nx.DiGraph) -> tuple[list[Edge], np.ndarray, np.ndarray]:
    """(edges, capacity bytes/s, latency s) of every directed edge, in the graph's edge order.

    A missing, non-positive or non-finite capacity, or a negative latency, is a ``ConfigError``
    naming the edge."""
    edges: list[Edge] = list(graph.edges)
    cap = np.empty(len(edges))
    lat = np.empty(len(edges))
    for i, (u, v) in enumerate(edges):
        data = graph.edges[u, v]
        c = data.get("capacity")
        if c is None or not (float(c) > 0 and math.isfinite(float(c))):
            raise ConfigError(f"link {u}->{v} has capacity {c!r} bytes/s (must be > 0)",
                              field=f"link {u}->{v}.capacity", value=c)
        lt = float(data.get("latency", 0.0))
        if not (lt >= 0 and math.isfinite(lt)):
            raise ConfigError(f"link {u}->{v} has latency {lt!r} s (must be >= 0)",
                              field=f"link {u}->{v}.latency", value=lt)
        cap[i] = float(c)
        lat[i] = lt
    return edges, cap, lat


def _segment_min(values: np.ndarray, indptr: np.ndarray, nonempty: np.ndarray, starts: np.ndarray,
                 out_len: int) -> np.ndarray:
    """Minimum of ``values`` over each CSR segment; +inf for an empty segment.

    ``starts`` are the start offsets of the nonempty segments only: consecutive nonempty segments
    are contiguous in ``values`` (empty ones hold no entries), so ``reduceat`` over them is exact."""
    out = np.full(out_len, np.inf)
    if starts.size:
        out[nonempty] = np.minimum.reduceat(values, starts)
    return out


def max_min_rates(indptr: np.ndarray, indices: np.ndarray, capacity: np.ndarray,
                  rate_cap: np.ndarray | None = None) -> np.ndarray:
    """Max-min fair rates of flows over links.

    Flow ``f`` crosses links ``indices[indptr[f]:indptr[f+1]]`` (each at most once); link ``l``
    carries at most ``capacity[l]``; flow ``f`` gets at most ``rate_cap[f]`` (``inf`` = no cap).
    Returns the rate of every flow (``inf`` for a flow with neither links nor cap).
    Vectorised water-filling by locally minimal links (module docstring)."""
    n_f = indptr.size - 1
    n_l = capacity.size
    cap_f = np.full(n_f, np.inf) if rate_cap is None else np.asarray(rate_cap, dtype=float)
    rate = np.full(n_f, np.inf)
    if n_f == 0:
        return rate
    a = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n_f, n_l))
    at = a.tocsc()
    row_len = np.diff(indptr)
    row_ne = row_len > 0
    row_starts = indptr[:-1][row_ne]
    col_ne = np.diff(at.indptr) > 0
    col_starts = at.indptr[:-1][col_ne]
    col_rows = at.indices

    fixed = ~row_ne & ~np.isfinite(cap_f)      # no links and no cap: unconstrained (rate inf)
    resid = capacity.astype(float).copy()
    cnt = np.bincount(indices, minlength=n_l).astype(float)
    rounds = 0
    while not fixed.all():
        rounds += 1
        share = np.full(n_l, np.inf)
        used = cnt > 0.5
        share[used] = resid[used] / cnt[used]
        lshare = _segment_min(share[indices], indptr, row_ne, row_starts, n_f)
        fmin = np.minimum(lshare, cap_f)
        fmin[fixed] = np.inf
        lmin = _segment_min(fmin[col_rows], at.indptr, col_ne, col_starts, n_l)
        ready = used & (share <= lmin * (1.0 + SHARE_REL))
        through_ready = (a @ ready.astype(float)) > 0
        newly = ~fixed & (through_ready | (cap_f <= lshare * (1.0 + SHARE_REL)))
        if not newly.any():     # cannot happen (the global minimum is always ready); guard anyway
            raise RuntimeError(f"max-min water-filling made no progress after {rounds} rounds")
        rate[newly] = fmin[newly]
        fixed |= newly
        if fixed.all():
            break
        x = np.zeros(n_f)
        x[newly] = rate[newly]
        resid -= a.T @ x
        np.maximum(resid, 0.0, out=resid)
        cnt -= a.T @ newly.astype(float)
    return rate


@dataclass
class _Batch:
    """The flows of one ``transfer`` call: its event fires when the last is complete."""

    event: simpy.Event
    outstanding: int
    tail_s: float                    # latest completion (seconds) among its finished flows
    finish_s: np.ndarray | None      # per-flow completion (seconds) when recording


class Fabric:
    """A SimPy resource moving flows over ``graph`` with max-min fair link sharing.

    ``tick_s`` is the length of one environment time unit in seconds (1 for an environment in
    seconds, 1e-9 for the integer-nanosecond system simulations; delays are then rounded up to
    whole ticks). ``record_flows`` keeps every flow's completion time (``Batch`` results)."""

    def __init__(self, env: simpy.Environment, graph: nx.DiGraph, *, tick_s: float = 1.0,
                 record_flows: bool = False) -> None:
        if not tick_s > 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.env = env
        self.graph = graph
        self.tick_s = tick_s
        self._int_ticks = tick_s != 1.0
        self.edges, self.capacity, self.latency = link_arrays(graph)
        self._edge_index = {e: i for i, e in enumerate(self.edges)}
        self.record_flows = record_flows
        n_l = len(self.edges)
        self.link_bytes = np.zeros(n_l)
        self.flows_started = 0
        self.rate_updates = 0          # water-filling solves (one per event with a changed flow set)
        # the pool of flows in transfer: CSR over links plus per-flow state
        self._indptr = np.zeros(1, np.int64)
        self._indices = np.zeros(0, np.int64)
        self._remaining = np.zeros(0)
        self._size = np.zeros(0)
        self._cap = np.zeros(0)
        self._delay = np.zeros(0)
        self._batch = np.zeros(0, np.int64)
        self._pos = np.zeros(0, np.int64)
        self._rate = np.zeros(0)
        self._t_last = self._now_s()
        self._batches: dict[int, _Batch] = {}
        self._next_batch = 0
        self._gen = 0                  # invalidates stale completion timers
        self._due = np.zeros(0, bool)  # flows the pending timer completes
        self._update_pending = False
        self._records: dict[int, np.ndarray] = {}
        self._batch_cache: dict[int, tuple[FlowBatch, _Encoded]] = {}

    # -- public -------------------------------------------------------------------------------

    def transfer(self, flows: Sequence[Flow]) -> simpy.Event:
        """Start ``flows`` now; the returned event fires when the last of them is complete
        (its value is the batch id; see :meth:`finish_times`)."""
        ev = self.env.event()
        bid = self._next_batch
        self._next_batch += 1
        n = len(flows)
        rec = np.full(n, np.nan) if self.record_flows else None
        batch = _Batch(ev, n, -math.inf, rec)
        self._batches[bid] = batch
        if n == 0:
            self._batches.pop(bid)
            ev.succeed(bid)
            return ev
        indptr, indices, size, cap, delay = self._encode(flows)
        self.flows_started += n
        lens = np.diff(indptr)
        self.link_bytes += np.bincount(indices, weights=np.repeat(size, lens), minlength=len(self.edges))
        now = self._now_s()
        # flows with nothing to move (no bytes, or neither links nor cap) are done at once
        instant = (size <= 0) | ((lens == 0) & ~np.isfinite(cap))
        if instant.any():
            idx = np.flatnonzero(instant)
            self._finish(np.full(idx.size, bid), idx, now + delay[idx])
        keep = ~instant
        if keep.any():
            self._advance()
            k_idx = np.flatnonzero(keep)
            k_len = lens[k_idx]
            k_ptr = np.concatenate([[0], np.cumsum(k_len)])
            mask = np.repeat(keep, lens)
            self._indices = np.concatenate([self._indices, indices[mask]])
            self._indptr = np.concatenate([self._indptr, self._indptr[-1] + k_ptr[1:]])
            self._remaining = np.concatenate([self._remaining, size[k_idx]])
            self._size = np.concatenate([self._size, size[k_idx]])
            self._cap = np.concatenate([self._cap, cap[k_idx]])
            self._delay = np.concatenate([self._delay, delay[k_idx]])
            self._batch = np.concatenate([self._batch, np.full(k_idx.size, bid, np.int64)])
            self._pos = np.concatenate([self._pos, k_idx.astype(np.int64)])
            self._rate = np.concatenate([self._rate, np.zeros(k_idx.size)])
            self._due = np.concatenate([self._due, np.zeros(k_idx.size, bool)])
            self._request_update()
        return ev

    def finish_times(self, batch_id: int) -> np.ndarray | None:
        """Completion time (seconds) of each flow of a finished batch, in the order given
        (``record_flows`` only; a batch's record is kept until asked for once)."""
        return self._records.pop(batch_id, None) if self.record_flows else None

    def run_schedule(self, schedule: FlowSchedule) -> Generator[simpy.Event, Any, float]:
        """A process: the schedule's steps one after another, from its ``start_s``. Returns the
        finish time in seconds."""
        env = self.env
        start = schedule.start_s - self._now_s()
        if start > 0:
            yield env.timeout(self._ticks(start))
        for step in schedule.steps:
            yield self.transfer(step)
        return self._now_s()

    @property
    def active_flows(self) -> int:
        return int(self._remaining.size)

    # -- internals ----------------------------------------------------------------------------

    def _now_s(self) -> float:
        return float(self.env.now) * self.tick_s

    def _ticks(self, seconds: float) -> float:
        if self._int_ticks:
            return max(0, math.ceil(seconds / self.tick_s - 1e-9))
        return seconds

    def _encode(self, flows: Sequence[Flow]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, link indices, bytes, cap (inf = none), latency + overhead) of each flow."""
        if isinstance(flows, FlowBatch):
            cached = self._batch_cache.get(id(flows))
            if cached is not None and cached[0] is flows:
                return cached[1]
            enc = self._encode_batch(flows)
            if len(self._batch_cache) >= 8:
                self._batch_cache.pop(next(iter(self._batch_cache)))
            self._batch_cache[id(flows)] = (flows, enc)
            return enc
        n = len(flows)
        idx = self._edge_index
        try:
            # map/chain rather than a comprehension: ~15% faster on the ~10^6-flow all-to-all
            flat = list(map(idx.__getitem__, chain.from_iterable(map(_route_of, flows))))
        except KeyError as exc:
            bad = next(f for f in flows if any(e not in idx for e in f.route))
            edge = next(e for e in bad.route if e not in idx)
            raise ConfigError(f"flow {bad.src}->{bad.dst}: route edge {edge[0]}->{edge[1]} is not a link "
                              "of the topology", field="route", value=edge) from exc
        indices = np.asarray(flat, dtype=np.int64)
        lens = np.fromiter(map(len, map(_route_of, flows)), np.int64, count=n)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        size = np.fromiter(map(attrgetter("nbytes"), flows), float, count=n)
        if (size < 0).any() or not np.isfinite(size).all():
            bad = flows[int(np.flatnonzero(~(size >= 0) | ~np.isfinite(size))[0])]
            raise ConfigError(f"flow {bad.src}->{bad.dst} has {bad.nbytes!r} bytes", field="nbytes",
                              value=bad.nbytes)
        cap = np.fromiter((math.inf if f.rate_cap is None else f.rate_cap for f in flows), float, count=n)
        if (cap <= 0).any():
            bad = flows[int(np.flatnonzero(cap <= 0)[0])]
            raise ConfigError(f"flow {bad.src}->{bad.dst} has rate cap {bad.rate_cap!r} bytes/s (must be > 0)",
                              field="rate_cap", value=bad.rate_cap)
        over = np.fromiter(map(attrgetter("overhead_s"), flows), float, count=n)
        lat = np.zeros(n)
        ne = lens > 0
        if ne.any():
            lat[ne] = np.add.reduceat(self.latency[indices], indptr[:-1][ne])
        return indptr, indices, size, cap, lat + over

    def _encode_batch(self, b: FlowBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        idx = self._edge_index
        missing = [e for e in b.edges if e not in idx]
        if missing:
            e = missing[0]
            raise ConfigError(f"a flow's route edge {e[0]}->{e[1]} is not a link of the topology", field="route",
                              value=e)
        emap = np.fromiter(map(idx.__getitem__, b.edges), np.int64, count=len(b.edges))
        indices = emap[b.indices]
        size = b.nbytes
        if size.size and (not np.isfinite(size).all() or size.min() < 0):
            k = int(np.flatnonzero(~(size >= 0) | ~np.isfinite(size))[0])
            raise ConfigError(f"flow {b.nodes[b.src[k]]}->{b.nodes[b.dst[k]]} has {size[k]!r} bytes", field="nbytes",
                              value=float(size[k]))
        if (b.rate_cap <= 0).any():
            k = int(np.flatnonzero(b.rate_cap <= 0)[0])
            raise ConfigError(f"flow {b.nodes[b.src[k]]}->{b.nodes[b.dst[k]]} has rate cap {b.rate_cap[k]!r} bytes/s "
                              "(must be > 0)", field="rate_cap", value=float(b.rate_cap[k]))
        lens = np.diff(b.indptr)
        lat = np.zeros(len(b))
        ne = lens > 0
        if ne.any():
            lat[ne] = np.add.reduceat(self.latency[indices], b.indptr[:-1][ne])
        return b.indptr, indices, size, b.rate_cap, lat + b.overhead_s

    def _advance(self) -> None:
        """Move the fluid state to now at the rates of the last update."""
        now = self._now_s()
        dt = now - self._t_last
        if dt > 0 and self._remaining.size:
            self._remaining -= self._rate * dt
        self._t_last = now

    def _request_update(self) -> None:
        """Recompute the rates once at this instant, after every transfer started at it."""
        self._gen += 1
        if not self._update_pending:
            self._update_pending = True
            ev = self.env.timeout(0)
            ev.callbacks.append(self._on_update)

    def _on_update(self, _ev: simpy.Event) -> None:
        self._update_pending = False
        self._update(fired=False)

    def _on_timer(self, gen: int) -> Any:
        def cb(_ev: simpy.Event) -> None:
            if gen == self._gen and not self._update_pending:
                self._update(fired=True)
        return cb

    def _update(self, *, fired: bool) -> None:
        self._advance()
        now = self._t_last
        done = self._remaining <= DONE_REL * self._size
        if fired:
            done |= self._due
        if done.any():
            idx = np.flatnonzero(done)
            self._finish(self._batch[idx], self._pos[idx], now + self._delay[idx])
            self._compact(~done)
        self._gen += 1
        n = self._remaining.size
        if n == 0:
            self._due = np.zeros(0, bool)
            return
        self.rate_updates += 1
        self._rate = max_min_rates(self._indptr, self._indices, self.capacity, self._cap)
        t_fin = self._remaining / self._rate
        t_min = float(t_fin.min())
        self._due = t_fin <= t_min * (1.0 + DONE_REL)
        timer = self.env.timeout(self._ticks(t_min))
        timer.callbacks.append(self._on_timer(self._gen))

    def _compact(self, keep: np.ndarray) -> None:
        lens = np.diff(self._indptr)
        self._indices = self._indices[np.repeat(keep, lens)]
        self._indptr = np.concatenate([[0], np.cumsum(lens[keep])]).astype(np.int64)
        for name in ("_remaining", "_size", "_cap", "_delay", "_batch", "_pos", "_rate"):
            setattr(self, name, getattr(self, name)[keep])

    def _finish(self, bids: np.ndarray, pos: np.ndarray, fin_s: np.ndarray) -> None:
        """Flows complete at ``fin_s`` (their last byte's time plus latency and overhead)."""
        order = np.argsort(bids, kind="stable")
        bids, pos, fin_s = bids[order], pos[order], fin_s[order]
        starts = np.flatnonzero(np.r_[True, bids[1:] != bids[:-1]])
        ends = np.r_[starts[1:], bids.size]
        tails = np.maximum.reduceat(fin_s, starts)
        for s, e, tail in zip(starts.tolist(), ends.tolist(), tails.tolist()):
            bid = int(bids[s])
            b = self._batches[bid]
            b.outstanding -= e - s
            b.tail_s = max(b.tail_s, tail)
            if b.finish_s is not None:
                b.finish_s[pos[s:e]] = fin_s[s:e]
            if b.outstanding == 0:
                del self._batches[bid]
                if b.finish_s is not None:
                    self._records[bid] = b.finish_s
                delay = self._ticks(b.tail_s - self._now_s())
                if delay > 0:
                    t = self.env.timeout(delay)
                    t.callbacks.append(_succeed(b.event, bid))
                else:
                    b.event.succeed(bid)


def _succeed(ev: simpy.Event, value: object) -> Any:
    def cb(_t: simpy.Event) -> None:
        ev.succeed(value)
    return cb


@dataclass
class FlowResult:
    """Outcome of :func:`simulate_flows` (seconds, bytes)."""

    time_s: float                          # last schedule's finish minus the first schedule's start
    finish_s: tuple[float, ...]            # per schedule, absolute
    duration_s: tuple[float, ...]          # per schedule, finish minus its start_s
    names: tuple[str, ...]
    flows: int
    rate_updates: int
    link_bytes: dict[Edge, float] = field(repr=False)
    link_utilisation: dict[Edge, float] = field(repr=False)   # bytes / (capacity x time_s)
    step_finish_s: tuple[tuple[float, ...], ...] = ()       # per schedule, each step's finish
    flow_finish_s: tuple[tuple[np.ndarray, ...], ...] = field(default=(), repr=False)  # record_flows

    def by_name(self) -> dict[str, float]:
        """Duration per schedule name (the last schedule wins a repeated name)."""
        return dict(zip(self.names, self.duration_s))


def simulate_flows(graph: nx.DiGraph, schedules: Iterable[FlowSchedule], *,
                   record_flows: bool = False) -> FlowResult:
    """Run ``schedules`` concurrently on ``graph`` (each one's steps in sequence from its
    ``start_s``) with max-min fair sharing; time in seconds."""
    scheds = list(schedules)
    env = simpy.Environment()
    fabric = Fabric(env, graph, record_flows=record_flows)
    steps_done: list[list[float]] = [[] for _ in scheds]
    flow_fin: list[list[np.ndarray]] = [[] for _ in scheds]

    def run(i: int, s: FlowSchedule) -> Generator[simpy.Event, Any, None]:
        if s.start_s < 0:
            raise ConfigError(f"schedule '{s.name}' starts at {s.start_s} s (must be >= 0)",
                              field="start_s", value=s.start_s)
        if s.start_s > 0:
            yield env.timeout(s.start_s)
        for step in s.steps:
            bid = yield fabric.transfer(step)
            steps_done[i].append(env.now)
            if record_flows:
                rec = fabric.finish_times(bid)
                flow_fin[i].append(rec if rec is not None else np.zeros(0))

    for i, s in enumerate(scheds):
        env.process(run(i, s))
    env.run()
    finish = tuple(d[-1] if d else s.start_s for d, s in zip(steps_done, scheds))
    t0 = min((s.start_s for s in scheds), default=0.0)
    total = max(finish, default=0.0) - t0
    lb = {e: float(b) for e, b in zip(fabric.edges, fabric.link_bytes) if b > 0}
    util = {e: float(b) / (fabric.capacity[fabric._edge_index[e]] * total) if total > 0 else 0.0
            for e, b in lb.items()}
    return FlowResult(
        time_s=total,
        finish_s=finish,
        duration_s=tuple(f - s.start_s for f, s in zip(finish, scheds)),
        names=tuple(s.name for s in scheds),
        flows=fabric.flows_started,
        rate_updates=fabric.rate_updates,
        link_bytes=lb,
        link_utilisation=util,
        step_finish_s=tuple(tuple(d) for d in steps_done),
        flow_finish_s=tuple(tuple(f) for f in flow_fin),
    )


@dataclass(frozen=True)
class CollectiveFlowResult(CollectiveResult):
    """One collective simulated flow by flow (``simulate_collective_flows``): the closed form's result
    fields (algbw, busbw as nccl-tests defines them) with the flow-level run behind the time."""

    flows: FlowResult | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"flows": self.flows.flows if self.flows else 0, "fidelity": "flow"}


def simulate_collective_flows(cluster: Cluster, op: CollectiveOp | str, nbytes: float,
                              algo: Algorithm | str = "auto", *, group: Sequence[str] | None = None,
                              params: CollectiveParams | None = None) -> CollectiveFlowResult:
    """One collective on an otherwise idle fabric, flow by flow (:func:`decompose` on
    :func:`fabric_graph`). Without contention it equals the closed form
    (:func:`~hwmodels.network.collectives.collective_time`); the flows show where it does not."""
    p = params or default_params()
    g = fabric_graph(cluster, p)
    sched = decompose(cluster, op, nbytes, algo, group=group, params=p, graph=g)
    res = simulate_flows(g, [sched])
    meta = sched.meta
    return CollectiveFlowResult(op=meta["op"], algo=meta["algo"], protocol=meta["protocol"],  # type: ignore[arg-type]
                                nbytes=float(nbytes), n=int(meta["n"]), time_s=res.time_s,  # type: ignore[call-overload]
                                flows=res)


def simulate_collectives(cluster: Cluster, schedules: Iterable[FlowSchedule], *,
                         params: CollectiveParams | None = None, record_flows: bool = False) -> FlowResult:
    """Several decomposed collectives (``decompose``, ``decompose_all_to_allv``) at once on the
    cluster's fabric: concurrent groups, several jobs, each schedule from its ``start_s``."""
    return simulate_flows(fabric_graph(cluster, params), schedules, record_flows=record_flows)
