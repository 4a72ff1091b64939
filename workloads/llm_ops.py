"""The ops of one forward iteration of a decoder-only model over a mixed batch.

Names follow vLLM/Vidur's profiling names so that measured files map one-to-one:
``input_layernorm, attn_pre_proj, attn_rope, attn_prefill, attn_decode, attn_post_proj,
post_attention_layernorm, mlp_up_proj, mlp_act, mlp_down_proj, add, emb, lm_head``.
Shapes are per GPU under tensor parallelism ``tp`` (Megatron column/row split: QKV and up
projections split their output, O and down projections split their input, two all-reduces per layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workloads.errors import ConfigError
from workloads.model_spec import ModelSpec
from workloads.ops import AllReduce, DecodeAttention, DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention


@dataclass(frozen=True)
class Batch:
    """What one iteration processes.

    ``prefill``: ``(q_len, kv_len)`` per sequence being prefilled in this iteration (a chunk of
    ``q_len`` new tokens; ``kv_len`` = prior cached tokens + ``q_len``). ``decode``: the KV length of
    each decoding sequence, its one new token included. ``logits``: sequences that sample a token
    this iteration (decodes plus prefills that finish); default = all decodes + all prefills.
    """

    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()
    logits: int | None = None

    @property
    def num_tokens(self) -> int:
        return sum(q for q, _ in self.prefill) + len(self.decode)

    @property
    def num_logits(self) -> int:
        return self.logits if self.logits is not None else len(self.prefill) + len(self.decode)


def check_tp(model: ModelSpec, tp: int) -> None:
    if tp < 1:
        raise ConfigError(f"tensor parallel degree must be >= 1, got {tp}", field="tp", value=tp)
    if model.num_heads % tp:
        raise ConfigError(f"{model.name}: {model.num_heads} attention heads are not divisible by tp={tp}",
                          field="tp", value=tp)


def layer_ops(model: ModelSpec, batch: Batch, tp: int = 1, dtype: DType = DType.BF16) -> list[Op]:
    """Ops of one transformer layer for ``batch`` on one of ``tp`` GPUs."""
    check_tp(model, tp)
    t = batch.num_tokens
    h = model.hidden_size
    b = dtype.bytes
    q_heads = model.num_heads // tp
    kv_heads = max(1, model.num_kv_heads // tp)
    qkv_out = (q_heads + 2 * kv_heads) * model.head_dim
    ops: list[Op] = []
    if t == 0:
        return ops
    act = t * h * b  # one activation tensor [t, h]
    ops.append(MemoryOp("input_layernorm", OpKind.NORM, t, act, act, flops=5.0 * t * h))
    ops.append(Gemm("attn_pre_proj", t, qkv_out, h, dtype))
    rope_bytes = t * (q_heads + kv_heads) * model.head_dim * b
    ops.append(MemoryOp("attn_rope", OpKind.ROPE, t, rope_bytes, rope_bytes,
                        flops=3.0 * t * (q_heads + kv_heads) * model.head_dim))
    ops.extend(attention_ops(batch, q_heads, kv_heads, model.head_dim, dtype))
    ops.append(Gemm("attn_post_proj", t, h, q_heads * model.head_dim, dtype))
    if tp > 1:
        ops.append(AllReduce("attn_all_reduce", act, tp))
    ops.append(MemoryOp("post_attention_layernorm", OpKind.NORM, t, act, act, flops=5.0 * t * h))
    ops.extend(_ffn_ops(model, t, tp, dtype))
    if tp > 1:
        ops.append(AllReduce("mlp_all_reduce", act, tp))
    ops.append(MemoryOp("add", OpKind.ADD, t, 2 * act, act, flops=float(t * h)))
    return ops


def attention_ops(batch: Batch, q_heads: int, kv_heads: int, head_dim: int, dtype: DType) -> list[Op]:
    """The attention kernels of one layer, as vLLM V1's FlashAttention backend launches them: a
    decode-only batch is one decode call (query heads of a KV head packed, KV split over CTAs); a batch
    with any prefill is ONE varlen call in which each decode is a one-token query (neither packed nor
    split). Measured on vLLM 0.19 / RTX 4090 (``lss_rtx4090/tp1_attention.csv``: mixed rows cost what
    one varlen call costs, up to twice a separate decode call for long decodes)."""
    if batch.prefill:
        seqs = tuple(batch.prefill) + tuple((1, kv) for kv in batch.decode)
        return [PrefillAttention("attn_prefill", q_heads, kv_heads, head_dim, seqs, dtype)]
    if batch.decode:
        return [DecodeAttention("attn_decode", q_heads, kv_heads, head_dim, tuple(batch.decode), dtype)]
    return []


def _ffn_ops(model: ModelSpec, t: int, tp: int, dtype: DType) -> list[Op]:
    b = dtype.bytes
    h = model.hidden_size
    mats = 2 if model.gated_mlp else 1
    if not model.is_moe:
        width = model.intermediate_size // tp
        return [Gemm("mlp_up_proj", t, mats * width, h, dtype),
                MemoryOp("mlp_act", OpKind.ACTIVATION, t, mats * t * width * b, t * width * b,
                         flops=(5.0 if model.gated_mlp else 4.0) * t * width),
                Gemm("mlp_down_proj", t, h, width, dtype)]
    # MoE: router, then each expert's tokens (balanced routing: t * top_k / E rows per expert).
    width = model.moe_intermediate_size // tp
    rows = t * model.experts_per_token
    active = min(model.num_experts, rows)
    per_expert = math.ceil(rows / model.num_experts)
    ops: list[Op] = [Gemm("moe_router", t, model.num_experts, h, dtype)]
    for e in range(active):
        ops.append(Gemm(f"moe_expert_up.{e}", per_expert, mats * width, h, dtype))
    ops.append(MemoryOp("mlp_act", OpKind.ACTIVATION, rows, mats * rows * width * b, rows * width * b,
                        flops=5.0 * rows * width))
    for e in range(active):
        ops.append(Gemm(f"moe_expert_down.{e}", per_expert, h, width, dtype))
    return ops


def head_ops(model: ModelSpec, batch: Batch, tp: int = 1, dtype: DType = DType.BF16) -> list[Op]:
    """Ops outside the layers: token embedding, final norm and LM head for the sampled rows."""
    t = batch.num_tokens
    s = batch.num_logits
    h = model.hidden_size
    b = dtype.bytes
    ops: list[Op] = []
    if t:
        ops.append(MemoryOp("emb", OpKind.EMBEDDING, t, t * h * b + t * 8, t * h * b))
    if s:
        ops.append(MemoryOp("final_norm", OpKind.NORM, s, s * h * b, s * h * b, flops=5.0 * s * h))
        ops.append(Gemm("lm_head", s, math.ceil(model.vocab_size / tp), h, dtype))
    return ops
