"""The PyTorch tracer: what it captures, and that it agrees with the op list built from a ModelSpec.

The consistency test (issue 4): the op graph traced from the built-in Llama module and the one
``workloads.llm_ops`` builds from the same spec agree on FLOPs and bytes within 1 %. What is compared,
and why, is in each test's docstring; the numbers on both sides come from shapes, not from constants.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from workloads.catalog import load_model  # noqa: E402
from workloads.llm_ops import Batch, head_ops, layer_ops  # noqa: E402
from workloads.ops import DecodeAttention, DType, Gemm, OpKind, PrefillAttention  # noqa: E402
from workloads.pytorch.llama import build_llama  # noqa: E402
from workloads.pytorch.tracer import AtenClass, summarize, trace  # noqa: E402

# kinds both sides define the same way; the eager module also runs ops llm_ops (a vLLM-like op list)
# does not model: a second residual add per layer (vLLM fuses it into the next norm, llm_ops counts
# one add), the KV-cache write and the RoPE table (kind "elementwise"), MoE dispatch/combine glue.
SHARED = ("gemm", "attn_prefill", "attn_decode", "norm", "activation", "rope", "embedding")


def _spec_ops(spec, batch: Batch):  # type: ignore[no-untyped-def]
    ops = [o for _ in range(spec.num_layers) for o in layer_ops(spec, batch, dtype=DType.FP32)]
    return ops + head_ops(spec, batch, dtype=DType.FP32)


def _compare(spec, traced, batch: Batch) -> None:  # type: ignore[no-untyped-def]
    a, b = summarize(traced), summarize(_spec_ops(spec, batch))
    # FLOPs of the whole graph: elementwise FLOPs are counted differently on each side, but are < 0.1 %
    assert sum(f for f, _ in a.values()) == pytest.approx(sum(f for f, _ in b.values()), rel=0.01)
    # GEMMs and attention: identical definitions -> equal to float rounding
    for k in ("gemm", "attn_prefill", "attn_decode"):
        assert a.get(k, (0.0, 0.0)) == pytest.approx(b.get(k, (0.0, 0.0)), rel=1e-9), k
    # bytes over the kinds both model, within 1 % (norm weights and RoPE cos/sin tables are the rest)
    shared_a = sum(a[k][1] for k in SHARED if k in a)
    shared_b = sum(b[k][1] for k in SHARED if k in b)
    assert shared_a == pytest.approx(shared_b, rel=0.01)
    # the residual adds: two per layer in the module, one in llm_ops, each reading two and writing one tensor
    assert a["add"][1] == pytest.approx(2 * b["add"][1], rel=1e-9)
    # and the whole graph, with the extra add counted once as llm_ops does
    total_a = shared_a + a["add"][1] / 2
    total_b = shared_b + b["add"][1]
    assert total_a == pytest.approx(total_b, rel=0.01)


def _small(name: str, **kw: int):  # type: ignore[no-untyped-def]
    return replace(load_model(name), vocab_size=4096, **kw)


def _trace_step(model, vocab: int, b: int, p: int, phase: str, seed: int):  # type: ignore[no-untyped-def]
    """Trace a prefill of ``b`` prompts of ``p`` tokens, or (phase 'decode') the decode step after it, and
    the llm_ops Batch describing the same step."""
    tokens = torch.randint(0, vocab, (b, p), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        cache = model.new_cache(b, p + 1)
        g, _ = trace(model, tokens, cache)
        if phase == "decode":
            g, _ = trace(model, tokens[:, :1], cache)
            return g, Batch(decode=(p + 1,) * b)
    return g, Batch(prefill=((p, p),) * b)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_dense_llama_trace_matches_llm_ops(phase: str) -> None:
    """Llama-3.2-1B's layer shapes (2 layers, a 4,096-token vocabulary), batch 2, prompt 48, fp32."""
    spec = _small("llama-3.2-1b", num_layers=2)
    model = build_llama(spec, dtype=torch.float32)
    g, batch = _trace_step(model, spec.vocab_size, 2, 48, phase, seed=0)
    _compare(spec, g.fused(), batch)
    attn = [o.op for o in g.ops if o.aclass is AtenClass.ATTENTION]
    assert len(attn) == spec.num_layers
    expected = DecodeAttention if phase == "decode" else PrefillAttention
    assert all(isinstance(a, expected) for a in attn)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_moe_trace_matches_llm_ops(phase: str) -> None:
    """A Qwen3-MoE-shaped model made small (8 experts, top-2, hidden 256): llm_ops assumes balanced
    routing (ceil(t * k / E) rows per expert). 64 sequences route t * k = 128 rows (prefill: 64 x 4 x 2
    = 512), a multiple of 8, and with random routing every expert gets rows (P(an expert is idle)
    = (6/8)^64 < 1e-7), so the GEMM FLOPs and bytes are the balanced ones exactly."""
    base = load_model("qwen3-30b-a3b")
    spec = replace(base, num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=2, head_dim=64,
                   moe_intermediate_size=128, num_experts=8, experts_per_token=2, vocab_size=1000)
    model = build_llama(spec, dtype=torch.float32, seed=3)
    g, batch = _trace_step(model, spec.vocab_size, 64, 4, phase, seed=1)
    fused = g.fused()
    a, ref = summarize(fused), summarize(_spec_ops(spec, batch))
    assert a["gemm"] == pytest.approx(ref["gemm"], rel=1e-9)
    assert sum(f for f, _ in a.values()) == pytest.approx(sum(f for f, _ in ref.values()), rel=0.01)
    attn = "attn_decode" if phase == "decode" else "attn_prefill"
    assert a[attn] == pytest.approx(ref[attn], rel=1e-9)


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.norm = torch.nn.LayerNorm(128)
        self.fc2 = torch.nn.Linear(128, 32, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def test_custom_module_ops_flops_and_dependencies() -> None:
    """Linear(64->128) + LayerNorm + ReLU + Linear(128->32) on 8 rows: FLOPs 2*8*64*128 + 2*8*128*32
    = 196,608 in the two GEMMs; each op depends on the one before it."""
    m = _Tiny()
    g, out = trace(m, torch.randn(8, 64))
    assert out.shape == (8, 32)
    gemms = [o for o in g.ops if o.aclass is AtenClass.GEMM]
    assert [o.aten for o in gemms] == ["aten::addmm", "aten::mm"]
    assert sum(o.flops for o in gemms) == 2 * 8 * 64 * 128 + 2 * 8 * 128 * 32
    assert gemms[0].op == Gemm("fc1", 8, 128, 64, DType.FP32)
    norm = [o for o in g.ops if o.kind is OpKind.NORM]
    assert norm and norm[0].aten == "aten::native_layer_norm" and norm[0].scope == "norm"
    relu = next(o for o in g.ops if o.aten == "aten::relu")
    assert relu.kind is OpKind.ACTIVATION and norm[0].index in relu.deps
    assert gemms[1].deps and relu.index in gemms[1].deps
    # views cost nothing; every costed op moves bytes
    assert all(o.bytes == 0 for o in g.ops if o.aclass is AtenClass.VIEW)
    assert all(o.bytes > 0 for o in g.costed())
    assert all(o.stream == 0 and not o.backward for o in g.ops)


def test_backward_is_captured() -> None:
    """Backward of the tiny module: the weight gradients are GEMMs too (dW1 = dY^T X: 2*128*8*64
    FLOPs, as the forward's), and the backward ops depend on forward ones (saved activations)."""
    m = _Tiny()
    g, _ = trace(m, torch.randn(8, 64, requires_grad=True), backward=True)
    fwd = [o for o in g.ops if not o.backward]
    bwd = [o for o in g.ops if o.backward]
    assert fwd and bwd
    fwd_flops = sum(o.flops for o in fwd if o.aclass is AtenClass.GEMM)
    bwd_flops = sum(o.flops for o in bwd if o.aclass is AtenClass.GEMM)
    # dX and dW for fc2, dX and dW for fc1: twice the forward GEMM FLOPs
    assert bwd_flops == pytest.approx(2 * fwd_flops)
    first_fwd = {o.index for o in fwd}
    assert any(set(o.deps) & first_fwd for o in bwd)


def test_sdpa_math_free_flop_count() -> None:
    """Causal SDPA with q = k = v of [1, 4, 16, 32]: 4 * heads * dim * (16 * 17 / 2) FLOPs."""
    q = torch.randn(1, 4, 16, 32)
    g, _ = trace(lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True), q)
    attn = [o for o in g.ops if o.aclass is AtenClass.ATTENTION]
    assert len(attn) == 1 and attn[0].flops == 4 * 4 * 32 * (16 * 17 / 2)
    assert attn[0].kind is OpKind.ATTN_PREFILL
