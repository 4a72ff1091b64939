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


def capacity(model: ModelSpec, machine: Machine, tp: int, mix: Mix, *, serve: ServeConfig = DEFAULT_SERVE,
             engine: EngineProfile | None = None, tbt_slowdown: float | None = None) -> Capacity:
    """Capacities of ``machine`` at ``tp`` (module docstring). ``CapacityError``: the model or the longest
    request does not fit an instance; ``ConfigError``: tp does not divide the machine."""
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

    ctx = max(1, int(round(mix.mean_prompt + mix.mean_decode / 2)))
    per_seq = mix.mean_prompt + mix.mean_decode + 1

    def dstep(b: int) -> float:
        return float(step.decode_times([ctx] * b, 1)[0]) + ovh

    hi = max(1, min(serve.max_num_seqs, int(mem.kv_tokens // per_seq)))
    if tbt_slowdown is not None:
        limit = tbt_slowdown * dstep(1)
        if dstep(hi) > limit:          # largest b with dstep(b) <= limit (monotone in b); b = 1 always passes
            lo = 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if dstep(mid) <= limit else (lo, mid)
            hi = lo
    b = hi
    decode = b / dstep(b)
    colo = (1.0 / (mix.mean_prompt / prefill + mix.mean_decode / decode) if mix.mean_decode
            else prefill / mix.mean_prompt)
    return Capacity(machine, tp, inst, prefill * inst, decode * inst, b, colo * inst, mem.kv_tokens)


def capacities(model: ModelSpec, machines: Sequence[Machine], tps: Sequence[int], mix: Mix, *,
               serve: ServeConfig = DEFAULT_SERVE, engine: EngineProfile | None = None,
               tbt_slowdown: float | None = None) -> list[Capacity]:
    """:func:`capacity` of every machine x tp that divides it and fits the model (others logged and skipped)."""
    out = []
    for m in machines:
        for tp in tps:
            if m.gpus % tp or model.num_heads % tp:
                continue
            try:
                out.append(capacity(model, m, tp, mix, serve=serve, engine=engine, tbt_slowdown=tbt_slowdown))
            except CapacityError as exc:
                log.info("skipping %s tp %d: %s", m.id, tp, exc)
    return out
