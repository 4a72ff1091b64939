"""The fast iteration-time path (hwmodels.step) against summing the kernel model over llm_ops."""

from __future__ import annotations

import numpy as np
import pytest

from hwmodels.gpu import load_gpu
from hwmodels.kernels.gemm import gemm_times
from hwmodels.step import StepTimeModel
from workloads.catalog import load_model
from workloads.llm_ops import Batch, head_ops, layer_ops
from workloads.ops import Gemm, OpKind


@pytest.mark.parametrize("gpu,model,tp", [("rtx-4090", "llama-3.1-8b", 1), ("h100-sxm-80gb", "llama-2-70b", 4)])
def test_fast_path_within_one_percent_of_kernel_sum(gpu: str, model: str, tp: int) -> None:
    step = StepTimeModel(load_model(model), load_gpu(gpu), tp=tp)
    rng = np.random.default_rng(7)
    worst = 0.0
    for i in range(40):
        n = int(rng.integers(1, 257))
        decode = tuple(int(x) for x in rng.integers(16, 6000, n)) if i % 5 else ()
        prefill = ()
        if i % 2:
            q = int(rng.integers(1, 2048))
            prefill = ((q, q + int(rng.integers(0, 3000))),)
        batch = Batch(prefill=prefill, decode=decode)
        if batch.num_tokens == 0:
            continue
        fast, ref = step.iteration_time(batch), step.reference_time(batch)
        worst = max(worst, abs(fast / ref - 1))
    assert worst <= 0.01


@pytest.mark.parametrize("gpu,model,tp", [("rtx-4090", "llama-3.1-8b", 1), ("h100-sxm-80gb", "llama-2-70b", 4)])
def test_decode_only_steps_match_kernel_sum(gpu: str, model: str, tp: int) -> None:
    """Decode-only steps (the fast path of a stretch) equal the kernel model summed over every op of
    the step, for random batches of 1-256 sequences with very different lengths."""
    step = StepTimeModel(load_model(model), load_gpu(gpu), tp=tp)
    rng = np.random.default_rng(11)
    for _ in range(40):
        n = int(rng.integers(1, 257))
        lens = [int(x) for x in rng.integers(16, 6000, n)]
        fast = step.decode_times(lens, 1)[0]
        assert fast == pytest.approx(step.reference_time(Batch(decode=tuple(lens))), rel=1e-9)


def test_decode_times_equal_stepping_one_by_one() -> None:
    step = StepTimeModel(load_model("llama-3.1-8b"), load_gpu("h100-sxm-80gb"))
    lens = [700 + 37 * i for i in range(12)]
    many = step.decode_times(lens, 300)
    one = np.array([step.decode_times([x + j for x in lens], 1)[0] for j in range(300)])
    assert np.array_equal(many, one)
    # Longer KV never makes a step meaningfully faster. Not exactly monotone: when a sequence crosses
    # a KV-tile boundary FlashAttention's split heuristic may re-balance the CTAs (seen: -4e-6 relative).
    assert np.all(np.diff(many) >= -1e-5 * many[1:])
    assert many[-1] > many[0]


def test_pipeline_parallel_costs_bubbles() -> None:
    m, g = load_model("llama-3.1-8b"), load_gpu("h100-sxm-80gb")
    b = Batch(decode=(1000,) * 64)
    t1 = StepTimeModel(m, g, pp=1).iteration_time(b)
    t2 = StepTimeModel(m, g, pp=2).iteration_time(b)
    assert t2 > 0.5 * t1          # a pipeline does not make one iteration twice as fast
    assert t2 < 1.5 * t1 + 1e-3


@pytest.mark.parametrize("gpu,model,tp", [("h100-sxm-80gb", "llama-3.1-8b", 1), ("rtx-4090", "llama-3.1-8b", 1),
                                          ("h100-sxm-80gb", "llama-2-70b", 4), ("a100-sxm-80gb", "llama-2-70b", 8)])
def test_gemm_table_bit_identical_to_kernel_model(gpu: str, model: str, tp: int) -> None:
    """The step model's GEMM tables come from ``gemm_times`` (vectorised over m); the scalar
    ``kernels.time(Gemm)`` is the same code at one m, so every entry must be equal exactly, over
    every m from 1 to 4096 (tile edges, split-K and wave boundaries included)."""
    step = StepTimeModel(load_model(model), load_gpu(gpu), tp=tp)
    k = step.kernels
    ops = [op for op in layer_ops(step.model, Batch(prefill=((1, 1),)), tp) if isinstance(op, Gemm)]
    ops += [op for op in head_ops(step.model, Batch(logits=1), tp) if isinstance(op, Gemm)]
    ms = np.arange(1, 4097)
    for op in ops:
        fast = gemm_times(k.gpu, k.cal, k.stack, op.n, op.k, ms, op.dtype)
        ref = np.array([k.time(Gemm(op.name, int(m), op.n, op.k, op.dtype)) for m in ms])
        assert np.array_equal(fast, ref), (op.n, op.k, np.flatnonzero(fast != ref)[:5] + 1)
        assert all(step._gemm_time(Gemm(op.name, int(m), op.n, op.k, op.dtype)) == ref[m - 1]
                   for m in (1, 17, 128, 129, 4096))


def test_gemm_times_zero_sizes() -> None:
    k = StepTimeModel(load_model("llama-3.1-8b"), load_gpu("a100-sxm-80gb")).kernels
    t = gemm_times(k.gpu, k.cal, k.stack, 4096, 4096, np.array([0, 1, 2]))
    assert t[0] == 0.0 and 0 < t[1] <= t[2]
    assert np.array_equal(gemm_times(k.gpu, k.cal, k.stack, 0, 4096, np.array([5, 6])), np.zeros(2))


def test_layer_rest_equals_kernel_model_sum() -> None:
    step = StepTimeModel(load_model("llama-3.1-8b"), load_gpu("h100-sxm-80gb"))
    for t in (1, 7, 64, 129, 1000, 2048, 5000):
        ops = layer_ops(step.model, Batch(prefill=((t, t),)))
        assert step.layer_rest(t) == sum(step.kernels.time(op) for op in ops
                                         if op.kind not in (OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE))


def test_fast_attention_paths_equal_kernel_model_exactly() -> None:
    """The step model's varlen and decode-stretch paths (shapes and constants kept between calls, no op
    objects) give the kernel model's per-call costs bit for bit: mixed batches against
    ``prefill_attention_cost``, decode-only steps against ``decode_attention_cost`` over a stretch
    that crosses KV-tile boundaries."""
    from hwmodels.kernels.attention import decode_attention_cost, prefill_attention_cost
    from workloads.ops import DecodeAttention, PrefillAttention

    for gpu, model, tp in (("h100-sxm-80gb", "llama-3.1-8b", 1), ("rtx-4090", "llama-3.1-8b", 1),
                           ("a100-sxm-80gb", "llama-2-70b", 4)):
        step = StepTimeModel(load_model(model), load_gpu(gpu), tp=tp)
        g, d = step.kernels.gpu, step.model.head_dim
        rng = np.random.default_rng(3)
        for _ in range(30):
            q = int(rng.integers(1, 2049))
            dec = tuple(int(x) for x in rng.integers(1, 9000, int(rng.integers(0, 6))))
            seqs = ((q, q + int(rng.integers(0, 4000))),) + tuple((1, kv) for kv in dec)
            ref = prefill_attention_cost(PrefillAttention("a", step.q_heads, step.kv_heads, d, seqs), g)[0]
            assert step._prefill_attention_uncached(seqs) == ref
            lens = [int(x) for x in rng.integers(1, 9000, int(rng.integers(1, 5)))]
            k = int(rng.integers(1, 400))
            rest, head, layers = step.layer_rest(len(lens)), step._head(len(lens), len(lens)), step.layers_per_stage
            want = [layers * (rest + decode_attention_cost(
                DecodeAttention("d", step.q_heads, step.kv_heads, d, tuple(x + j for x in lens)), g)[0]) + head
                for j in range(k)]
            assert step.decode_times(lens, k).tolist() == want


def test_decode_times_mapped_equal_decode_times() -> None:
    """The serving clock's memoised stretch tables give ``post(decode_times)`` exactly: stretches that
    share runs of tile counts, many runs, more sequences than the tables take, and pipeline stages."""
    m, g = load_model("llama-3.1-8b"), load_gpu("h100-sxm-80gb")

    def post(s: np.ndarray) -> np.ndarray:
        return np.rint(s * 1e9).astype(np.int64) + 300_000

    rng = np.random.default_rng(5)
    for pp in (1, 2):
        step = StepTimeModel(m, g, pp=pp)
        tables: dict[int, dict] = {}
        for _ in range(150):
            n = int(rng.choice([1, 2, 3, 5, 8, 9, 40]))
            lens = [int(x) for x in rng.integers(1, 12000, n)]
            k = int(rng.choice([1, 2, 50, 175, 176, 177, 600]))
            got = step.decode_times_mapped(lens, k, post, tables)
            assert np.array_equal(got, post(step.decode_times(lens, k)))
            assert np.array_equal(step.decode_times_mapped(lens, k, post, tables), got)   # from the tables
