"""Operators: the units of work a hardware model costs.

An op carries its shapes only; how long it takes is the business of ``hwmodels``. Every op has a
``name`` (the role it plays in a model: ``attn_pre_proj``, ``mlp_down_proj`` ...) and a ``kind``.
Shapes are per GPU (already divided by tensor parallelism).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DType(enum.Enum):
    """Numeric formats, with their size in bytes."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"

    @property
    def bytes(self) -> int:
        return _DTYPE_BYTES[self]


_DTYPE_BYTES = {DType.FP32: 4, DType.FP16: 2, DType.BF16: 2, DType.FP8: 1}


class OpKind(enum.Enum):
    GEMM = "gemm"
    ATTN_PREFILL = "attn_prefill"
    ATTN_DECODE = "attn_decode"
    NORM = "norm"
    ACTIVATION = "activation"
    ROPE = "rope"
    ADD = "add"
    EMBEDDING = "embedding"
    ELEMENTWISE = "elementwise"  # a chain of plain framework elementwise kernels (unfused eager PyTorch)
    ALL_REDUCE = "all_reduce"


@dataclass(frozen=True)
class Gemm:
    """C[m, n] = A[m, k] @ B[k, n]; m is the token dimension, B the weight."""

    name: str
    m: int
    n: int
    k: int
    dtype: DType = DType.BF16
    kind: OpKind = OpKind.GEMM

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    @property
    def bytes(self) -> float:
        b = self.dtype.bytes
        return float(b * (self.m * self.k + self.k * self.n + self.m * self.n))


@dataclass(frozen=True)
class PrefillAttention:
    """Causal attention of new query tokens over prior + new keys (FlashAttention style).

    ``seqs`` holds one ``(q_len, kv_len)`` per sequence, where ``kv_len`` counts the prior
    (already cached) tokens plus the ``q_len`` new ones. How the software runs it: ``causal``: the
    kernel skips the key tiles above the diagonal (False: every query tile walks all keys, as the
    Vidur-era profile on the A6000 measures); ``paged``: K/V sit in a paged cache read through a
    block table (vLLM), which FlashAttention-2 serves with its split-KV kernel and tiles.
    """

    name: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    seqs: tuple[tuple[int, int], ...]
    dtype: DType = DType.BF16
    kind: OpKind = OpKind.ATTN_PREFILL
    causal: bool = True
    paged: bool = True
    kernel: str | None = None   # the attention kernel that ran ("fa2", "fa3", "cudnn"); None: the stack's choice

    @property
    def flops(self) -> float:
        # QK^T and PV over the causal region: each query i attends to (kv_len - q_len + i + 1) keys.
        total = 0.0
        for q, kv in self.seqs:
            prior = kv - q
            pairs = q * prior + q * (q + 1) / 2.0
            total += 4.0 * self.num_q_heads * self.head_dim * pairs
        return total

    @property
    def bytes(self) -> float:
        b = self.dtype.bytes
        total = 0.0
        for q, kv in self.seqs:
            total += b * self.head_dim * (2 * q * self.num_q_heads + 2 * kv * self.num_kv_heads)
        return total


@dataclass(frozen=True)
class DecodeAttention:
    """One new query token per sequence over its paged KV cache (``kv_lens`` include the new token).

    ``pack_gqa``: the kernel packs the query heads that share a KV head into one tile (KV read once
    per KV head, as FlashAttention-2's decode path and vLLM's paged attention do); False reads the KV
    once per query head. ``split_kv``: the kernel splits long KV across CTAs to fill the GPU
    (flash-decoding); False runs one CTA per (sequence, head). ``paged``: K/V in a paged cache
    (as :class:`PrefillAttention`).
    """

    name: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    kv_lens: tuple[int, ...]
    dtype: DType = DType.BF16
    kind: OpKind = OpKind.ATTN_DECODE
    pack_gqa: bool = True
    split_kv: bool = True
    paged: bool = True
    kernel: str | None = None   # as :class:`PrefillAttention`

    @property
    def flops(self) -> float:
        return 4.0 * self.num_q_heads * self.head_dim * float(sum(self.kv_lens))

    @property
    def bytes(self) -> float:
        b = self.dtype.bytes
        kv = 2.0 * b * self.num_kv_heads * self.head_dim * float(sum(self.kv_lens))
        return kv + 2.0 * b * self.num_q_heads * self.head_dim * len(self.kv_lens)


@dataclass(frozen=True)
class MemoryOp:
    """A memory-bound op over ``tokens`` rows (norm, activation, rope, residual add, embedding gather).

    ``kernels``: how many kernel launches implement it (1 for a fused kernel; an unfused eager
    PyTorch RMSNorm is 7); the bytes are then the sum over those kernels.
    """

    name: str
    kind: OpKind
    tokens: int
    bytes_read: float
    bytes_written: float
    flops: float = 0.0
    kernels: int = 1

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written


@dataclass(frozen=True)
class AllReduce:
    """All-reduce of ``bytes`` (the buffer size on each rank) among ``group`` GPUs."""

    name: str
    bytes: float
    group: int
    kind: OpKind = OpKind.ALL_REDUCE
    flops: float = 0.0


Op = Gemm | PrefillAttention | DecodeAttention | MemoryOp | AllReduce
