"""Attention kernels: FlashAttention's own rules (tiles, split heuristic), physics that can fail, and
the accuracy reached on the shared attention files (per file and per regime)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from hwmodels.gpu import load_gpu
from hwmodels.kernels import GPUKernelModel
from hwmodels.kernels.attention import fa2_num_splits, tile_shape
from hwmodels.kernels.attention_calibration import AttnKernel, load_attention_calibration, parse_attention
from workloads.errors import ConfigError
from workloads.ops import DecodeAttention, PrefillAttention

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def r4090() -> GPUKernelModel:
    return GPUKernelModel(load_gpu("rtx-4090"))


@pytest.fixture(scope="module")
def a100() -> GPUKernelModel:
    return GPUKernelModel(load_gpu("a100-sxm-80gb"))


# ---- FlashAttention's rules ---------------------------------------------------------------------

def test_fa2_split_heuristic_hand_checked() -> None:
    """flash_api.cpp num_splits_heuristic, by hand: one sequence, 8 KV heads (GQA-swapped decode),
    4090 (128 SMs, the code passes 2 x 128), 16 385 keys = 129 tiles of 128. Efficiency of s splits
    is 8s/256 while s <= 32; s = 27..32 are ineligible (ceil(129/s) = 5 as for 26), so the best is
    26 splits (0.8125) and the first within 85 % of it is 26 itself. A full grid is never split."""
    assert fa2_num_splits(8, 256, 129) == 26
    assert fa2_num_splits(8, 256, 1) == 1
    assert fa2_num_splits(256 * 8, 256, 129) == 1
    assert fa2_num_splits(205, 256, 129) == 1  # >= 80 % of the SMs


def test_tiles_follow_flash_attention_source() -> None:
    """flash_fwd_launch_template.h: split-KV (paged) kernel 64 x 128 at head_dim 128 on every sm8x;
    contiguous forward kernel 128 x 64 on sm80, 128 x 32 non-causal / 64 x 64 causal on sm86/89;
    FA3 128 x 128 causal, 128 x 176 non-causal (tile_size_fwd_sm90)."""
    a6000, a100, h100 = load_gpu("rtx-a6000"), load_gpu("a100-sxm-80gb"), load_gpu("h100-sxm-80gb")
    assert tile_shape(128, True, True, AttnKernel.FA2, a6000) == (64, 128)
    assert tile_shape(64, True, True, AttnKernel.FA2, a6000) == (64, 256)
    assert tile_shape(128, False, False, AttnKernel.FA2, a6000) == (128, 32)
    assert tile_shape(128, True, False, AttnKernel.FA2, a6000) == (64, 64)
    assert tile_shape(128, True, False, AttnKernel.FA2, a100) == (128, 64)
    assert tile_shape(128, True, True, AttnKernel.FA3, h100) == (128, 128)
    assert tile_shape(128, False, True, AttnKernel.FA3, h100) == (128, 176)


def test_attention_table_checked(tmp_path: Path) -> None:
    good = dict(load_attention_calibration("ada").__dict__)
    table = {k: v for k, v in good.items() if k not in ("family", "source", "kernel")}
    table["kernel"] = "fa2"
    parse_attention({"attention": table}, file="x.toml", family="ada")
    with pytest.raises(ConfigError, match="tile_eff"):
        parse_attention({"attention": {**table, "tile_eff": 1.5}}, file="x.toml", family="ada")
    with pytest.raises(ConfigError, match="nope"):
        parse_attention({"attention": {**table, "nope": 1}}, file="x.toml", family="ada")
    with pytest.raises(ConfigError, match="kernel"):
        parse_attention({"attention": {**table, "kernel": "fa9"}}, file="x.toml", family="ada")


def test_every_family_has_attention_constants_with_source() -> None:
    for fam in ("ampere", "ada", "hopper", "blackwell"):
        a = load_attention_calibration(fam)
        assert a.source and 0 < a.tile_eff <= 1 and 0 < a.dram_eff <= 1, fam
    assert load_attention_calibration("hopper").kernel is AttnKernel.FA3


# ---- physics ------------------------------------------------------------------------------------

def test_causal_prefill_costs_about_half_of_full(a100: GPUKernelModel) -> None:
    """Causal skips the key tiles above the diagonal: (n_blocks + 1) / (2 n_blocks) of the work."""
    causal = a100.time(PrefillAttention("p", 32, 8, 128, ((8192, 8192),), causal=True))
    full = a100.time(PrefillAttention("p", 32, 8, 128, ((8192, 8192),), causal=False))
    assert 0.45 < causal / full < 0.62


def test_prefill_quadratic_and_prior_kv(r4090: GPUKernelModel) -> None:
    t4k = r4090.time(PrefillAttention("p", 32, 8, 128, ((4096, 4096),)))
    t8k = r4090.time(PrefillAttention("p", 32, 8, 128, ((8192, 8192),)))
    assert 3.0 < t8k / t4k < 4.5
    fresh = r4090.time(PrefillAttention("p", 32, 8, 128, ((512, 512),)))
    late = r4090.time(PrefillAttention("p", 32, 8, 128, ((512, 8704),)))
    assert late > 5 * fresh


def test_decode_linear_in_kv_at_large_kv(r4090: GPUKernelModel) -> None:
    """Memory-bound at 64 x 8k+ keys: doubling the KV doubles the time within 10 %, and the time is
    within 25 % of the K/V bytes at the spec bandwidth."""
    def t(kv: int) -> float:
        return r4090.time(DecodeAttention("d", 32, 8, 128, (kv,) * 64))
    assert t(16384) / t(8192) == pytest.approx(2.0, rel=0.1)
    kv_bytes = 64 * 16384 * 8 * 128 * 2 * 2
    assert t(16384) == pytest.approx(kv_bytes / r4090.gpu.memory_bandwidth, rel=0.25)


def test_split_kv_helps_one_long_sequence(r4090: GPUKernelModel) -> None:
    """One sequence of 16k keys: 8 KV-head CTAs cannot fill 128 SMs; splitting the KV must be far faster."""
    split = r4090.time(DecodeAttention("d", 32, 8, 128, (16384,)))
    serial = r4090.time(DecodeAttention("d", 32, 8, 128, (16384,), split_kv=False))
    assert split < serial / 3
    # a full batch is not split: the flag changes nothing
    big = (2048,) * 128
    assert r4090.time(DecodeAttention("d", 32, 8, 128, big)) == \
        pytest.approx(r4090.time(DecodeAttention("d", 32, 8, 128, big, split_kv=False)))


def test_gqa_packing_reads_kv_once(r4090: GPUKernelModel) -> None:
    """128 sequences x 8k keys (4.3 GB of K/V, far beyond the 72 MB L2): packing the 4 query heads of
    a KV head into one tile reads K/V once; without packing the heads re-read it."""
    kv = (8192,) * 128
    packed_t, packed = r4090.cost(DecodeAttention("d", 32, 8, 128, kv))
    loose_t, loose = r4090.cost(DecodeAttention("d", 32, 8, 128, kv, pack_gqa=False, split_kv=False))
    unique = 128 * 8192 * 8 * 128 * 2 * 2
    assert packed["bytes"] == pytest.approx(unique, rel=0.01)
    assert loose["bytes"] > 2.5 * unique
    assert loose_t > 2 * packed_t


def test_mixed_batch_long_decode_waits_for_its_turn(r4090: GPUKernelModel) -> None:
    """In launch order a long decode CTA of a late head starts after that head's prefill tiles: the
    mixed call takes longer than the prefill alone plus the decode's share of the SMs."""
    pre = PrefillAttention("p", 32, 8, 128, ((2048, 2048),))
    mixed = dataclasses.replace(pre, seqs=((2048, 2048), (1, 16385)))
    dec = r4090.time(DecodeAttention("d", 32, 8, 128, (16385,), pack_gqa=False, split_kv=False))
    assert r4090.time(mixed) > r4090.time(pre) + 0.3 * dec


# ---- accuracy on the shared files ---------------------------------------------------------------

# (file, regime): (n, wape bound, mape bound): the target (0.05 / 0.12), reached everywhere.
# The 4090's mixed rows (wape 0.0498) hinge on the GQA re-read share, taken from the launch-order
# start times of the heads of a KV group and an LRU L2 (a ramp around its refill time).
REACHED = {
    ("lss_a6000", "attn_prefill"): (232, 0.05, 0.12),
    ("lss_a6000", "attn_decode"): (14040, 0.05, 0.12),
    ("lss_rtx4090", "attn_prefill"): (96, 0.05, 0.12),
    ("lss_rtx4090", "attn_decode"): (99, 0.05, 0.12),
    ("lss_rtx4090", "attn_mixed"): (8448, 0.05, 0.12),
}


@pytest.fixture(scope="module")
def regimes() -> dict[tuple[str, str], object]:
    if not DATA.is_dir():
        pytest.skip(f"shared measured data not found at {DATA}")
    from fit_attention import evaluate, family_rows
    out = {}
    for fam in ("ampere", "ada"):
        for label, s in evaluate(family_rows(fam, DATA), load_attention_calibration(fam)).items():
            folder, regime = label.split(":")[0], label.split(":")[-1]
            out[folder, regime] = s
    return out


@pytest.mark.parametrize("key", sorted(REACHED))
def test_attention_regime_accuracy(regimes: dict, key: tuple[str, str]) -> None:
    n, wape, mape = REACHED[key]
    s = regimes[key]
    assert s.n == n
    assert s.wape <= wape, (key, s)
    assert s.mape <= mape, (key, s)


@pytest.mark.parametrize("gpu_id,q_heads,kv_heads,pack", [("h100-sxm-80gb", 16, 2, True),
                                                          ("rtx-4090", 32, 8, True),
                                                          ("a100-sxm-80gb", 32, 8, False)])
def test_decode_stretch_times_equal_per_call_costs(gpu_id: str, q_heads: int, kv_heads: int, pack: bool) -> None:
    """A decode stretch (every sequence one token longer per call) costed at once equals costing
    each call on its own, across tile-boundary crossings and split-count changes."""
    from hwmodels.kernels.attention import decode_attention_cost, decode_attention_times

    gpu = load_gpu(gpu_id)
    rng = np.random.default_rng(7)
    for n in (1, 3, 17, 60, 130):
        lens = tuple(int(x) for x in rng.integers(1, 6000, size=n))
        op = DecodeAttention("d", q_heads, kv_heads, 128, lens, pack_gqa=pack)
        steps = 300
        fast = decode_attention_times(op, steps, gpu)
        slow = [decode_attention_cost(DecodeAttention("d", q_heads, kv_heads, 128, tuple(x + j for x in lens),
                                                      pack_gqa=pack), gpu)[0] for j in range(steps)]
        np.testing.assert_allclose(fast, slow, rtol=1e-12)
