"""Per-machine serving capacities from the hardware model: what the serving ILP (:mod:`planners.serve`) sizes with.

For a machine type x TP (``gpus / tp`` instances per machine), at a trace's length mix:

* ``prefill_tokens_s``: prompt tokens per second a machine prefills back to back. Each prompt is prefilled
  alone in chunks of the engine's token budget (``max_num_batched_tokens``; chunk j attends to the prompt
  so far), every iteration plus the per-iteration overhead; capacity = sum(prompt) / sum(time) over the
  mix, i.e. prompts are weighted by their length as the demand is. Batching several short prompts into
  one budget would be a little faster: this is the conservative side.
* ``decode_tokens_s``: tokens per second at the largest decode batch B (<= ``max_num_seqs``) whose step
  time at the mean context (mean prompt + half the mean output) stays within the TBT slowdown limit
  (the SLO's p50 TBT slowdown x the step of one sequence alone) and whose KV cache (B x (mean prompt +
  mean output) tokens) fits the instance's KV memory (:func:`hwmodels.memory.memory_breakdown`):
  ``B / step(B)`` per instance. Without an SLO only memory and ``max_num_seqs`` bound B.
* ``colocated_rps``: requests per second of a machine doing both (time shared):
  ``1 / (mean prompt / prefill_tokens_s + mean decode tokens / decode_tokens_s)``.

Options whose model does not fit (weights, or the longest request's KV cache) are left out with a
logged reason, not an error; none left is the caller's ``Infeasible``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwmodels.engine import EngineProfile, EngineStepTimeModel
from hwmodels.machines import Machine
from hwmodels.memory import memory_breakdown
from hwmodels.step import StepTimeModel
from sim.config import ServeConfig
from workloads.errors import CapacityError, ConfigError
from workloads.model_spec import ModelSpec
from workloads.requests import Request

log = logging.getLogger(__name__)
DEFAULT_SERVE = ServeConfig()     # vLLM 0.19's engine limits (sim.config)


@dataclass(frozen=True)
class Mix:
    """The length mix of a trace: what one request asks for on average (tokens)."""

    prompts: tuple[int, ...]       # distinct prompt lengths
    weights: tuple[float, ...]     # their request counts
    mean_prompt: float
    mean_decode: float             # mean tokens generated after the first (output - 1)
    max_tokens: int                # longest prompt + output

    @classmethod
    def of(cls, requests: Sequence[Request], bins: int = 48) -> Mix:
        """The mix of ``requests``; prompt lengths in at most ``bins`` groups of equal request count (sorted),
        each represented by its mean length (rounded), so a capacity costs ``bins`` prefills, not one per
        distinct length. The sum of prompt tokens is kept to rounding."""
        if not requests:
            raise ConfigError("the workload has no requests", field="trace")
        p = np.array([r.prompt_tokens for r in requests])
        o = np.array([r.output_tokens for r in requests])
        groups = np.array_split(np.sort(p), min(bins, p.size))
        vals = [max(1, int(round(g.mean()))) for g in groups]
        return cls(tuple(vals), tuple(float(g.size) for g in groups), float(p.mean()),
                   float(np.maximum(o - 1, 0).mean()), int((p + o).max()))


@dataclass(frozen=True)
class Capacity:
    """One machine type at one TP degree: per-machine capacities (SI: tokens/s, requests/s)."""

    machine: Machine
    tp: int
    instances: int              # per machine
    prefill_tokens_s: float
    decode_tokens_s: float
    decode_batch: int           # B per instance
    colocated_rps: float
    kv_tokens: int              # per instance
    prefill_times: tuple[float, ...] = ()   # seconds one instance takes for each of the mix's prompt groups alone

    @property
    def key(self) -> str:
        return f"{self.machine.id}/tp{self.tp}"

    def objective(self, kind: str) -> float:
        """$/hour or watts of one machine."""
        if kind == "power":
            return self.machine.power_w
        if self.machine.cost_per_hour is None:
            raise ConfigError(f"machine {self.machine.id} has no price; use --objective power or a priced machine",
                              field="machines", value=self.machine.id)
        return self.machine.cost_per_hour


@functools.lru_cache(maxsize=32)
def step_model(model: ModelSpec, machine: Machine, tp: int, serve: ServeConfig,
               engine: EngineProfile | None) -> StepTimeModel:
    """The step model a pool instance runs (as :mod:`sim.split` builds it). Memoised (the arguments are frozen):
    its GEMM tables and attention memos, built while the capacities are computed, then serve every simulation of
    a colocated candidate and every later plan over the same options (a pure memo: the same times)."""
    max_len = serve.max_model_len or model.max_position_embeddings
    if engine is None:
        return StepTimeModel(model, machine.effective_gpu, tp, max_kv_len=max_len)
    return EngineStepTimeModel(model, machine.effective_gpu, tp, engine=engine, max_kv_len=max_len)


def iteration_overhead(serve: ServeConfig, engine: EngineProfile | None) -> float:
    return serve.iteration_overhead_s if engine is None else engine.iteration_s


def prefill_seconds(step: StepTimeModel, prompt: int, budget: int, overhead_s: float) -> float:
    """One prompt alone, chunked by the token budget: the sum of its iterations (overhead included)."""
    t, done = 0.0, 0
    while done < prompt:
        c = min(budget, prompt - done)
        done += c
        t += step.batch_time(((c, done),), (), c, 1) + overhead_s
    return t


def decode_context(mix: Mix) -> int:
    """The context a decode step is timed at: mean prompt + half the mean output (tokens)."""
    return max(1, int(round(mix.mean_prompt + mix.mean_decode / 2)))


def single_decode_step_s(step: StepTimeModel, mix: Mix, overhead_s: float) -> float:
    """One sequence's decode step alone at :func:`decode_context` (overhead included): what a TBT slowdown is
    relative to."""
    return float(step.decode_times([decode_context(mix)], 1)[0]) + overhead_s


def capacity(model: ModelSpec, machine: Machine, tp: int, mix: Mix, *, serve: ServeConfig = DEFAULT_SERVE,
             engine: EngineProfile | None = None, tbt_slowdown: float | None = None,
             tbt_limit_s: float | None = None) -> Capacity:
    """Capacities of ``machine`` at ``tp`` (module docstring). ``tbt_slowdown``: limit on the decode step as a
    multiple of this instance's own single-sequence step; ``tbt_limit_s``: a limit in seconds (an absolute TBT
    SLO, or a slowdown against a reference machine, :func:`single_decode_step_s` of it); the stricter holds. An
    option whose single sequence already exceeds the limit gets decode and colocated capacity 0 (batch 0).
    ``CapacityError``: the model or the longest request does not fit an instance; ``ConfigError``: tp does not
    divide the machine."""
    if tp < 1 or machine.gpus % tp:
        raise ConfigError(f"tp {tp} must divide the {machine.gpus} GPUs of {machine.id}", field="tp", value=tp)
    mem = memory_breakdown(model, machine.effective_gpu, tp=tp, gpu_memory_utilization=serve.gpu_memory_utilization,
                           max_num_batched_tokens=serve.max_num_batched_tokens, max_num_seqs=serve.max_num_seqs,
                           block_size=serve.block_size)
    if mix.max_tokens > mem.kv_tokens:
        raise CapacityError(f"{machine.id} at tp {tp}: a request of {mix.max_tokens} tokens does not fit the "
                            f"{mem.kv_tokens} KV tokens of an instance", breakdown={"kv_cache": mem.kv_cache_bytes})
    step = step_model(model, machine, tp, serve, engine)
    ovh = iteration_overhead(serve, engine)
    inst = machine.gpus // tp
    w = np.array(mix.weights)
    tp_s = np.array([prefill_seconds(step, p, serve.max_num_batched_tokens, ovh) for p in mix.prompts])
    prefill = float((w * np.array(mix.prompts)).sum() / (w * tp_s).sum())

    ctx = decode_context(mix)
    per_seq = mix.mean_prompt + mix.mean_decode + 1

    def dstep(b: int) -> float:
        return float(step.decode_times([ctx] * b, 1)[0]) + ovh

    hi = max(1, min(serve.max_num_seqs, int(mem.kv_tokens // per_seq)))
    limit = None if tbt_slowdown is None else tbt_slowdown * dstep(1)
    if tbt_limit_s is not None:
        limit = tbt_limit_s if limit is None else min(limit, tbt_limit_s)
    if limit is not None and dstep(1) > limit:
        hi = 0                          # one sequence alone already misses the TBT limit
    elif limit is not None and dstep(hi) > limit:   # largest b with dstep(b) <= limit (monotone in b)
        lo = 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if dstep(mid) <= limit else (lo, mid)
        hi = lo
    b = hi
    decode = b / dstep(b) if b else 0.0
    colo = (0.0 if not decode else 1.0 / (mix.mean_prompt / prefill + mix.mean_decode / decode) if mix.mean_decode
            else prefill / mix.mean_prompt)
    return Capacity(machine, tp, inst, prefill * inst, decode * inst, b, colo * inst, mem.kv_tokens,
                    tuple(float(t) for t in tp_s))


def capacities(model: ModelSpec, machines: Sequence[Machine], tps: Sequence[int], mix: Mix, *,
               serve: ServeConfig = DEFAULT_SERVE, engine: EngineProfile | None = None,
               tbt_slowdown: float | None = None, tbt_limit_s: float | None = None) -> list[Capacity]:
    """:func:`capacity` of every machine x tp that divides it and fits the model (others logged and skipped)."""
    out = []
    for m in machines:
        for tp in tps:
            if m.gpus % tp or model.num_heads % tp:
                continue
            try:
                out.append(capacity(model, m, tp, mix, serve=serve, engine=engine, tbt_slowdown=tbt_slowdown,
                                    tbt_limit_s=tbt_limit_s))
            except CapacityError as exc:
                log.info("skipping %s tp %d: %s", m.id, tp, exc)
    return out


# ---- burst allowance: a G/G/c bound on the prefill pool's TTFT ------------------------------------------
def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival finds all ``servers`` busy in M/M/c at offered load ``load`` = lambda / mu
    (Erlang C; 1.0 when ``load >= servers``). Through the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)),
    stable for thousands of servers."""
    if load >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1.0 - b))


def ttft_miss_fraction(cap: Capacity, mix: Mix, rate: float, machines: int, arrival_cv: float,
                       slowdown: float, *, allowed_wait: np.ndarray | None = None) -> float:
    """Fraction of requests whose TTFT exceeds ``slowdown`` x their prefill alone, in a pool of ``machines``
    machines of ``cap`` at ``rate`` req/s: the G/G/c approximation of Allen and Cunneen (Allen, "Probability,
    Statistics, and Queueing Theory", 2nd ed., 1990, Sec. 6.4; the standard heavy-traffic form also in Whitt,
    "Approximations for the GI/G/m queue", 1993). Servers: the pool's instances (``machines x instances``);
    service: a prompt's prefill alone on an instance (:attr:`Capacity.prefill_times`, per length group), mean
    E[S] and squared coefficient of variation c_s^2; arrivals: gaps with coefficient of variation c_a. A request
    waits with probability P_w = ErlangC(c, lambda E[S]); given that it waits, the wait is exponential with mean
    (c_a^2 + c_s^2) / 2 / (c / E[S] - lambda) (exact for M/M/c; Allen-Cunneen scales the M/M/c mean wait by
    (c_a^2 + c_s^2) / 2). A prompt of service s misses when its wait exceeds (slowdown - 1) s, so the miss
    fraction is sum_g w_g P_w exp(-(slowdown - 1) s_g / mean wait), over the mix's groups g (weights w_g).
    With chunked prefill a short prompt joins a busy instance's next iteration rather than waiting for the
    whole queue, so this is the pessimistic side for short prompts; the JSQ router sends a request to an idle
    instance when one exists, as the c-server model assumes. ``allowed_wait`` (seconds per group) replaces
    ``(slowdown - 1) s``: a slowdown against a reference machine (``k s_ref - s``) or an absolute TTFT limit
    (``L - s``); a group whose allowed wait is <= 0 misses even without waiting."""
    if not cap.prefill_times:
        raise ValueError(f"{cap.key} carries no prefill times (built outside capacity())")
    s = np.array(cap.prefill_times)
    w = np.array(mix.weights) / sum(mix.weights)
    es = float((w * s).sum())
    scv = float((w * (s - es) ** 2).sum()) / es**2
    c = machines * cap.instances
    load = rate * es
    if load >= c:
        return 1.0
    pw = erlang_c(c, load)
    mean_wait = (arrival_cv**2 + scv) / 2.0 / (c / es - rate)
    wait = (slowdown - 1.0) * s if allowed_wait is None else np.asarray(allowed_wait, dtype=float)
    miss = np.where(wait > 0, pw * np.exp(-np.maximum(wait, 0.0) / mean_wait), 1.0)
    return float((w * miss).sum())


def prefill_pool_min(cap: Capacity, mix: Mix, rate: float, arrival_cv: float,
                     ttft_slowdown: tuple[float, float, float] | None, limit: int, *,
                     ref_times: Sequence[float] | None = None, ttft_absolute: dict[int, float] | None = None) -> int:
    """Fewest machines of ``cap`` whose prefill pool keeps the TTFT slowdown percentiles (p50, p90, p99) within
    ``ttft_slowdown`` by :func:`ttft_miss_fraction` (at most 50 %, 10 %, 1 % of requests over each); ``limit + 1``
    when even ``limit`` machines do not. ``ref_times``: each prompt group alone on the SLO's reference machine
    (default: on ``cap`` itself); ``ttft_absolute``: percentile -> seconds, held the same way."""
    s = np.array(cap.prefill_times)
    ref = s if ref_times is None else np.asarray(ref_times, dtype=float)
    checks = [(k * ref - s, a) for k, a in zip(ttft_slowdown or (), (0.50, 0.10, 0.01))]
    checks += [(sec - s, 1.0 - p / 100.0) for p, sec in (ttft_absolute or {}).items()]

    def ok(n: int) -> bool:
        return all(ttft_miss_fraction(cap, mix, rate, n, arrival_cv, 1.0, allowed_wait=wait) <= a
                   for wait, a in checks)

    lo = max(1, math.ceil(rate * float(np.dot(mix.weights, cap.prefill_times)) / sum(mix.weights)
                          / cap.instances))     # stability: offered load < servers
    if ok(lo):
        return lo
    hi = lo
    while not ok(hi):
        if hi > limit:
            return limit + 1
        lo, hi = hi, hi * 2
    while hi - lo > 1:                           # ok(hi), not ok(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi
