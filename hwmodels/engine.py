"""Serving-engine profiles: how one inference engine build turns kernel times into iteration times.

The kernel model (:mod:`hwmodels.kernels`) prices the GPU's kernels under a software stack; an engine adds
what the host does around them. An engine built without CUDA graphs issues every kernel from Python: one
iteration costs the host ``host_op_s`` per launched op (``ops`` = the ``llm_ops`` of all layers and the
head, the same count in prefill and decode), and the GPU runs behind it. While the GPU is busier than the
host the step is GPU-bound; otherwise it is host-bound. The step is the larger of the two::

    step = max(gpu_kernels_s, ops x host_op_s) + prefill_host_s_per_token_sq x P^2 + iteration_s

``iteration_s`` is the per-iteration work that overlaps nothing (scheduler, input preparation, sampling
and its synchronisation, the RPC to tensor-parallel workers); the serving simulation adds it as
``ServeConfig.iteration_overhead_s``. ``P`` is the iteration's prefill tokens (all its prompts' new
tokens together): an engine that builds its prompt attention's mask or bias on the host, over the whole
packed batch, pays that work before the forward can start, on every tensor-parallel worker alike (so it
does not shrink with TP); 0 in every profile but one fitted with it. ``max_num_batched_tokens`` caps the
tokens of one iteration when :meth:`EngineStepTimeModel.isolated` prefills a batch (whole prompts, no
chunking, as vLLM before chunked prefill); the serving simulation takes its own from ``ServeConfig``.
``max`` is the limit of :func:`hwmodels.host.co_execute` when each layer repeats the same ops (the bound
side sets the pace); the short stretches where the faster side waits are neglected.

Power (optional ``power_limit``, a fraction of the GPU's TDP): an iteration that prefills runs long enough
(tens of ms and more) for the GPU's power controller to act, so its kernels run at the sustained clock of
:mod:`hwmodels.power` (the highest clock whose board power stays under ``power_limit x TDP``): the share of
the iteration bound by the SM clock stretches as 1/f, the rest does not. The share is found by pricing the
iteration twice, at the spec's clock and at half of it (:func:`hwmodels.power.clocked_gpu`): with
``T(r) = t_other + t_compute / r``, ``t_compute = T(1/2) - T(1)``. Decode steps keep the spec's clock
(memory-bound: they draw well under the limit; :meth:`EngineStepTimeModel.decode_power_w` says how much).
Off (no key) in every profile but the one fitted with it: isolated-kernel data (the Vidur files, our kernel
kits) are short bursts the calibrations were fitted on at whatever clock the GPU held.

Profiles live in ``hwmodels/specs/machines/engines.toml`` (a table per engine id), each with what it
was fitted on. ``vllm`` is the engine the serving simulation assumes by default (vLLM 0.19: CUDA graphs
hide the host in decode, 0.3 ms per iteration).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import GPUKernelModel, Stack
from hwmodels.power import Phase, PowerCalibration, Sustained, clocked_gpu, gpu_power, power_at, sustained_clock
from hwmodels.step import StepTimeModel
from workloads.errors import ConfigError
from workloads.llm_ops import Batch, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DType
from workloads.specfile import get_number, get_str, read_toml, reject_unknown, unknown_name

_KEYS = ("description", "stack", "host_op_us", "iteration_us", "power_limit", "prefill_host_ns_per_token_sq",
         "max_num_batched_tokens", "source")


@dataclass(frozen=True)
class EngineProfile:
    """One engine build (SI inside)."""

    id: str
    stack: str               # kernel stack profile (hwmodels/stacks/<stack>.toml)
    host_op_s: float         # host time per launched op (0: CUDA graphs / host never binds)
    iteration_s: float       # per-iteration time not overlapped with the GPU
    description: str = ""
    source: str = ""
    power_limit: float | None = None   # fraction of TDP the prefill iterations are held under (None: off)
    prefill_host_s_per_token_sq: float = 0.0   # host time of an iteration per (its prefill tokens)^2
    max_num_batched_tokens: int | None = None  # tokens of one isolated prefill iteration (None: the whole batch)


def engines_file() -> Path:
    return Path(str(resources.files("hwmodels") / "specs" / "machines" / "engines.toml"))


def parse_engines(data: dict[str, Any], *, file: str) -> dict[str, EngineProfile]:
    out: dict[str, EngineProfile] = {}
    for eid, t in data.items():
        if not isinstance(t, dict):
            raise ConfigError("must be a table", file=file, field=f"[{eid}]")
        reject_unknown(t, _KEYS, file=file, section=eid)
        limit = get_number(t, "power_limit", file=file, section=eid, default=None)
        if limit is not None and not 0.0 < float(limit) <= 1.5:
            raise ConfigError(f"must be in (0, 1.5] (a fraction of TDP), got {limit}", file=file,
                              field=f"{eid}.power_limit", value=limit)
        out[eid] = EngineProfile(
            id=eid, stack=get_str(t, "stack", file=file, section=eid),
            host_op_s=float(get_number(t, "host_op_us", file=file, section=eid, allow_zero=True)) * 1e-6,
            iteration_s=float(get_number(t, "iteration_us", file=file, section=eid, allow_zero=True)) * 1e-6,
            description=get_str(t, "description", file=file, section=eid, default="") or "",
            source=get_str(t, "source", file=file, section=eid, default="") or "",
            power_limit=None if limit is None else float(limit),
            prefill_host_s_per_token_sq=float(get_number(t, "prefill_host_ns_per_token_sq", file=file, section=eid,
                                                         allow_zero=True, default=0.0)) * 1e-9,
            max_num_batched_tokens=get_number(t, "max_num_batched_tokens", file=file, section=eid, integer=True,
                                              default=None))
    return out


@functools.cache
def _catalog() -> dict[str, EngineProfile]:
    p = engines_file()
    return parse_engines(read_toml(p), file=str(p))


def list_engines() -> list[str]:
    return sorted(_catalog())


def load_engine(name: str) -> EngineProfile:
    cat = _catalog()
    if name not in cat:
        raise unknown_name("engine profile", name, cat, field="engine", file=str(engines_file()))
    return cat[name]


def prefill_iterations(prompt: int, batch: int, cap: int | None) -> tuple[tuple[int, int], ...]:
    """``(count, prompts)`` runs of the iterations that prefill ``batch`` whole prompts of ``prompt`` tokens
    with at most ``cap`` tokens per iteration (None: one iteration), never fewer than one prompt each (no
    chunking, as vLLM before chunked prefill): ``count`` iterations of ``prompts`` each, the full ones first,
    then at most one with the rest. The one split :meth:`EngineStepTimeModel.isolated`, its peak power
    (``sim.splitwise_perf``) and ``benchmarks/fit_splitwise.py`` use."""
    if prompt < 1 or batch < 1:
        raise ValueError(f"prefill_iterations: prompt {prompt} and batch {batch} must be >= 1")
    per = batch if cap is None else min(batch, max(1, cap // prompt))
    full, rest = divmod(batch, per)
    return ((full, per), (1, rest)) if rest else ((full, per),)


def launched_ops(model: ModelSpec, tp: int, pp: int = 1) -> int:
    """Kernel-launching ops of one iteration on one GPU (its stage's layers and the head)."""
    probe = Batch(decode=(1,))
    per_layer = len(layer_ops(model, probe, tp))
    layers = -(-model.num_layers // pp)
    return layers * per_layer + len(head_ops(model, probe, tp))


class EngineStepTimeModel(StepTimeModel):
    """:class:`StepTimeModel` under an engine profile: kernels under the profile's stack, and the
    host-bound floor ``ops x host_op_s`` (module docstring). ``iteration_s`` is not included: the
    caller adds it (``ServeConfig.iteration_overhead_s``, or :meth:`isolated`)."""

    def __init__(self, model: ModelSpec, gpu: GPUSpec, tp: int = 1, pp: int = 1, *,
                 engine: EngineProfile, dtype: DType = DType.BF16, max_kv_len: int | None = None,
                 stack: Stack | None = None) -> None:
        super().__init__(model, gpu, tp, pp, dtype=dtype, max_kv_len=max_kv_len)
        self.engine = engine
        # replaced before any time is memoised: every table is built from this kernel model
        # (``stack`` overrides the profile's, for fitting it)
        self.kernels = GPUKernelModel(gpu, stack=stack if stack is not None else engine.stack)
        self.host_floor_s = launched_ops(model, tp, pp) * engine.host_op_s
        self.power_cal: PowerCalibration | None = None if engine.power_limit is None else gpu_power(gpu)
        self._slow: StepTimeModel | None = None
        self._sustained: dict[tuple, Sustained] = {}

    # ---- power (module docstring) ------------------------------------------------------------
    def _slow_model(self) -> StepTimeModel:
        """The same step model with the SM clock at half the spec's (kernels under the same stack)."""
        if self._slow is None:
            g = clocked_gpu(self.gpu, 0.5)
            slow = StepTimeModel(self.model, g, self.tp, self.pp, dtype=self.dtype, max_kv_len=self.max_kv_len)
            slow.kernels = GPUKernelModel(g, stack=self.kernels.stack)
            self._slow = slow
        return self._slow

    def _work(self, batch: Batch) -> tuple[float, float]:
        """(FLOPs, bytes) of the iteration on one GPU: its stage's layers and the head."""
        lay = layer_ops(self.model, batch, self.tp, self.dtype)
        head = head_ops(self.model, batch, self.tp, self.dtype)
        n = self.layers_per_stage
        return (n * sum(op.flops for op in lay) + sum(op.flops for op in head),
                n * sum(op.bytes for op in lay) + sum(op.bytes for op in head))

    def phase(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...], tokens: int,
              logits: int) -> Phase:
        """The iteration's GPU work as a :class:`hwmodels.power.Phase` (at the spec's clock)."""
        t = super().batch_time(prefill, decode, tokens, logits)
        t_half = StepTimeModel.batch_time(self._slow_model(), prefill, decode, tokens, logits)
        tc = min(max(0.0, t_half - t), t)
        flops, nbytes = self._work(Batch(prefill=prefill, decode=decode, logits=logits))
        return Phase(flops, nbytes, tc, t - tc)

    def sustained(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...], tokens: int,
                  logits: int) -> Sustained:
        """Clock, time and power of the iteration's kernels under the engine's power limit."""
        if self.power_cal is None or self.engine.power_limit is None:
            raise ValueError(f"engine {self.engine.id!r} has no power_limit")
        key = (prefill, decode, tokens, logits)
        r = self._sustained.get(key)
        if r is None:
            r = sustained_clock(self.gpu, self.phase(prefill, decode, tokens, logits),
                                self.engine.power_limit * self.gpu.tdp_w, cal=self.power_cal)
            self._sustained[key] = r
        return r

    def decode_power_w(self, kv_lens: Sequence[int]) -> float:
        """Mean board power (W) over one decode iteration of ``kv_lens`` (its kernels at the spec's clock,
        the host floor and ``iteration_s`` idle around them)."""
        cal = self.power_cal if self.power_cal is not None else gpu_power(self.gpu)
        t = float(super().decode_times(kv_lens, 1)[0])
        step = max(t, self.host_floor_s) + self.engine.iteration_s
        flops, nbytes = self._work(Batch(decode=tuple(kv_lens)))
        return power_at(cal, Phase(flops, nbytes, 0.0, step), 1.0)

    def batch_time(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...], tokens: int,
                   logits: int) -> float:
        if self.power_cal is not None and prefill and tokens:
            t = self.sustained(prefill, decode, tokens, logits).time_s
        else:
            t = super().batch_time(prefill, decode, tokens, logits)
        if t == 0.0:
            return t
        q = self.engine.prefill_host_s_per_token_sq
        return max(t, self.host_floor_s) + (q * sum(n for n, _ in prefill) ** 2 if q and prefill else 0.0)

    def decode_times(self, kv_lens: Sequence[int], k: int) -> np.ndarray:
        t = super().decode_times(kv_lens, k)
        return np.maximum(t, self.host_floor_s) if self.host_floor_s > 0 else t

    def decode_times_mapped(self, kv_lens: Sequence[int], k: int, post: Callable[[np.ndarray], np.ndarray],
                            tables: dict[int, Any]) -> np.ndarray:
        if self.host_floor_s <= 0:
            return super().decode_times_mapped(kv_lens, k, post, tables)
        return post(self.decode_times(kv_lens, k))

    def isolated(self, prompt: int, batch: int, output_tokens: int) -> tuple[float, float]:
        """(prefill s, mean decode step s) of ``batch`` identical requests alone on the instance:
        iterations prefilling them all (one, or as many whole prompts per iteration as the engine's
        ``max_num_batched_tokens`` admits: the prefill ends with the last), then ``output_tokens - 1``
        decode steps (as :func:`sim.isolated.request_latency`), each with the engine's ``iteration_s``."""
        it = self.engine.iteration_s
        pre = 0.0
        for count, n in prefill_iterations(prompt, batch, self.engine.max_num_batched_tokens):
            pre += count * (self.batch_time(((prompt, prompt),) * n, (), prompt * n, n) + it)
        k = output_tokens - 1
        dec = float(self.decode_times([prompt + 1] * batch, k).mean()) + it if k > 0 else 0.0
        return pre, dec
