"""Replica schedulers: which requests run in the next iteration, and how many tokens each.

``VLLMV1Scheduler`` follows vLLM V1's ``Scheduler.schedule()`` (FCFS policy):

1. running requests first, in order: each gets ``min(tokens still to compute, token budget)``
   tokens (a decode 1, a prefill its next chunk); if its KV blocks cannot be allocated, the
   *last* running request is preempted (blocks freed, progress dropped: recomputed later) and the
   allocation retried; if the request itself was the last one, it is preempted and the loop stops;
2. only if nothing was preempted in this step, waiting requests in FCFS order while the token
   budget lasts and fewer than ``max_num_seqs`` run: a request is admitted only if its blocks
   for the whole prompt fit (``reserve_full_isl``) and its chunk's blocks can be allocated
   (leaving ``watermark`` blocks free); the first one that cannot be admitted stops admission.

After the iteration, a request whose computed tokens reach its token count samples one token.
"""

from __future__ import annotations

import enum
from collections import deque

from sim.config import SchedulerKind, ServeConfig
from sim.registry import Registry


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class SimRequest:
    """Mutable state of one request inside a replica. Times in integer nanoseconds."""

    __slots__ = ("id", "arrival_ns", "prompt", "output", "num_tokens", "num_computed", "generated",
                 "blocks", "status", "first_ns", "last_ns", "preemptions", "replica", "itl_sum_ns",
                 "admitted_ns")

    def __init__(self, rid: int, arrival_ns: int, prompt: int, output: int) -> None:
        self.id = rid
        self.arrival_ns = arrival_ns
        self.prompt = prompt
        self.output = output
        self.num_tokens = prompt          # prompt + sampled tokens
        self.num_computed = 0             # tokens whose KV is in the cache
        self.generated = 0
        self.blocks = 0
        self.status = Status.WAITING
        self.first_ns = -1
        self.last_ns = -1
        self.preemptions = 0
        self.replica = -1
        self.itl_sum_ns = 0
        self.admitted_ns = -1


class Plan:
    """What one iteration runs. ``blocked``: the waiting queue's head was tried and refused (or the
    seq/token limit stopped admission), so it cannot join until a request finishes."""

    __slots__ = ("reqs", "tokens", "preempted", "admitted", "blocked", "decode_only", "num_tokens")

    def __init__(self) -> None:
        self.reqs: list[SimRequest] = []
        self.tokens: list[int] = []
        self.preempted = 0
        self.admitted = 0   # taken from the waiting queue (the last ``admitted`` of ``reqs``)
        self.blocked = False
        self.decode_only = True
        self.num_tokens = 0


SCHEDULERS: Registry[type] = Registry("scheduler")
_RUNNING = Status.RUNNING


@SCHEDULERS.register(SchedulerKind.VLLM_V1)
class VLLMV1Scheduler:
    def __init__(self, cfg: ServeConfig, num_blocks: int) -> None:
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.num_blocks = num_blocks
        self.free_blocks = num_blocks
        self.watermark_blocks = int(cfg.watermark * num_blocks)
        self.max_seqs = cfg.max_num_seqs
        self.budget = cfg.max_num_batched_tokens
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.num_preemptions = 0
        self._recompute_tokens = 0

    # ---- blocks ---------------------------------------------------------------------------
    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _allocate(self, req: SimRequest, n: int, has_scheduled: bool) -> bool:
        bs = self.block_size
        need = -(-(req.num_computed + n) // bs) - req.blocks
        new = req.status is not Status.RUNNING
        wm = self.watermark_blocks if (has_scheduled and new) else 0
        if new and self.cfg.reserve_full_isl:
            if -(-req.num_tokens // bs) - req.blocks + wm > self.free_blocks:
                return False
        if need + wm > self.free_blocks:
            return False
        if need > 0:
            req.blocks += need
            self.free_blocks -= need
        return True

    def _preempt(self, req: SimRequest) -> None:
        self._recompute_tokens += min(req.num_computed, req.prompt)
        self.free_blocks += req.blocks
        req.blocks = 0
        req.num_computed = 0
        req.status = Status.PREEMPTED
        req.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    # ---- one schedule() call ---------------------------------------------------------------
    def schedule(self) -> Plan:
        plan = Plan()
        budget = self.budget
        running = self.running
        reqs, toks = plan.reqs, plan.tokens
        bs = self.block_size
        decode_only = True
        free = self.free_blocks   # kept local in the common case, stored back around the general one
        add_req, add_tok = reqs.append, toks.append
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            c = req.num_computed
            n = req.num_tokens - c
            if n > budget:
                n = budget
            need = -(-(c + n) // bs) - req.blocks
            if req.status is _RUNNING and need <= free:   # _allocate(req, n, True), inline
                if need > 0:
                    req.blocks += need
                    free -= need
            else:
                self.free_blocks = free
                fits = False
                while not self._allocate(req, n, True):
                    victim = running.pop()
                    self._preempt(victim)
                    plan.preempted += 1
                    if victim is req:
                        break
                else:
                    fits = True
                free = self.free_blocks
                if not fits:
                    break
            add_req(req)
            add_tok(n)
            if decode_only and (n != 1 or req.generated == 0):
                decode_only = False
            budget -= n
            i += 1
        self.free_blocks = free
        plan.decode_only = decode_only
        if not plan.preempted:
            waiting = self.waiting
            while waiting:
                if budget <= 0 or len(running) >= self.max_seqs:
                    plan.blocked = True
                    break
                req = waiting[0]
                n = req.num_tokens - req.num_computed
                if n > budget:
                    if not self.cfg.enable_chunked_prefill:
                        plan.blocked = True
                        break
                    n = budget
                if not self._allocate(req, n, bool(running)):
                    plan.blocked = True
                    break
                waiting.popleft()
                req.status = Status.RUNNING
                running.append(req)
                reqs.append(req)
                toks.append(n)
                plan.decode_only = False
                plan.admitted += 1
                budget -= n
        plan.num_tokens = self.budget - budget
        return plan

    def take_recompute_tokens(self) -> int:
        """Prompt tokens dropped by preemptions since the last call (to be computed again)."""
        t, self._recompute_tokens = self._recompute_tokens, 0
        return t

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks
