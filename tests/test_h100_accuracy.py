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
