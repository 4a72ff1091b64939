"""Deployment of a serving simulation: parallelism, replicas, router, scheduler knobs (frozen)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from workloads.errors import ConfigError


class RouterKind(enum.Enum):
    ROUND_ROBIN = "round-robin"
    LEAST_OUTSTANDING_TOKENS = "least-outstanding-tokens"


class SchedulerKind(enum.Enum):
    VLLM_V1 = "vllm-v1"


@dataclass(frozen=True)
class ServeConfig:
    """How a model is served. Defaults are vLLM 0.19's (V1 engine) where vLLM has one.

    ``iteration_overhead_s``: CPU time per iteration not hidden behind the GPU (scheduling,
    input preparation, sampling sync). ``watermark``: fraction of KV blocks a waiting request
    must leave free to be admitted (0 in vLLM 0.19). ``reserve_full_isl``: admit a waiting
    request only if its whole prompt fits in the free blocks (vLLM's
    ``scheduler_reserve_full_isl``, on by default). ``fast_forward``: advance decode-only
    stretches in one event (same results; off only to verify that).
    """

    tp: int = 1
    pp: int = 1
    replicas: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enable_chunked_prefill: bool = True
    reserve_full_isl: bool = True
    watermark: float = 0.0
    iteration_overhead_s: float = 0.0003
    router: RouterKind = RouterKind.ROUND_ROBIN
    scheduler: SchedulerKind = SchedulerKind.VLLM_V1
    fast_forward: bool = True
    device_memory_bytes: float | None = None

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "replicas", "max_num_seqs", "max_num_batched_tokens", "block_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"must be a positive integer, got {v!r}", field=name, value=v)
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.gpu_memory_utilization}",
                              field="gpu_memory_utilization", value=self.gpu_memory_utilization)
        if not 0.0 <= self.watermark < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.watermark}", field="watermark", value=self.watermark)
        if self.iteration_overhead_s < 0:
            raise ConfigError(f"must be >= 0, got {self.iteration_overhead_s}", field="iteration_overhead_s",
                              value=self.iteration_overhead_s)
