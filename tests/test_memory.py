"""KV-cache sizing (hwmodels.memory) against vLLM's profile on the shared RTX 4090 run."""

from __future__ import annotations

import pytest

from hwmodels.gpu import load_gpu
from hwmodels.memory import memory_breakdown
from workloads.catalog import load_model
from workloads.errors import CapacityError


def test_rtx4090_kv_blocks_match_vllm_profile() -> None:
    """meta.json of ../shared/data/measured/vllm_rtx4090_llama31_8b: vLLM 0.19 reports
    num_gpu_blocks = 2588 for Llama-3.1-8B bf16, TP1, device 25,250,627,584 B, util 0.9,
    max_num_batched_tokens 2048, max_num_seqs 256, block 16. Derivation (bytes):
    0.9 x 25,250,627,584 = 22,725,564,826 requested; weights 8,030,261,248 x 2 = 16,060,522,496;
    forward peak 2048 x (2 x 4096 + 3 x 14336) x 2 = 209,715,200; sampler 5 x 256 x 128,256 x 4
    = 656,670,720; non-torch 0.35 GiB = 375,809,638; KV = 5,422,846,772 / 2 MiB per block
    = 2585 blocks (measured 2588: -0.12 %)."""
    mem = memory_breakdown(load_model("llama-3.1-8b"), load_gpu("rtx-4090"), device_bytes=25_250_627_584,
                           gpu_memory_utilization=0.9, max_num_batched_tokens=2048, max_num_seqs=256)
    assert mem.block_bytes == 2 * 1024**2
    assert mem.weights_bytes == 16_060_522_496
    assert mem.num_blocks == pytest.approx(2588, rel=0.005)
    assert mem.num_blocks == 2585


def test_tp_splits_weights_and_kv_heads() -> None:
    m, g = load_model("llama-3.1-70b"), load_gpu("h100-sxm-80gb")
    m4 = memory_breakdown(m, g, tp=4)
    m8 = memory_breakdown(m, g, tp=8)
    assert m8.weights_bytes == pytest.approx(m4.weights_bytes / 2)
    assert m8.block_bytes == m4.block_bytes // 2
    assert m8.num_blocks > 2 * m4.num_blocks


def test_70b_on_one_4090_is_capacity_error_with_breakdown() -> None:
    with pytest.raises(CapacityError) as exc:
        memory_breakdown(load_model("llama-2-70b"), load_gpu("rtx-4090"))
    assert exc.value.breakdown["weights"] > 100e9
    assert "weights" in str(exc.value) and "GiB" in str(exc.value)
