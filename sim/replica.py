"""One model replica as a SimPy process: iteration after iteration of its scheduler's batches.

Events are iterations, except that a *decode-only stretch* is one event: when the batch is
decode-only, nothing was preempted, every running request is in it, and no waiting request can
join (the queue is empty, or its head was refused: by KV blocks, which only shrink while decoding,
or by max_num_seqs), then the next k iterations run the same requests, one token each, until the
first of them finishes or the KV blocks for the next step would run out. The k step times are
computed at once (``StepTimeModel.decode_times``) and every token gets the timestamp stepping
would give. If the queue was empty, an arrival cuts the stretch at the first iteration boundary
at or after it, which is where stepping would have admitted it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Any

import numpy as np
import simpy

from hwmodels.step import StepTimeModel
from sim.config import ServeConfig
from sim.scheduler import SCHEDULERS, Plan, SimRequest, Status


class DecodeClock:
    """Decode-only step times in integer ns (iteration overhead included), shared by the replicas of
    one simulation.

    One sequence alone (the common case at light load) has a table: ``dur[L]`` is the step of a
    sequence whose KV length (its new token included) is L, and ``prefix[x] = sum(dur[:x])``, so a
    stretch of k steps from L0 ends at ``prefix[L0 + k] - prefix[L0]`` after it starts: O(1) per
    stretch, and an arrival cut is one bisection. Its inter-token gaps are counted, not listed: a
    difference array over L (``itl_diff``). The table is ``StepTimeModel.decode_times([L], 1)``
    for every L (computed elementwise in one call, bit-identical), grown by doubling on demand.
    Several sequences: ``decode_ns`` takes the stretch from the step model's memoised per-run tables
    (``StepTimeModel.decode_times_mapped``, equal to ``decode_times`` converted to ns).
    """

    def __init__(self, step: StepTimeModel, overhead_ns: int) -> None:
        self.step = step
        self.overhead_ns = overhead_ns
        self.dur = np.zeros(1, np.int64)       # dur[0] unused (no sequence has KV length 0)
        self.prefix: list[int] = [0, 0]
        self.itl_diff: list[int] = [0, 0]
        self._tables: dict[int, Any] = {}    # the step model's memoised stretch tables, in ns
        self._prefill_ns: dict[tuple, int] = {}   # steps without decodes (prompts recur), in ns

    def batch_ns(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...], tokens: int,
                 logits: int) -> int:
        """``StepTimeModel.batch_time`` in integer ns (no overhead); steps without decodes memoised."""
        if decode:
            return int(round(self.step.batch_time(prefill, decode, tokens, logits) * 1e9))
        key = (prefill, tokens, logits)
        t = self._prefill_ns.get(key)
        if t is None:
            t = self._prefill_ns[key] = int(round(self.step.batch_time(prefill, decode, tokens, logits) * 1e9))
        return t

    def decode_ns(self, kv_lens: list[int], k: int) -> np.ndarray:
        return self.step.decode_times_mapped(kv_lens, k, self._to_ns, self._tables)

    def _to_ns(self, seconds: np.ndarray) -> np.ndarray:
        return np.rint(seconds * 1e9).astype(np.int64) + self.overhead_ns

    def cover(self, length: int) -> list[int]:
        """Grow the one-sequence table to KV lengths below ``length``; returns the prefix sums."""
        old = self.dur.size
        if length > old:
            new = max(2 * old, length, 4096)
            add = self.decode_ns([old], new - old)
            self.dur = np.concatenate([self.dur, add])
            sums = accumulate(add.tolist(), initial=self.prefix[-1])
            next(sums)   # the initial value, already the last entry
            self.prefix.extend(sums)
            self.itl_diff.extend([0] * (new - old))
        return self.prefix

    def one_ns(self, kv: int) -> int:
        self.cover(kv + 1)
        return self.prefix[kv + 1] - self.prefix[kv]

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(gap ns, count) of the one-sequence stretches' counted gaps."""
        w = np.cumsum(np.asarray(self.itl_diff[:-1], np.int64))
        keep = w > 0
        return self.dur[keep], w[keep]


class ReplicaStats:
    __slots__ = ("iterations", "busy_ns", "flops", "bytes", "kv_t", "kv_used", "log", "itl_ones", "itl_arrays",
                 "itl_w", "preemptions", "events")

    def __init__(self) -> None:
        self.iterations = 0
        self.busy_ns = 0
        self.flops = 0.0
        self.bytes = 0.0
        self.kv_t: list[int] = []
        self.kv_used: list[int] = []
        self.log: list[tuple[Any, ...]] = []
        self.itl_ones: list[int] = []            # ITL samples (ns) counted once
        self.itl_arrays: list[np.ndarray] = []   # arrays of ITL samples (ns) ...
        self.itl_w: list[int] = []               # ... each sample of array i counted itl_w[i] times
        self.preemptions = 0
        self.events = 0


def _cut_at(stretch: tuple, ta: int) -> tuple[int, int] | None:  # type: ignore[type-arg]
    """Where an arrival at ``ta`` cuts the stretch ``(prefix sums, first, steps, start, n, base)``:
    (steps run, ns of the cut), the first iteration boundary at or after ``ta`` (where stepping would
    admit the request); None when that is the stretch's end anyway."""
    pre, i0, kmax, start, _, base = stretch
    if ta >= start + pre[i0 + kmax] - base:
        return None
    if isinstance(pre, np.ndarray):   # a stretch's own cumsum (i0 = -1, base = 0): the C bisection
        i = int(pre.searchsorted(ta - start, "left"))
        return i + 1, start + int(pre[i])
    i = bisect_left(pre, ta - start + base, i0 + 1, i0 + kmax + 1)
    return i - i0, start + pre[i] - base


class Replica:
    def __init__(self, env: simpy.Environment, index: int, cfg: ServeConfig, step: StepTimeModel,
                 num_blocks: int, record_timeline: bool = False, clock: DecodeClock | None = None) -> None:
        self.env = env
        self.index = index
        self.cfg = cfg
        self.step = step
        self.sched = SCHEDULERS.get(cfg.scheduler)(cfg, num_blocks)
        self.block_size = cfg.block_size
        self.overhead_ns = int(round(cfg.iteration_overhead_s * 1e9))
        self.clock = clock if clock is not None else DecodeClock(step, self.overhead_ns)
        self.ff = cfg.fast_forward
        self.record = record_timeline
        self.stats = ReplicaStats()
        self.outstanding = 0
        self._idle: simpy.Event | None = None
        self._end_ev: simpy.Event | None = None    # the end of a stretch an arrival may cut (None once cut)
        self._cut_k = 0
        # a stretch in flight: (prefix sums, first index, steps, start ns, sequences, base); step j
        # (0-based) ends at start + prefix[first + j + 1] - base. One sequence: the clock's table,
        # base = prefix[first]; several: the stretch's own numpy cumsum (step j ends at cumsum[j]),
        # first = -1, base = 0.
        self._stretch: tuple[list[int] | np.ndarray, int, int, int, int, int] | None = None
        # requests routed here in advance (a router that reads no replica state), in arrival order:
        # the process takes them in itself, so they need no arrival events (see ``assign``)
        self._arrivals: list[SimRequest] | None = None
        self.finished: list[SimRequest] = []
        self._w = step.weight_bytes() / cfg.pp
        self._kvb = step.kv_bytes_per_token()
        self._flop_tok = 2.0 * step.model.matmul_params_per_token()
        self._flop_pair = 4.0 * step.model.num_layers * step.model.q_size
        self.process = env.process(self.run())

    # ---- interface for the router ------------------------------------------------------------
    def assign(self, reqs: list[SimRequest]) -> None:
        """Route ``reqs`` (in arrival order) here in advance, before the run. The process moves each
        into the waiting queue at its first iteration boundary at or after its arrival (or at the
        arrival when idle), and a stretch with an empty queue stops at the first boundary at or after
        the next arrival: what ``add`` at each arrival does (arrivals come first at equal times), with
        no event per arrival. As nothing else reaches the replica then, an idle wait and the first
        iteration after it are one event. Only for routers that read no replica state (round-robin);
        ``add`` is not to be used on the same replica."""
        self._arrivals = reqs

    def add(self, req: SimRequest) -> None:
        req.replica = self.index
        self.sched.waiting.append(req)
        self.outstanding += req.prompt + req.output
        if self._idle is not None and not self._idle.triggered:
            self._idle.succeed()
        elif self._end_ev is not None:
            self._cut()

    def _cut(self) -> None:
        """An arrival during a stretch with an empty queue: the stretch stops at the first iteration
        boundary at or after now (where stepping would admit the request)."""
        assert self._stretch is not None
        ta = int(self.env.now)   # simulated time is integer ns
        cut_at = _cut_at(self._stretch, ta)
        if cut_at is None:   # at the end anyway
            return
        self._cut_k, at = cut_at
        # the process waits on the stretch's end: move its wait to the cut (what an interrupt
        # followed by a timeout would do, without the interrupt's extra event and exception)
        end_ev, self._end_ev = self._end_ev, None
        assert end_ev is not None, "a stretch is cut only while the replica waits on its end"
        cut = self.env.timeout(at - ta)
        proc = self.process
        end_ev.callbacks.remove(proc._resume)
        cut.callbacks.append(proc._resume)
        proc._target = cut

    def outstanding_tokens(self, now_ns: int) -> int:
        if self._stretch is not None:
            pre, i0, k, start, n, base = self._stretch
            done = bisect_right(pre, now_ns - start + base, i0 + 1, i0 + k + 1) - i0 - 1
            return self.outstanding - n * done
        return self.outstanding

    # ---- the process -------------------------------------------------------------------------
    def run(self):  # type: ignore[no-untyped-def]
        env, sched, st, clock = self.env, self.sched, self.stats, self.clock
        timeout, schedule = env.timeout, sched.schedule
        kv_t, kv_used = st.kv_t.append, st.kv_used.append
        num_blocks = sched.num_blocks
        arrivals = self._arrivals   # None: ``add`` brings the requests
        na = len(arrivals) if arrivals is not None else 0
        ai = 0   # the next of ``arrivals`` to take in
        while True:
            now = lag = env._now   # (``env.now``, without the property call) lag: ns from the simulated
            # now to this iteration's start (below)
            if ai < na and arrivals[ai].arrival_ns <= now:
                ai = self._take(arrivals, ai, now)
            if not sched.running and not sched.waiting:
                if ai >= na:
                    self._idle = env.event()
                    yield self._idle
                    self._idle = None
                    continue
                # idle until the next assigned arrival: nothing else reaches this replica, so its
                # first iteration is planned now, as of then, and waited for with the idle time
                now = arrivals[ai].arrival_ns
                ai = self._take(arrivals, ai, now)
            lag = now - lag
            plan = schedule()
            reqs = plan.reqs
            if not reqs:
                head = sched.waiting[0]
                from workloads.errors import CapacityError
                raise CapacityError(
                    f"request {head.id} ({head.num_tokens} tokens) can never be scheduled on replica "
                    f"{self.index}: {sched.num_blocks} KV blocks of {self.block_size} tokens")
            if plan.preempted:   # recompute tokens arise only from this call's preemptions
                st.preemptions += plan.preempted
                self.outstanding += sched.take_recompute_tokens()
            st.events += 1
            kv_t(now)
            kv_used(num_blocks - sched.free_blocks)
            n = len(reqs)
            if plan.admitted:   # the requests admitted from the queue come last
                for r in reqs[n - plan.admitted:]:
                    if r.admitted_ns < 0:
                        r.admitted_ns = now
            if plan.decode_only and not plan.preempted and n == len(sched.running) \
                    and (plan.blocked or not sched.waiting):
                kmax = self._stretch_len(plan) if self.ff else 1
                pre: list[int] | np.ndarray
                if n == 1:
                    s0 = reqs[0].num_tokens
                    pre, i0, durs = clock.cover(s0 + kmax), s0, None
                    base = pre[s0]
                    end = now + pre[s0 + kmax] - base
                else:   # step j ends at cumsum[j] (numpy: a stretch may run thousands of steps)
                    lens = [r.num_tokens for r in reqs]
                    s0 = sum(lens)
                    durs = clock.decode_ns(lens, kmax)
                    pre, i0, base = durs.cumsum(), -1, 0
                    end = now + int(pre[-1])
                k = kmax
                if kmax == 1:
                    yield timeout(end - now + lag)
                elif sched.waiting:   # head refused: arrivals queue behind it
                    self._stretch = (pre, i0, kmax, now, n, base)
                    yield timeout(end - now + lag)
                    self._stretch = None
                elif arrivals is not None:   # the next arrival, if before the end, cuts it (as ``_cut``)
                    self._stretch = (pre, i0, kmax, now, n, base)
                    cut_at = _cut_at(self._stretch, arrivals[ai].arrival_ns) \
                        if ai < na and arrivals[ai].arrival_ns < end else None
                    if cut_at is None:
                        yield timeout(end - now + lag)
                    else:
                        k, at = cut_at
                        yield timeout(at - now + lag)
                    self._stretch = None
                else:   # an arrival cuts it (``add`` moves the wait to the cut): the end or the cut
                    self._stretch = (pre, i0, kmax, now, n, base)
                    self._cut_k = kmax
                    self._end_ev = timeout(end - now)
                    yield self._end_ev
                    k = self._cut_k
                    self._end_ev = self._stretch = None
                self._finish_decode(plan, k, now, now + int(pre[i0 + 1]) - base, now + int(pre[i0 + k]) - base,
                                    s0, durs)
            else:
                bp = self._batch(plan)
                dur = self._step_ns(plan, bp)
                yield timeout(dur + lag)
                self._finish_step(plan, now, now + dur, bp)

    def _take(self, arrivals: list[SimRequest], i: int, now: int) -> int:
        """Move the assigned requests that arrived by ``now`` (from index ``i``) into the waiting
        queue; returns the index of the next."""
        waiting, index = self.sched.waiting, self.index
        out = self.outstanding
        while i < len(arrivals):
            r = arrivals[i]
            if r.arrival_ns > now:
                break
            r.replica = index
            waiting.append(r)
            out += r.prompt + r.output
            i += 1
        self.outstanding = out
        return i

    # ---- stretch length ------------------------------------------------------------------------
    def _stretch_len(self, plan: Plan) -> int:
        reqs = plan.reqs
        rem = reqs[0].output - reqs[0].generated
        for r in reqs:
            if r.output - r.generated < rem:
                rem = r.output - r.generated
        if rem <= 1:
            return 1
        b = self.block_size
        free = self.sched.free_blocks
        # step 0's blocks are already allocated; step j (>= 1) needs ceil((c + j + 1) / b) each,
        # where c = computed tokens before step 0 (= num_tokens - 1).
        if len(reqs) == 1:   # need(j) <= free  <=>  j <= (blocks + free) * b - c - 1
            r = reqs[0]
            jmax = (r.blocks + free) * b - (r.num_tokens - 1) - 1
            return rem if jmax >= rem - 1 else max(jmax, 0) + 1
        tot = 0   # need(rem - 1), inline: usually every step fits
        for r in reqs:
            x = (r.num_tokens - 2 + rem + b) // b - r.blocks
            if x > 0:
                tot += x
        if tot <= free:
            return rem
        pairs = [(r.num_tokens - 1, r.blocks) for r in reqs]

        def need(j: int) -> int:
            tot = 0
            for c, have in pairs:
                x = (c + j + b) // b - have
                if x > 0:
                    tot += x
            return tot

        lo, hi = 0, rem - 1          # need(lo) <= free (lo=0 needs nothing), need(hi) > free
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo + 1

    # ---- completing work -------------------------------------------------------------------------
    def _retire(self) -> None:
        sched = self.sched
        running = sched.running
        done = [r for r in running if r.generated >= r.output]   # usually one of many: two comprehensions
        for r in done:
            r.status = Status.FINISHED
            sched.free_blocks += r.blocks
            r.blocks = 0
        self.finished += done
        sched.running = [r for r in running if r.generated < r.output]

    def _finish_decode(self, plan: Plan, k: int, start: int, e0: int, end_last: int, s0: int,
                       durs: np.ndarray | None) -> None:
        """k decode steps of ``plan`` ran from ``start``; the first ended at ``e0``, the last at
        ``end_last``. ``durs``: the steps' ns (None: one sequence, times from the clock's table)."""
        st, sched, b = self.stats, self.sched, self.block_size
        n = len(plan.reqs)
        one = st.itl_ones.append
        done = False
        free = sched.free_blocks
        for r in plan.reqs:
            last = r.last_ns
            one(e0 - last)
            r.itl_sum_ns += end_last - last
            r.last_ns = end_last
            c = r.num_computed = r.num_computed + k
            r.num_tokens += k
            g = r.generated = r.generated + k
            want = -(-c // b)
            if want > r.blocks:
                free -= want - r.blocks
                r.blocks = want
            if g >= r.output:
                done = True
        sched.free_blocks = free
        self.outstanding -= n * k
        if k > 1:
            if durs is None:   # steps 1..k-1 of one sequence: KV lengths s0 + 1 .. s0 + k - 1
                diff = self.clock.itl_diff
                diff[s0 + 1] += 1
                diff[s0 + k] -= 1
            else:
                st.itl_arrays.append(durs[1:k])
                st.itl_w.append(n)
        st.iterations += k
        st.busy_ns += end_last - start
        pairs = k * s0 + n * k * (k - 1) // 2
        st.flops += self._flop_tok * n * k + self._flop_pair * pairs
        st.bytes += self._w * k + self._kvb * pairs
        if self.record:
            st.log.append((start, end_last, k, 0, n, 0, sched.used_blocks))
        if done:
            self._retire()

    def _batch(self, plan: Plan) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], int, float, int]:
        """(prefill (q, kv) chunks, decode KV lengths, logits, attention pairs, KV tokens read) of
        a step (the ``Batch`` of ``llm_ops`` as its parts)."""
        prefill, decode = [], []
        logits = 0
        pairs = 0.0
        kv_read = 0
        for r, n in zip(plan.reqs, plan.tokens):
            kv = r.num_computed + n
            kv_read += kv
            if kv == r.num_tokens:
                logits += 1
            if n == 1 and r.generated > 0:
                decode.append(kv)
                pairs += kv
            else:
                prefill.append((n, kv))
                pairs += n * (kv - n) + n * (n + 1) / 2
        return tuple(prefill), tuple(decode), logits, pairs, kv_read

    def _step_ns(self, plan: Plan, bp: tuple) -> int:  # type: ignore[type-arg]
        if plan.decode_only:   # same arithmetic as a stretch, so stepping and fast-forward agree
            n = len(plan.reqs)
            s0 = sum(r.num_tokens for r in plan.reqs)
            if n == 1:
                return self.clock.one_ns(s0)
            return int(self.clock.decode_ns([r.num_tokens for r in plan.reqs], 1)[0])
        return self.clock.batch_ns(bp[0], bp[1], plan.num_tokens, bp[2]) + self.overhead_ns

    def _finish_step(self, plan: Plan, start: int, end: int, bp: tuple) -> None:  # type: ignore[type-arg]
        st, sched = self.stats, self.sched
        prefill, decode, _, pairs, kv_read = bp
        ones = st.itl_ones
        done = False
        outstanding = self.outstanding
        for r, n in zip(plan.reqs, plan.tokens):
            before = r.num_computed
            c = r.num_computed = before + n
            p = r.prompt
            outstanding -= (c if c < p else p) - (before if before < p else p)
            if c == r.num_tokens:   # the request samples a token at the step's end
                if r.first_ns < 0:
                    r.first_ns = end
                else:
                    ones.append(end - r.last_ns)
                    r.itl_sum_ns += end - r.last_ns
                r.last_ns = end
                r.generated += 1
                r.num_tokens += 1
                outstanding -= 1
                if r.generated >= r.output:
                    done = True
        self.outstanding = outstanding
        st.iterations += 1
        st.busy_ns += end - start
        st.flops += self._flop_tok * plan.num_tokens + self._flop_pair * pairs
        st.bytes += self._w + self._kvb * kv_read
        if self.record:
            st.log.append((start, end, 1, sum(q for q, _ in prefill), len(decode), len(prefill), sched.used_blocks))
        if done:
            self._retire()
