"""Serving-engine profiles: how one inference engine build turns kernel times into iteration times.

The kernel model (:mod:`hwmodels.kernels`) prices the GPU's kernels under a software stack; an engine adds
what the host does around them. An engine built without CUDA graphs issues every kernel from Python: one
iteration costs the host ``host_op_s`` per launched op (``ops`` = the ``llm_ops`` of all layers and the
head, the same count in prefill and decode), and the GPU runs behind it. While the GPU is busier than the
host the step is GPU-bound; otherwise it is host-bound. The step is the larger of the two::

    step = max(gpu_kernels_s, ops x host_op_s) + iteration_s

``iteration_s`` is the per-iteration work that overlaps nothing (scheduler, input preparation, sampling
and its synchronisation, the RPC to tensor-parallel workers); the serving simulation adds it as
``ServeConfig.iteration_overhead_s``. ``max`` is the limit of :func:`hwmodels.host.co_execute` when
each layer repeats the same ops (the bound side sets the pace); the short stretches where the faster side
waits are neglected.

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
from hwmodels.step import StepTimeModel
from workloads.errors import ConfigError
from workloads.llm_ops import Batch, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DType
from workloads.specfile import get_number, get_str, read_toml, reject_unknown, unknown_name

_KEYS = ("description", "stack", "host_op_us", "iteration_us", "source")


@dataclass(frozen=True)
class EngineProfile:
    """One engine build (SI inside)."""

    id: str
    stack: str               # kernel stack profile (hwmodels/stacks/<stack>.toml)
    host_op_s: float         # host time per launched op (0: CUDA graphs / host never binds)
    iteration_s: float       # per-iteration time not overlapped with the GPU
    description: str = ""
    source: str = ""


def engines_file() -> Path:
    return Path(str(resources.files("hwmodels") / "specs" / "machines" / "engines.toml"))


def parse_engines(data: dict[str, Any], *, file: str) -> dict[str, EngineProfile]:
    out: dict[str, EngineProfile] = {}
    for eid, t in data.items():
        if not isinstance(t, dict):
            raise ConfigError("must be a table", file=file, field=f"[{eid}]")
        reject_unknown(t, _KEYS, file=file, section=eid)
        out[eid] = EngineProfile(
            id=eid, stack=get_str(t, "stack", file=file, section=eid),
            host_op_s=float(get_number(t, "host_op_us", file=file, section=eid, allow_zero=True)) * 1e-6,
            iteration_s=float(get_number(t, "iteration_us", file=file, section=eid, allow_zero=True)) * 1e-6,
            description=get_str(t, "description", file=file, section=eid, default="") or "",
            source=get_str(t, "source", file=file, section=eid, default="") or "")
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

    def batch_time(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...], tokens: int,
                   logits: int) -> float:
        t = super().batch_time(prefill, decode, tokens, logits)
        return t if t == 0.0 else max(t, self.host_floor_s)

    def decode_times(self, kv_lens: Sequence[int], k: int) -> np.ndarray:
        t = super().decode_times(kv_lens, k)
        return np.maximum(t, self.host_floor_s) if self.host_floor_s > 0 else t

    def decode_times_mapped(self, kv_lens: Sequence[int], k: int, post: Callable[[np.ndarray], np.ndarray],
                            tables: dict[int, dict]) -> np.ndarray:
        if self.host_floor_s <= 0:
            return super().decode_times_mapped(kv_lens, k, post, tables)
        return post(self.decode_times(kv_lens, k))

    def isolated(self, prompt: int, batch: int, output_tokens: int) -> tuple[float, float]:
        """(prefill s, mean decode step s) of ``batch`` identical requests alone on the instance:
        one iteration prefilling them all, then ``output_tokens - 1`` decode steps (as
        :func:`sim.isolated.request_latency`), each with the engine's ``iteration_s``."""
        it = self.engine.iteration_s
        pre = self.batch_time(((prompt, prompt),) * batch, (), prompt * batch, batch) + it
        k = output_tokens - 1
        dec = float(self.decode_times([prompt + 1] * batch, k).mean()) + it if k > 0 else 0.0
        return pre, dec
