"""Device memory of one serving replica: weights, activation workspace, paged KV cache.

The split follows vLLM's start-up profile (``Worker.determine_available_memory``):

    requested   = gpu_memory_utilization x device memory
    kv_bytes    = requested - weights - activation peak - non-torch memory
    num_blocks  = floor(kv_bytes / (block_size x KV bytes per token per GPU))

The activation peak is what vLLM's profile run measures: one forward pass over
``max_num_batched_tokens`` dummy tokens, then a dummy sampler run over ``max_num_seqs`` rows of
logits. We derive it from the model shape:

* forward: the live tensors at the widest point of a layer (the MLP): the residual and hidden
  streams ``2 x T x h`` plus the gate/up output ``T x mats x I/tp`` and the activation output
  ``T x I/tp`` (dtype bytes); inductor reuses every other buffer.
* sampler: ``S x V/tp`` logits in fp32 and what the sampler keeps alive next to them (softmax
  probabilities, sorted values, int64 sort indices): ``SAMPLER_FP32_COPIES`` fp32 copies.
* ``NON_TORCH_BYTES``: memory that is not in torch's allocator statistics but is taken during
  the profile (cuBLAS workspaces, the CUDA-graph pool). vLLM's own log lines put these at
  0.2-0.5 GiB; we use one constant for every GPU. It is the only number here chosen, not derived;
  with it the shared RTX 4090 run (25,250,627,584 B, util 0.9, Llama-3.1-8B, 2048 tokens,
  256 seqs) gets 2585 blocks against the measured 2588 (tests/test_memory.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hwmodels.gpu import GPUSpec
from workloads.errors import CapacityError, ConfigError
from workloads.model_spec import ModelSpec

GIB = 1024**3
SAMPLER_FP32_COPIES = 5
NON_TORCH_BYTES = int(0.35 * GIB)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU of one replica; ``num_blocks`` KV blocks of ``block_bytes`` each."""

    device_bytes: float
    requested_bytes: float
    weights_bytes: float
    activation_bytes: float
    non_torch_bytes: float
    kv_cache_bytes: float
    block_bytes: int
    block_size: int
    num_blocks: int

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int, pp: int, dtype_bytes: int = 2) -> int:
    """K and V bytes one token occupies on one GPU: its stage's layers, its share of KV heads
    (a KV head is replicated when tp exceeds the KV head count)."""
    kv_heads = max(1, model.num_kv_heads // tp)
    layers = math.ceil(model.num_layers / pp)
    return 2 * layers * kv_heads * model.head_dim * dtype_bytes


def activation_bytes(model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int,
                     dtype_bytes: int = 2) -> float:
    """Peak of vLLM's profile run (forward at the token budget + dummy sampler); see module doc."""
    t = max_num_batched_tokens
    width = model.ffn_size // tp
    if model.is_moe:
        width = width * model.experts_per_token
    mats = 2 if model.gated_mlp else 1
    forward = t * (2 * model.hidden_size + (mats + 1) * width) * dtype_bytes
    rows = min(max_num_seqs, max_num_batched_tokens)
    sampler = SAMPLER_FP32_COPIES * rows * math.ceil(model.vocab_size / tp) * 4
    return float(forward + sampler)


def memory_breakdown(model: ModelSpec, gpu: GPUSpec, *, tp: int = 1, pp: int = 1,
                     gpu_memory_utilization: float = 0.9, max_num_batched_tokens: int = 2048,
                     max_num_seqs: int = 256, block_size: int = 16, dtype_bytes: int = 2,
                     device_bytes: float | None = None) -> MemoryBreakdown:
    """Memory split of one GPU of a replica. Raises ``CapacityError`` (with the breakdown) when
    not even one KV block fits. ``device_bytes`` overrides the spec's memory (e.g. the
    ``torch.cuda`` total a measured run reports)."""
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(f"must be in (0, 1], got {gpu_memory_utilization}",
                          field="gpu_memory_utilization", value=gpu_memory_utilization)
    total = float(device_bytes if device_bytes is not None else gpu.memory_bytes)
    requested = gpu_memory_utilization * total
    weights = model.weight_bytes(dtype_bytes) / (tp * pp)
    act = activation_bytes(model, tp, max_num_batched_tokens, max_num_seqs, dtype_bytes)
    kv = requested - weights - act - NON_TORCH_BYTES
    block = block_size * kv_bytes_per_token_per_gpu(model, tp, pp, dtype_bytes)
    blocks = int(kv // block) if kv > 0 else 0
    out = MemoryBreakdown(total, requested, weights, act, float(NON_TORCH_BYTES), kv, block, block_size, blocks)
    if blocks < 1:
        short = block - kv
        raise CapacityError(
            f"{model.name} does not fit on {gpu.name} with tp={tp} pp={pp} at "
            f"gpu_memory_utilization={gpu_memory_utilization}: {short / GIB:.2f} GiB per GPU short of one "
            f"KV block; use more GPUs per replica (--tp/--pp) or a GPU with more memory. Per GPU",
            breakdown={"usable": requested, "weights": weights, "activation": act,
                       "non_torch": float(NON_TORCH_BYTES), "kv_cache": max(0.0, kv)})
    return out
