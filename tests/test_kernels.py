"""Physics of the GPU kernel model: properties that hold for any sane calibration, each one able to fail."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from hwmodels.gpu import load_gpu
from hwmodels.kernels import GPUKernelModel, load_calibration
from workloads.ops import AllReduce, DecodeAttention, DType, Gemm, MemoryOp, OpKind, PrefillAttention


@pytest.fixture(scope="module")
def a100() -> GPUKernelModel:
    return GPUKernelModel(load_gpu("a100-sxm-80gb"))


@pytest.fixture(scope="module")
def h100() -> GPUKernelModel:
    return GPUKernelModel(load_gpu("h100-sxm-80gb"))


def test_gemm_time_monotone_in_m(a100: GPUKernelModel) -> None:
    times = [a100.time(Gemm("g", m, 4096, 4096)) for m in range(1, 8193, 37)]
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(times))


def test_wave_quantisation_steps(a100: GPUKernelModel) -> None:
    """A100: 108 SMs. With n = 128*108 columns... simpler: for a compute-bound GEMM, one more row past
    a full wave of 128-row tiles adds a whole wave, far more than its share of the FLOPs."""
    n, k = 128 * 108, 8192
    base = a100.cost(Gemm("g", 4096, n, k))
    more = a100.cost(Gemm("g", 4096 + 1, n, k))
    flop_share = 1 / 4096
    assert more[0] / base[0] - 1 > 10 * flop_share
    assert more[1]["waves"] > base[1]["waves"]


def test_gemm_time_monotone_in_n_at_fixed_tiles(a100: GPUKernelModel) -> None:
    times = [a100.time(Gemm("g", 2048, n, 4096)) for n in range(128, 16385, 128)]
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(times))


def test_ctas_per_sm_from_shared_memory() -> None:
    """128x64x32 fp16 tile, 4 stages: (128 + 64) x 32 x 2 B x 4 = 48 KiB of operand buffers. A100 (164 KiB
    per SM): 3 CTAs; Ada (100 KiB): 2. 256x128x32, 3 stages (72 KiB), 32768 fp32 accumulators + 64
    registers x 256 threads = 49152 of 65536 registers: 1 CTA everywhere. 128x128x32, 4 stages (64 KiB):
    2 on A100 and on H100 (registers: 2 x 24576), 1 on Ada (smem)."""
    from hwmodels.kernels.gemm import TILES, ctas_per_sm
    amp, ada, hop = (ctas_per_sm(load_calibration(f), DType.FP16).ravel() for f in ("ampere", "ada", "hopper"))
    i = {t: TILES.index(t) for t in ((128, 64), (256, 128), (128, 128))}
    assert (amp[i[(128, 64)]], ada[i[(128, 64)]]) == (3, 2)
    assert amp[i[(256, 128)]] == ada[i[(256, 128)]] == hop[i[(256, 128)]] == 1
    assert (amp[i[(128, 128)]], ada[i[(128, 128)]], hop[i[(128, 128)]]) == (2, 1, 2)


def test_gemm_uses_the_gpus_shared_memory() -> None:
    """The A6000 (GA102, compute capability 8.6: 100 KiB per SM) fits 2 CTAs of the 128x64x32 4-stage
    tile (48 KiB), not the 3 of the Ampere family value (GA100's 164 KiB); a spec without the key
    falls back to the family value."""
    import dataclasses as dc

    from hwmodels.kernels.gemm import TILES, ctas_per_sm, smem_per_sm
    a6000 = load_gpu("rtx-a6000")
    cal = load_calibration("ampere")
    assert smem_per_sm(a6000, cal) == 100 * 1024
    assert smem_per_sm(dc.replace(a6000, smem_per_sm_bytes=None), cal) == 164 * 1024
    i = TILES.index((128, 64))
    assert ctas_per_sm(cal, DType.FP16, smem_per_sm(a6000, cal)).ravel()[i] == 2
    assert ctas_per_sm(cal, DType.FP16).ravel()[i] == 3
    g = Gemm("g", 4096, 4096, 4096, DType.FP16)
    own = GPUKernelModel(a6000).cost(g)[1]["ctas_per_sm"]
    fam = GPUKernelModel(dc.replace(a6000, smem_per_sm_bytes=None)).cost(g)[1]["ctas_per_sm"]
    assert own <= fam


def test_small_k_raises_cost_per_flop(a100: GPUKernelModel) -> None:
    """The pipeline fill and the epilogue are paid once per tile, whatever K: at K = 512 a tile has 16
    K iterations to spread them over, at K = 8192 it has 256."""
    def per_flop(k: int) -> float:
        g = Gemm("g", 4096, 4096, k, DType.FP16)
        return a100.time(g) / g.flops
    assert per_flop(512) > 1.05 * per_flop(8192)
    assert per_flop(512) > per_flop(2048) > per_flop(8192) * (1 - 1e-9)


def test_thin_tiles_are_feed_bound(a100: GPUKernelModel) -> None:
    """A 64x64 tile loads 128 operand elements per 64 x 64 MMA step where a 256x128 tile loads 384 per
    256 x 128: four times the L2 bytes per FLOP. At the fitted L2 bandwidth per SM the big tile's K step
    is MMA-bound and the small one's is not faster per FLOP."""
    from hwmodels.kernels.gemm import _candidates
    c = _candidates(a100.gpu, a100.cal, a100.stack, 8192, 8192, np.array([8192]), DType.FP16)
    i_big, i_small = 0, 5
    per_flop = c["compute_s"][:, 0, 0] / (c["waves"][:, 0, 0] * c["tile_m"][:, 0, 0] * c["tile_n"][:, 0, 0])
    assert per_flop[i_small] > 1.2 * per_flop[i_big]


def test_small_m_gemm_is_weight_bandwidth_bound(a100: GPUKernelModel) -> None:
    """Decode GEMM m=8 over a 4096x14336 fp16 weight: time within 2x of weight bytes / DRAM bandwidth."""
    g = Gemm("g", 8, 14336, 4096, DType.FP16)
    floor = 2 * 4096 * 14336 / a100.gpu.memory_bandwidth
    t = a100.time(g)
    assert floor < t < 2 * floor


def test_decode_attention_linear_in_kv(a100: GPUKernelModel) -> None:
    def t(kv: int) -> float:
        return a100.time(DecodeAttention("d", 32, 8, 128, (kv,) * 64))
    t1, t2, t4 = t(4096), t(8192), t(16384)
    assert t2 - t1 == pytest.approx(t4 - t2, rel=0.1) or (t4 - t2) == pytest.approx(2 * (t2 - t1), rel=0.15)
    assert t4 > 1.8 * t2 * 0.5 and t4 > t2 > t1


def test_decode_attention_grows_with_batch(a100: GPUKernelModel) -> None:
    assert a100.time(DecodeAttention("d", 32, 8, 128, (2048,) * 128)) > \
        1.5 * a100.time(DecodeAttention("d", 32, 8, 128, (2048,) * 32))


def test_prefill_attention_causal_quadratic(a100: GPUKernelModel) -> None:
    t4k = a100.time(PrefillAttention("p", 32, 8, 128, ((4096, 4096),)))
    t8k = a100.time(PrefillAttention("p", 32, 8, 128, ((8192, 8192),)))
    assert 3.0 < t8k / t4k < 4.5


def test_chunked_prefill_with_prior_kv_costs_more(a100: GPUKernelModel) -> None:
    fresh = a100.time(PrefillAttention("p", 32, 8, 128, ((512, 512),)))
    late = a100.time(PrefillAttention("p", 32, 8, 128, ((512, 8192),)))
    assert late > 3 * fresh


def test_bigger_gpu_is_faster(a100: GPUKernelModel, h100: GPUKernelModel) -> None:
    ops = [Gemm("g", 4096, 4096, 4096), Gemm("g", 1, 14336, 4096),
           DecodeAttention("d", 32, 8, 128, (4096,) * 64), PrefillAttention("p", 32, 8, 128, ((4096, 4096),)),
           MemoryOp("add", OpKind.ADD, 4096, 2 * 4096 * 4096 * 2, 4096 * 4096 * 2)]
    for op in ops:
        assert h100.time(op) < a100.time(op), op


def test_fp8_faster_than_bf16_on_hopper(h100: GPUKernelModel) -> None:
    bf16 = h100.time(Gemm("g", 8192, 8192, 8192, DType.BF16))
    fp8 = h100.time(Gemm("g", 8192, 8192, 8192, DType.FP8))
    assert fp8 < 0.7 * bf16


def test_hopper_large_gemm_near_published_efficiency(h100: GPUKernelModel) -> None:
    """Published cuBLAS bf16 on H100 SXM reaches ~70-80 % of the 989 TFLOP/s dense peak at 8k^3."""
    g = Gemm("g", 8192, 8192, 8192, DType.BF16)
    achieved = g.flops / h100.time(g) / h100.gpu.bf16_flops
    assert 0.6 < achieved < 0.85


def test_memory_op_has_launch_floor_and_scales(a100: GPUKernelModel) -> None:
    def add(t: int) -> MemoryOp:
        return MemoryOp("add", OpKind.ADD, t, 2 * t * 4096 * 2, t * 4096 * 2)
    assert a100.time(add(1)) >= a100.cal.launch_s
    big = a100.time(add(65536))
    assert big == pytest.approx(add(65536).bytes / (a100.gpu.memory_bandwidth * a100.cal.mem_eff
                                                     * a100.stack.impl(OpKind.ADD).bw_eff), rel=0.1)


def test_unfused_op_pays_one_launch_per_kernel(a100: GPUKernelModel) -> None:
    """A tiny kernel costs its launch plus one dependent memory access, whatever it moves."""
    one = MemoryOp("n", OpKind.ELEMENTWISE, 1, 8192, 8192)
    seven = dataclasses.replace(one, kernels=7)
    floor = a100.cal.launch_s + a100.cal.mem_latency_s
    assert a100.time(seven) - a100.time(one) == pytest.approx(6 * floor, rel=0.2)


def test_all_reduce_ring(a100: GPUKernelModel) -> None:
    assert a100.time(AllReduce("ar", 1 << 20, 1)) == 0.0
    big = 1 << 30
    t8 = a100.time(AllReduce("ar", big, 8))
    bus = 2 * 7 / 8 * big / t8
    assert bus == pytest.approx(a100.gpu.nvlink_bandwidth * a100.cal.comm_eff, rel=0.05)
    # over PCIe (RTX 4090 has no NVLink) the same all-reduce is far slower
    assert GPUKernelModel(load_gpu("rtx-4090")).time(AllReduce("ar", big, 8)) > 5 * t8


def test_every_family_has_a_calibration_with_its_source() -> None:
    for fam in ("ampere", "ada", "hopper", "blackwell"):
        cal = load_calibration(fam)
        assert cal.source, fam
        assert 0 < cal.gemm_peak_eff <= 1 and 0 < cal.mem_eff <= 1


def test_every_catalog_gpu_costs_every_op() -> None:
    from hwmodels.gpu import list_gpus
    ops = [Gemm("g", 100, 4096, 4096), DecodeAttention("d", 32, 8, 128, (100, 200)),
           PrefillAttention("p", 32, 8, 128, ((100, 300), (1, 50))), AllReduce("a", 1e6, 2),
           MemoryOp("n", OpKind.NORM, 100, 1e6, 1e6)]
    for gid in list_gpus():
        m = GPUKernelModel(load_gpu(gid))
        for op in ops:
            t, bd = m.cost(op)
            assert 0 < t < 1.0, (gid, op)
            assert isinstance(bd, dict)


# ---- software stacks -----------------------------------------------------------------------------

def test_every_stack_loads_with_its_source() -> None:
    from hwmodels.kernels import list_stacks, load_stack
    assert {"vllm", "vidur", "hf-eager", "cublas"} <= set(list_stacks())
    for name in list_stacks():
        s = load_stack(name)
        assert s.source and "placeholder" not in s.source, name
        assert 0 < s.gemm_eff <= 1.2 and 0 < s.gemm_bw_eff <= 1.2


def test_unknown_stack_is_a_config_error() -> None:
    from hwmodels.kernels import load_stack
    from workloads.errors import ConfigError
    with pytest.raises(ConfigError, match="vllm"):
        load_stack("tensorrt-llm")


def test_default_stack_is_vllm(a100: GPUKernelModel) -> None:
    assert a100.stack.name == "vllm"


def test_per_token_kernel_with_few_tokens_is_a_latency_chain() -> None:
    """silu_and_mul launches one CTA per token with min(width, 1024) threads (vidur: scalar loads), so at
    one token a row of 11008 elements is ceil(11008 / 1024) = 11 dependent loop steps and one of 1376
    (TP8) is 2: the difference is 9 x passes memory latencies plus the 9632 extra elements' 6 bytes each
    through one SM's L2 port, though both move almost nothing. (Measured in vidur_a100 Llama-2-7B:
    7 us vs 2 us.)"""
    m = GPUKernelModel(load_gpu("a100-sxm-80gb"), stack="vidur")

    def act(width: int) -> MemoryOp:
        return MemoryOp("mlp_act", OpKind.ACTIVATION, 1, 2 * width * 2, width * 2)
    impl = m.stack.impl(OpKind.ACTIVATION)
    port = m.cal.gemm_l2_bytes_per_clk_sm * m.gpu.boost_clock_hz
    expect = 9 * impl.passes * m.cal.mem_latency_s + (11008 - 1376) * 6 / port
    assert m.time(act(11008)) - m.time(act(1376)) == pytest.approx(expect, rel=0.01)


def test_per_token_kernel_pays_idle_lanes_and_latency_on_top_of_bandwidth() -> None:
    """Many tokens: each SM runs ceil(tokens / 108) CTAs, 2048 // 1024 = 2 at a time, and every round
    pays its loop steps' latencies on top of the round's bytes (one scalar load per thread in flight
    cannot hide one behind the other). At 4096 tokens a 1376-wide row (TP8 Llama-2-7B) is 2 steps, the
    second with 352 of 1024 lanes busy: per byte it costs more than an 11008-wide row (11 steps,
    98 % busy). Measured (vidur_a100 Llama-2-7B mlp_act, 4096 tokens): 44 us for 33.8 MB vs 266 us for
    270 MB, i.e. 1.30 vs 0.98 ns/kB."""
    m = GPUKernelModel(load_gpu("a100-sxm-80gb"), stack="vidur")

    def act(width: int) -> MemoryOp:
        return MemoryOp("mlp_act", OpKind.ACTIVATION, 4096, 2 * 4096 * width * 2, 4096 * width * 2)
    narrow, wide = act(1376), act(11008)
    assert m.time(narrow) / narrow.bytes > 1.15 * m.time(wide) / wide.bytes
    assert m.time(narrow) == pytest.approx(44e-6, rel=0.12)
    assert m.time(wide) == pytest.approx(266e-6, rel=0.12)
    _, bd = m.cost(wide)
    rounds = math.ceil(math.ceil(4096 / 108) / 2)
    assert bd["chain_s"] == pytest.approx(rounds * 11 * m.stack.impl(OpKind.ACTIVATION).passes
                                          * m.cal.mem_latency_s)


def test_per_token_kernel_with_many_tokens_tends_to_bandwidth_plus_chain() -> None:
    m = GPUKernelModel(load_gpu("a100-sxm-80gb"), stack="vidur")
    t = 65536
    op = MemoryOp("n", OpKind.NORM, t, t * 4096 * 2.0, t * 4096 * 2.0)
    bw = m.gpu.memory_bandwidth * m.cal.mem_eff * m.stack.impl(OpKind.NORM).bw_eff
    _, bd = m.cost(op)
    assert bd["memory_s"] == pytest.approx(op.bytes / bw, rel=0.02)
    assert m.time(op) == pytest.approx(bd["memory_s"] + bd["chain_s"] + m.cal.launch_s, rel=1e-9)


def test_embedding_small_index_path_is_linear_then_drops() -> None:
    """torch index_select runs a serial per-index loop up to 16 indices and one thread per element
    beyond: 16 tokens cost more than 24 (measured in vidur_a100: 14 us vs 4 us)."""
    m = GPUKernelModel(load_gpu("a100-sxm-80gb"), stack="vidur")

    def emb(t: int) -> MemoryOp:
        return MemoryOp("emb", OpKind.EMBEDDING, t, t * 4096 * 2 + 8 * t, t * 4096 * 2)
    t1, t2, t16, t24 = (m.time(emb(t)) for t in (1, 2, 16, 24))
    assert t16 - t1 == pytest.approx(15 * (t2 - t1), rel=1e-6)
    assert t24 < t16


def test_profiler_gemm_slower_than_tuned_library() -> None:
    gpu = load_gpu("a100-sxm-80gb")
    g = Gemm("g", 4096, 22016, 4096, DType.FP16)
    vidur, cublas = GPUKernelModel(gpu, stack="vidur").time(g), GPUKernelModel(gpu, stack="cublas").time(g)
    assert vidur > 1.05 * cublas


def test_stack_profile_carries_to_other_gpus() -> None:
    """The same stack on a faster GPU of another family is faster for every op kind."""
    a100 = GPUKernelModel(load_gpu("a100-sxm-80gb"), stack="vidur")
    h100 = GPUKernelModel(load_gpu("h100-sxm-80gb"), stack="vidur")
    for op in (Gemm("g", 4096, 4096, 4096, DType.FP16), Gemm("g", 1, 11008, 4096, DType.FP16),
               MemoryOp("n", OpKind.NORM, 4096, 4096 * 4096 * 2.0, 4096 * 4096 * 2.0),
               MemoryOp("emb", OpKind.EMBEDDING, 4096, 4096 * 4096 * 2.0, 4096 * 4096 * 2.0)):
        assert h100.time(op) < a100.time(op), op
