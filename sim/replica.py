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

from typing import Any

import numpy as np
import simpy

from hwmodels.step import StepTimeModel
from sim.config import ServeConfig
from sim.scheduler import SCHEDULERS, Plan, SimRequest, Status
from workloads.llm_ops import Batch


class ReplicaStats:
    __slots__ = ("iterations", "busy_ns", "flops", "bytes", "kv_t", "kv_used", "log", "itl_vals", "itl_w",
                 "preemptions", "events")

    def __init__(self) -> None:
        self.iterations = 0
        self.busy_ns = 0
        self.flops = 0.0
        self.bytes = 0.0
        self.kv_t: list[int] = []
        self.kv_used: list[int] = []
        self.log: list[tuple[Any, ...]] = []
        self.itl_vals: list[Any] = []   # arrays / lists of ITL samples (ns) ...
        self.itl_w: list[int] = []      # ... each sample counted this many times
        self.preemptions = 0
        self.events = 0


class Replica:
    def __init__(self, env: simpy.Environment, index: int, cfg: ServeConfig, step: StepTimeModel,
                 num_blocks: int, record_timeline: bool = False) -> None:
        self.env = env
        self.index = index
        self.cfg = cfg
        self.step = step
        self.sched = SCHEDULERS.get(cfg.scheduler)(cfg, num_blocks)
        self.block_size = cfg.block_size
        self.overhead_ns = int(round(cfg.iteration_overhead_s * 1e9))
        self.ff = cfg.fast_forward
        self.record = record_timeline
        self.stats = ReplicaStats()
        self.outstanding = 0
        self._idle: simpy.Event | None = None
        self._arrival: simpy.Event | None = None
        self._stretch: tuple[np.ndarray, int] | None = None
        self.finished: list[SimRequest] = []
        self._w = step.weight_bytes() / cfg.pp
        self._kvb = step.kv_bytes_per_token()
        self._flop_tok = 2.0 * step.model.matmul_params_per_token()
        self._flop_pair = 4.0 * step.model.num_layers * step.model.q_size
        self.process = env.process(self.run())

    # ---- interface for the router ------------------------------------------------------------
    def add(self, req: SimRequest) -> None:
        req.replica = self.index
        self.sched.waiting.append(req)
        self.outstanding += req.prompt + req.output
        if self._idle is not None and not self._idle.triggered:
            self._idle.succeed()
        elif self._arrival is not None and not self._arrival.triggered:
            self._arrival.succeed()

    def outstanding_tokens(self, now_ns: int) -> int:
        if self._stretch is not None:
            ends, n = self._stretch
            return self.outstanding - n * int(np.searchsorted(ends, now_ns, "right"))
        return self.outstanding

    # ---- the process -------------------------------------------------------------------------
    def run(self):  # type: ignore[no-untyped-def]
        env, sched, st = self.env, self.sched, self.stats
        while True:
            if not sched.has_work():
                self._idle = env.event()
                yield self._idle
                self._idle = None
                continue
            now = env.now
            plan = sched.schedule()
            if not plan.reqs:
                head = sched.waiting[0]
                from workloads.errors import CapacityError
                raise CapacityError(
                    f"request {head.id} ({head.num_tokens} tokens) can never be scheduled on replica "
                    f"{self.index}: {sched.num_blocks} KV blocks of {self.block_size} tokens")
            st.preemptions += plan.preempted
            self.outstanding += sched.take_recompute_tokens()
            st.events += 1
            st.kv_t.append(now)
            st.kv_used.append(sched.used_blocks)
            for r in plan.reqs:
                if r.admitted_ns < 0:
                    r.admitted_ns = now
            n = len(plan.reqs)
            if plan.decode_only and not plan.preempted and n == len(sched.running) \
                    and (plan.blocked or not sched.waiting):
                kmax = self._stretch_len(plan) if self.ff else 1
                s0 = mx = 0
                for r in plan.reqs:
                    s0 += r.num_tokens
                    if r.num_tokens > mx:
                        mx = r.num_tokens
                durs = np.rint(self.step.decode_times(n, s0, mx, kmax) * 1e9).astype(np.int64) + self.overhead_ns
                ends = now + np.cumsum(durs)
                k = kmax
                if kmax == 1:
                    yield env.timeout(int(durs[0]))
                elif sched.waiting:   # head refused: arrivals queue behind it
                    self._stretch = (ends, n)
                    yield env.timeout(int(ends[-1]) - now)
                    self._stretch = None
                else:
                    self._stretch = (ends, n)
                    self._arrival = env.event()
                    yield self._arrival | env.timeout(int(ends[-1]) - now)
                    self._arrival = None
                    ta = env.now
                    if ta < ends[-1]:
                        j = int(np.searchsorted(ends, ta, "left"))
                        k = j + 1
                        if ends[j] > ta:
                            yield env.timeout(int(ends[j]) - ta)
                    self._stretch = None
                self._finish_decode(plan, k, ends, durs, s0, now)
            else:
                dur = self._step_ns(plan)
                yield env.timeout(dur)
                self._finish_step(plan, now, now + dur)

    # ---- stretch length ------------------------------------------------------------------------
    def _stretch_len(self, plan: Plan) -> int:
        reqs = plan.reqs
        rem = min(r.output - r.generated for r in reqs)
        if rem <= 1:
            return 1
        b = self.block_size
        free = self.sched.free_blocks
        # step 0's blocks are already allocated; step j (>= 1) needs ceil((c + j + 1) / b) each,
        # where c = computed tokens before step 0 (= num_tokens - 1).
        pairs = [(r.num_tokens - 1, r.blocks) for r in reqs]

        def need(j: int) -> int:
            tot = 0
            for c, have in pairs:
                x = (c + j + b) // b - have
                if x > 0:
                    tot += x
            return tot

        if need(rem - 1) <= free:
            return rem
        lo, hi = 0, rem - 1          # need(lo) <= free (lo=0 needs nothing), need(hi) > free
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo + 1

    # ---- completing work -------------------------------------------------------------------------
    def _emit(self, r: SimRequest, t: int, vals: list[int]) -> None:
        if r.first_ns < 0:
            r.first_ns = t
        else:
            vals.append(t - r.last_ns)
            r.itl_sum_ns += t - r.last_ns
        r.last_ns = t
        r.generated += 1
        r.num_tokens += 1
        self.outstanding -= 1

    def _retire(self) -> None:
        sched = self.sched
        keep = []
        for r in sched.running:
            if r.generated >= r.output:
                r.status = Status.FINISHED
                sched.free_blocks += r.blocks
                r.blocks = 0
                self.finished.append(r)
            else:
                keep.append(r)
        sched.running = keep

    def _finish_decode(self, plan: Plan, k: int, ends: np.ndarray, durs: np.ndarray, s0: int,
                       start: int) -> None:
        st, sched, b = self.stats, self.sched, self.block_size
        n = len(plan.reqs)
        end_last = int(ends[k - 1])
        e0 = int(ends[0])
        first_vals = []
        done = False
        for r in plan.reqs:
            first_vals.append(e0 - r.last_ns)
            r.itl_sum_ns += end_last - r.last_ns
            r.last_ns = end_last
            r.num_computed += k
            r.num_tokens += k
            r.generated += k
            want = -(-r.num_computed // b)
            if want > r.blocks:
                sched.free_blocks -= want - r.blocks
                r.blocks = want
            if r.generated >= r.output:
                done = True
        self.outstanding -= n * k
        st.itl_vals.append(first_vals)
        st.itl_w.append(1)
        if k > 1:
            st.itl_vals.append(durs[1:k])
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

    def _batch(self, plan: Plan) -> tuple[Batch, float]:
        prefill, decode = [], []
        logits = 0
        pairs = 0.0
        for r, n in zip(plan.reqs, plan.tokens):
            kv = r.num_computed + n
            if kv == r.num_tokens:
                logits += 1
            if n == 1 and r.generated > 0:
                decode.append(kv)
                pairs += kv
            else:
                prefill.append((n, kv))
                pairs += n * (kv - n) + n * (n + 1) / 2
        return Batch(prefill=tuple(prefill), decode=tuple(decode), logits=logits), pairs

    def _step_ns(self, plan: Plan) -> int:
        if plan.decode_only:   # same arithmetic as a stretch, so stepping and fast-forward agree
            s0 = sum(r.num_tokens for r in plan.reqs)
            mx = max(r.num_tokens for r in plan.reqs)
            return int(np.rint(self.step.decode_times(len(plan.reqs), s0, mx, 1) * 1e9)[0]) + self.overhead_ns
        batch, _ = self._batch(plan)
        return int(round(self.step.iteration_time(batch) * 1e9)) + self.overhead_ns

    def _finish_step(self, plan: Plan, start: int, end: int) -> None:
        st, sched = self.stats, self.sched
        batch, pairs = self._batch(plan)
        vals: list[int] = []
        done = False
        for r, n in zip(plan.reqs, plan.tokens):
            before = r.num_computed
            r.num_computed += n
            self.outstanding -= min(r.num_computed, r.prompt) - min(before, r.prompt)
            if r.num_computed == r.num_tokens:
                self._emit(r, end, vals)
                if r.generated >= r.output:
                    done = True
        if vals:
            st.itl_vals.append(vals)
            st.itl_w.append(1)
        st.iterations += 1
        st.busy_ns += end - start
        st.flops += self._flop_tok * plan.num_tokens + self._flop_pair * pairs
        kv_read = sum(kv for _, kv in batch.prefill) + sum(batch.decode)
        st.bytes += self._w + self._kvb * kv_read
        if self.record:
            st.log.append((start, end, 1, sum(q for q, _ in batch.prefill), len(batch.decode),
                           len(batch.prefill), sched.used_blocks))
        if done:
            self._retire()
