"""The built-in Llama-style PyTorch module: its parameters are the spec's, and its KV cache is right."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from workloads.catalog import list_models, load_model  # noqa: E402
from workloads.errors import ConfigError  # noqa: E402
from workloads.model_spec import Position  # noqa: E402
from workloads.pytorch.llama import LlamaModel, build_llama  # noqa: E402


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_is_the_specs(name: str) -> None:
    """One layer built on the meta device has exactly ModelSpec.param_count() parameters (the spec's count
    is itself tested against published figures), tied embeddings and MoE routers included."""
    spec = replace(load_model(name), num_layers=1)
    if spec.position is Position.ALIBI:
        with pytest.raises(ConfigError, match="ALiBi"):
            LlamaModel(spec)
        return
    with torch.device("meta"):
        model = LlamaModel(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.param_count()


@pytest.mark.parametrize("name", ["llama-3.2-1b", "qwen3-30b-a3b", "opt-13b"])
def test_decode_with_cache_equals_prefill(name: str) -> None:
    """Prefilling 7 tokens and decoding the 8th through the KV cache gives the logits of prefilling all 8:
    the cache, the positions (RoPE or learned) and GQA are consistent. fp32, 2 small layers."""
    spec = load_model(name)
    kv_heads = 2 if spec.num_kv_heads < spec.num_heads else 4  # keep GQA where the model has it
    small = replace(spec, num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=kv_heads, head_dim=64,
                    intermediate_size=512,
                    moe_intermediate_size=128 if spec.is_moe else 0, vocab_size=1000)
    model = build_llama(small, dtype=torch.float32, seed=1)
    tokens = torch.randint(0, small.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2, 8)
        model(tokens[:, :7], cache)
        step = model(tokens[:, 7:], cache)
    assert cache.length == 8
    assert torch.allclose(full, step, atol=1e-4, rtol=1e-4)


def test_cache_overflow_is_refused() -> None:
    spec = replace(load_model("llama-3.2-1b"), num_layers=1, vocab_size=100)
    model = build_llama(spec, dtype=torch.float32)
    cache = model.new_cache(1, 4)
    with torch.no_grad(), pytest.raises(ValueError, match="holds 4 tokens"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)
