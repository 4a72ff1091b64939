"""The kernel model on our H100 SXM measurements (``validation/measured/h100/``, provenance there): held out.

Nothing was fitted on these files: the Hopper constants are published-figure ones or fitted on our H200
runs, so the H100 is the first GPU the CUDA side is judged on without having seen it. Issue 4's CUDA targets
(GEMM and attention wape <= 0.10, steps <= 0.10) are asserted where the model reaches them, with the figure
reached (``python benchmarks/accuracy.py``, docs/accuracy.md) within 0.01 so that a regression shows; what
it misses on this GPU is written in docs/accuracy.md, not asserted away.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hwmodels.gpu import load_gpu
from hwmodels.validate_ops import validate_ops
from workloads.measured import read_measured

H100 = Path(__file__).resolve().parents[1] / "validation" / "measured" / "h100"
CUDA_TARGET = 0.10


@pytest.fixture(scope="module")
def gpu():  # type: ignore[no-untyped-def]
    return load_gpu("h100-sxm-80gb")


def test_gemm_file_held_out(gpu) -> None:  # type: ignore[no-untyped-def]
    res = validate_ops(read_measured("xpusim-gemm", H100 / "gemm.csv"), gpu)
    assert res.overall.n == 588
    assert res.overall.wape <= CUDA_TARGET
    assert res.overall.wape == pytest.approx(0.071, abs=0.01)


def test_cudnn_attention_held_out(gpu) -> None:  # type: ignore[no-untyped-def]
    """PyTorch's default SDPA (cuDNN on Hopper): the [attention_cudnn] table fitted on the H200 carries over."""
    res = validate_ops(read_measured("xpusim-attention", H100 / "attention_cudnn.csv"), gpu, stack="torch")
    assert res.overall.wape <= CUDA_TARGET
    assert res.overall.wape == pytest.approx(0.034, abs=0.01)


def test_cuda_graph_decode_steps_held_out(gpu) -> None:  # type: ignore[no-untyped-def]
    """Whole decode steps of the built-in 1B/3B/8B modules replayed from CUDA graphs (what vLLM runs)."""
    res = validate_ops(read_measured("xpusim-steps", H100 / "steps.csv"), gpu)
    graph = res.per_op["decode.cuda_graph"]
    assert graph.n == 18
    assert graph.wape <= CUDA_TARGET
    assert graph.wape == pytest.approx(0.023, abs=0.01)


def test_kernel_times_held_out(gpu) -> None:  # type: ignore[no-untyped-def]
    """kernel_times.csv (profiler device time of each call): cuDNN SDPA decode wape 0.060, prefill 0.045 with the
    [attention_cudnn] table fitted on the H200's file; flash (FA2) decode 0.099 (0.119 before a split call's first
    KV tile ran serially and an unsplit call was counted in forward tiles; 0.384 before an unsplit decode ran FA2's
    forward kernel; what is left: docs/accuracy.md)."""
    res = validate_ops(read_measured("xpusim-kernel-times", H100 / "kernel_times.csv"), gpu)
    for op, w in (("attn_decode.cudnn", 0.060), ("attn_prefill.cudnn", 0.045)):
        assert res.per_op[op].wape <= CUDA_TARGET
        assert res.per_op[op].wape == pytest.approx(w, abs=0.01)
    assert res.per_op["attn_decode.fa2"].wape <= CUDA_TARGET
    assert res.per_op["attn_decode.fa2"].wape == pytest.approx(0.099, abs=0.01)


def test_flash_attention_held_out(gpu) -> None:  # type: ignore[no-untyped-def]
    """SDPA's flash backend (FA2, the torch-flash stack), timed between CUDA events: prefill 0.041, decode 0.066
    (0.073 before a split call's first KV tile ran serially, DecodeShape.exposure; 0.351 while an unsplit decode was
    priced with the split-KV kernel's tile and one DRAM efficiency averaged the
    tile-bound unsplit calls and the DRAM-bound split ones; [attention_fa2] fitted on the H200 only)."""
    res = validate_ops(read_measured("xpusim-attention", H100 / "attention.csv"), gpu, stack="torch-flash")
    for op, w in (("attn_prefill", 0.041), ("attn_decode", 0.066)):
        assert res.per_op[op].wape <= CUDA_TARGET
        assert res.per_op[op].wape == pytest.approx(w, abs=0.01)


def test_memory_ops_held_out(gpu) -> None:  # type: ignore[no-untyped-def]
    """memory_ops.csv (isolated, L2-flushed eager kernels): wape 0.163, was 0.518 while the strided elementwise
    kernels' rate scaled with DRAM bandwidth; as issue-bound kernels (``sm_bytes_per_clk``, same SMs and clock as the
    H200) they run at the H200's speed, as measured (no target for memory ops alone)."""
    res = validate_ops(read_measured("xpusim-memory-ops", H100 / "memory_ops.csv"), gpu)
    assert res.overall.n == 105
    assert res.overall.wape == pytest.approx(0.163, abs=0.01)


@pytest.mark.parametrize(("run", "fig"), [
    # (run dir, {kind or step: wape}); lease 1 (README) and a second lease of the same command. GEMM and prefill
    # figures updated when the step's kernels were priced at the step's power-limited clock (CudaStepCost
    # clock_context): were gemm 0.041 / 0.043 / 0.059, prefill 0.098 / 0.112 / 0.088. Decode attention updated when
    # a cuDNN decode grid of fewer CTAs than SMs no longer hid its memory time (attention.decode_overlap_p, no
    # constant refitted): were 0.101 / 0.101 / 0.072
    ("validate_torch_llama-3.1-8b", {"gemm": 0.028, "attn_prefill": 0.020, "attn_decode": 0.011,
                                     "prefill": 0.044, "decode": 0.060}),
    ("validate_torch_llama-3.1-8b-lease2", {"gemm": 0.030, "attn_prefill": 0.018, "attn_decode": 0.011,
                                            "prefill": 0.057, "decode": 0.063}),
    ("validate_torch_llama-3.2-1b", {"gemm": 0.047, "attn_prefill": 0.028, "attn_decode": 0.018,
                                     "prefill": 0.045, "decode": 0.029}),
])
def test_validate_torch_runs_held_out(gpu, run: str, fig: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """``xpusim validate torch --device cuda`` on the H100 (batch 4, prompt 512, 32 decode steps), re-scored offline:
    nothing fitted on it. Met: GEMM, prefill and decode attention, every step (the second 8B lease's prefill was
    0.112 before the clock context: measured 51.5 ms, simulated 57.3 ms, now 54.5 ms). The 8B's decode attention
    (10.4 us a call in the step) was 0.101 (modelled 9.3 us) while the p-norm hid the memory time of its 32-CTA
    grid; it adds below one CTA per SM (attention.decode_overlap_p): 0.011."""
    from hwmodels.validate_torch import CudaStepCost, validate_steps
    from workloads.measured_xpusim import read_validate_torch

    res = validate_steps(read_validate_torch(H100 / run).steps, CudaStepCost(gpu))
    for key, w in fig.items():
        got = res.steps[key].wape if key in ("prefill", "decode") else res.per_kind[key].wape
        assert got == pytest.approx(w, abs=0.01), key
        if w <= CUDA_TARGET:
            assert got <= CUDA_TARGET, key


def _run_noise():  # type: ignore[no-untyped-def]
    import sys

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from torch_run_noise import run_noise

    return run_noise


def test_eager_decode_steps_repeat_worse_than_the_model_scores() -> None:
    """Measured against measured (benchmarks/torch_run_noise.py): the 8B eager decode steps of lease 4 scored
    against lease 3's (same command, same GPU type) are 0.217 apart, two processes of lease 4 0.048, while the
    GEMMs repeat within 0.01. The model's decode figure on either run (0.086 / 0.112, test above and
    docs/accuracy_report.md) is inside that spread: the eager decode step is the host's Python speed, which
    moves between leases. A run against itself is 0 on every figure."""
    run_noise = _run_noise()
    figs = {r["compared"]: r["wape"] for r in run_noise(H100 / "validate_torch_llama-3.1-8b-lease3",
                                                         H100 / "validate_torch_llama-3.1-8b-lease4")}
    assert figs["step decode"] == pytest.approx(0.217, abs=0.005)
    assert figs["op kind gemm"] < 0.01
    same = run_noise(H100 / "validate_torch_llama-3.1-8b-lease4b", H100 / "validate_torch_llama-3.1-8b-lease4b")
    assert all(r["wape"] == 0 for r in same)
    procs = {r["compared"]: r["wape"] for r in run_noise(H100 / "validate_torch_llama-3.1-8b-lease4",
                                                          H100 / "validate_torch_llama-3.1-8b-lease4b")}
    assert procs["step decode"] == pytest.approx(0.048, abs=0.005)


def test_run_noise_rejects_two_configurations() -> None:
    run_noise = _run_noise()
    with pytest.raises(SystemExit, match="not the same configuration"):
        run_noise(H100 / "validate_torch_llama-3.1-8b-lease4", H100 / "validate_torch_llama-3.2-1b-lease4")
