"""A Llama-style decoder as a real ``torch.nn.Module``, built from a :class:`ModelSpec` with random weights.

No downloads: the architecture comes from the spec (the built-in catalog or any HF ``config.json``),
the weights from a seeded generator. It runs prefill and decode steps with a preallocated KV cache,
and is what the tracer (``workloads.pytorch.tracer``) captures, what ``xpusim validate torch`` times,
and what ``benchmarks/collect_cuda.py`` measures end to end.

The layout follows vLLM's (so traced GEMMs have the shapes ``workloads.llm_ops`` builds): one fused
QKV projection, one fused gate+up projection, RoPE on q and k, attention through
``torch.nn.functional.scaled_dot_product_attention`` (GQA natively, ``enable_gqa``), and the LM head
applied to the last position of each sequence only (the rows a server samples). MoE layers route each
token to its top-k experts (softmax, renormalised over the chosen k, as Mixtral/Qwen3-MoE) and run each
expert on the rows routed to it.

Supported: RMS/LayerNorm, gated (SwiGLU) or plain MLPs with SiLU/GELU/ReLU, RoPE or learned positions,
biases, per-head q/k norms (Qwen3), dense or MoE. ALiBi models (BLOOM) are refused with a ConfigError.

torch is an optional dependency (``pip install 'xpusim[torch]'``); this module imports it at import time,
so import it only where torch is wanted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from workloads.errors import ConfigError
from workloads.model_spec import Activation, ModelSpec, Norm, Position

_ACT: dict[Activation, Callable[[torch.Tensor], torch.Tensor]] = {
    Activation.SILU: F.silu, Activation.GELU: F.gelu, Activation.RELU: F.relu}
ROPE_THETA = 500_000.0  # Llama-3's base; the value changes no shape or FLOP count


def _norm(spec: ModelSpec, width: int) -> nn.Module:
    if spec.norm is Norm.RMS:
        return nn.RMSNorm(width, eps=1e-5)
    return nn.LayerNorm(width, eps=1e-5)


@dataclass
class KVCache:
    """Per-layer K and V of shape [batch, kv_heads, max_len, head_dim]; ``length`` tokens are filled."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2] if self.k else 0


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        h, d = spec.hidden_size, spec.head_dim
        self.qkv_proj = nn.Linear(h, spec.q_size + 2 * spec.kv_size, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.q_size, h, bias=spec.out_bias)
        self.q_norm = nn.RMSNorm(d, eps=1e-6) if spec.qk_norm else None
        self.k_norm = nn.RMSNorm(d, eps=1e-6) if spec.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        s = self.spec
        b, t, _ = x.shape
        q, k, v = self.qkv_proj(x).split([s.q_size, s.kv_size, s.kv_size], dim=-1)
        q = q.view(b, t, s.num_heads, s.head_dim)
        k = k.view(b, t, s.num_kv_heads, s.head_dim)
        v = v.view(b, t, s.num_kv_heads, s.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cos is not None and sin is not None:
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        start = 0
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start:start + t] = k
            cache.v[layer][:, :, start:start + t] = v
            k = cache.k[layer][:, :, :start + t]
            v = cache.v[layer][:, :, :start + t]
        # a prefill (start == 0) is causal; a decode step (t == 1) attends to everything cached
        causal = t > 1
        if causal and start:
            raise ValueError("chunked prefill over a filled cache is not supported by the built-in module")
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                           enable_gqa=s.num_kv_heads != s.num_heads)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, s.q_size))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec, width: int) -> None:
        super().__init__()
        self.gated = spec.gated_mlp
        self.width = width
        h = spec.hidden_size
        self.up_proj = nn.Linear(h, (2 if self.gated else 1) * width, bias=spec.mlp_bias)
        self.down_proj = nn.Linear(width, h, bias=spec.mlp_bias)
        self.act: Callable[[torch.Tensor], torch.Tensor] = _ACT[spec.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up_proj(x)
        if self.gated:
            gate, up = y.split(self.width, dim=-1)
            y = self.act(gate) * up
        else:
            y = self.act(y)
        return self.down_proj(y)


class MoE(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.top_k = spec.experts_per_token
        self.router = nn.Linear(spec.hidden_size, spec.num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(spec, spec.moe_intermediate_size) for _ in range(spec.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, chosen = torch.topk(torch.softmax(self.router(x), dim=-1, dtype=torch.float32), self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(x[rows]) * weights[rows, slot, None])
        return out.reshape(shape)


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.input_layernorm = _norm(spec, spec.hidden_size)
        self.self_attn = Attention(spec)
        self.post_attention_layernorm = _norm(spec, spec.hidden_size)
        self.mlp: nn.Module = MoE(spec) if spec.is_moe else MLP(spec, spec.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Decoder-only transformer. ``forward(tokens, cache)`` runs ``tokens`` ([batch, t]) at positions
    ``cache.length ..`` (0 without a cache), appends their K/V to the cache and returns the logits of
    the last position of each sequence ([batch, vocab])."""

    inv_freq: torch.Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.position is Position.ALIBI:
            raise ConfigError(f"{spec.name}: the built-in PyTorch module has no ALiBi attention",
                              field="position", value=spec.position.value)
        self.spec = spec
        h = spec.hidden_size
        self.embed_tokens = nn.Embedding(spec.vocab_size, h)
        self.embed_positions = (nn.Embedding(spec.max_position_embeddings + spec.position_offset, h)
                                if spec.position is Position.LEARNED else None)
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.num_layers))
        self.norm = _norm(spec, h)
        self.lm_head = nn.Linear(h, spec.vocab_size, bias=False)
        if spec.tied_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inv = 1.0 / (ROPE_THETA ** (torch.arange(0, spec.head_dim, 2, dtype=torch.float32) / spec.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        s = self.spec
        p = self.lm_head.weight
        shape = (batch, s.num_kv_heads, max_len, s.head_dim)
        return KVCache([torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(s.num_layers)],
                       [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(s.num_layers)])

    def _rope(self, start: int, t: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(start, start + t, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        _, t = tokens.shape
        start = cache.length if cache is not None else 0
        if cache is not None and start + t > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} tokens; {start + t} needed")
        x = self.embed_tokens(tokens)
        cos = sin = None
        if self.embed_positions is not None:
            pos = torch.arange(start, start + t, device=tokens.device) + self.spec.position_offset
            x = x + self.embed_positions(pos)
        else:
            cos, sin = self._rope(start, t, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        if cache is not None:
            cache.length = start + t
        return self.lm_head(self.norm(x[:, -1]))


def build_llama(spec: ModelSpec, *, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu",
                num_layers: int | None = None, seed: int = 0) -> LlamaModel:
    """The module of ``spec`` with random weights (normal, std 0.02, as HF initialises), in eval mode.
    ``num_layers`` builds fewer layers than the spec (for quick runs); the spec's other fields stay."""
    if num_layers is not None:
        spec = replace(spec, num_layers=num_layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaModel(spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    return model.to(dtype=dtype).eval()
