"""Transformer model specification: the architecture fields every other layer needs.

All counts are plain integers; derived figures (parameters, FLOPs per token, KV bytes per token)
are methods so that they can never disagree with the fields. Units: parameters (count), FLOP,
bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Norm(enum.Enum):
    RMS = "rmsnorm"
    LAYER = "layernorm"


class Position(enum.Enum):
    ROPE = "rope"
    ALIBI = "alibi"
    LEARNED = "learned"


class Activation(enum.Enum):
    """The MLP non-linearity (elementwise cost differs; gated MLPs apply it to the gate)."""

    SILU = "silu"
    GELU = "gelu"
    RELU = "relu"


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer.

    ``intermediate_size`` is the FFN width of a dense layer; for MoE models ``moe_intermediate_size``
    is the width of one expert and ``num_experts``/``experts_per_token`` give E and top-k.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    gated_mlp: bool = True
    norm: Norm = Norm.RMS
    position: Position = Position.ROPE
    tied_embeddings: bool = False
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    max_position_embeddings: int = 4096
    activation: Activation = Activation.SILU
    position_offset: int = 0  # extra rows of a learned position table (OPT reserves 2)
    architecture: str = ""  # the HuggingFace class it was read from, e.g. 'LlamaForCausalLM'
    hf_id: str | None = None
    aliases: tuple[str, ...] = field(default=())
    source: str = ""

    # ---- shape helpers -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def ffn_size(self) -> int:
        """FFN width one token goes through: dense width, or one expert's width."""
        return self.moe_intermediate_size if self.is_moe else self.intermediate_size

    # ---- parameters ----------------------------------------------------------------------
    def _attn_params(self) -> int:
        h = self.hidden_size
        p = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        if self.qkv_bias:
            p += self.q_size + 2 * self.kv_size
        if self.out_bias:
            p += h
        if self.qk_norm:
            p += 2 * self.head_dim
        return p

    def _one_ffn_params(self, width: int) -> int:
        h = self.hidden_size
        mats = 3 if self.gated_mlp else 2
        p = mats * h * width
        if self.mlp_bias:
            p += (mats - 1) * width + h
        return p

    def _norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm is Norm.LAYER else 1)

    def _ffn_params(self, active_only: bool) -> int:
        if not self.is_moe:
            return self._one_ffn_params(self.intermediate_size)
        n = self.experts_per_token if active_only else self.num_experts
        return n * self._one_ffn_params(self.moe_intermediate_size) + self.hidden_size * self.num_experts

    def layer_params(self, active_only: bool = False) -> int:
        return self._attn_params() + self._ffn_params(active_only) + 2 * self._norm_params()

    def embedding_params(self) -> int:
        p = self.vocab_size * self.hidden_size
        if self.position is Position.LEARNED:
            p += (self.max_position_embeddings + self.position_offset) * self.hidden_size
        if self.position is Position.ALIBI and self.norm is Norm.LAYER:
            p += 2 * self.hidden_size  # BLOOM's word_embeddings_layernorm
        return p

    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    def param_count(self, active_only: bool = False) -> int:
        """Total parameters (all experts), or those one token uses (``active_only``)."""
        return (self.embedding_params() + self.num_layers * self.layer_params(active_only)
                + self._norm_params() + self.lm_head_params())

    # ---- compute and memory per token ------------------------------------------------------
    def matmul_params_per_token(self) -> int:
        """Weights a token multiplies through (active experts, LM head; not the embedding lookup)."""
        h = self.hidden_size
        per_layer = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        mats = 3 if self.gated_mlp else 2
        if self.is_moe:
            per_layer += self.experts_per_token * mats * h * self.moe_intermediate_size + h * self.num_experts
        else:
            per_layer += mats * h * self.intermediate_size
        return self.num_layers * per_layer + self.vocab_size * h

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs of one token attending to ``context`` tokens (itself included):
        2 FLOP per multiply-accumulate over the matmul weights, plus QK^T and PV
        (2 x 2 x q_size x context per layer)."""
        return 2.0 * self.matmul_params_per_token() + 4.0 * self.num_layers * self.q_size * context

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of K and V cache one token occupies across all layers."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.param_count() * dtype_bytes
