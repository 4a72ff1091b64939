"""Isolated latency of one batch of identical requests on an otherwise idle replica."""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.gpu import GPUSpec
from hwmodels.memory import memory_breakdown
from hwmodels.step import StepTimeModel
from workloads.errors import CapacityError, ConfigError
from workloads.llm_ops import Batch
from workloads.model_spec import ModelSpec


@dataclass(frozen=True)
class RequestLatency:
    prefill_s: float            # one iteration prefilling the whole batch (no token budget)
    decode_per_token_s: float   # mean decode step over the output tokens after the first
    e2e_s: float                # prefill + (output - 1) decode steps


def request_latency(model: ModelSpec, gpu: GPUSpec, *, tp: int = 1, pp: int = 1, prompt: int = 512,
                    batch: int = 1, output_tokens: int = 128, gpu_memory_utilization: float = 0.9) -> RequestLatency:
    """Raises ``CapacityError`` when the model or the batch's KV cache does not fit."""
    for name, v in (("prompt", prompt), ("batch", batch), ("output_tokens", output_tokens)):
        if v < 1:
            raise ConfigError(f"must be >= 1, got {v}", field=name, value=v)
    mem = memory_breakdown(model, gpu, tp=tp, pp=pp, gpu_memory_utilization=gpu_memory_utilization,
                           max_num_batched_tokens=max(prompt * batch, 1), max_num_seqs=batch)
    need = batch * (prompt + output_tokens)
    if need > mem.kv_tokens:
        raise CapacityError(f"batch of {batch} x {prompt + output_tokens} tokens needs {need} KV tokens; "
                            f"{mem.kv_tokens} fit", breakdown={"weights": mem.weights_bytes,
                                                               "activation": mem.activation_bytes,
                                                               "kv_cache": mem.kv_cache_bytes})
    step = StepTimeModel(model, gpu, tp, pp)
    prefill = step.iteration_time(Batch(prefill=((prompt, prompt),) * batch))
    k = output_tokens - 1
    if k > 0:
        # step j decodes the token at position prompt + j + 1 (the new token included in the KV)
        decode = float(step.decode_times([prompt + 1] * batch, k).mean())
    else:
        decode = 0.0
    return RequestLatency(prefill, decode, prefill + k * decode)
