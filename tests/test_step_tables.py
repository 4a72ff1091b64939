"""StepTimeModel's per-token-count tables (``layer_rest`` and the embedding over T = 0 .. N built at
once, memory-bound ops vectorised by ``step.memory_times``) give bit for bit what the kernel model
gives costing the ``llm_ops`` ops one by one, for every T: no tolerance, the same float values."""

from __future__ import annotations

import pytest

from hwmodels.gpu import load_gpu
from hwmodels.kernels import GPUKernelModel
from hwmodels.step import StepTimeModel
from workloads.catalog import load_model

# stacks: vLLM (row kernels for norm/rope/activation, grid add), torch-step (no L2 credit, grid rope and
# activation), hf-eager (grid kernels only); models: gated (Llama) and plain (OPT) MLPs
CASES = [
    ("llama-3.1-8b", "h100-sxm-80gb", "vllm"),
    ("llama-3.2-1b", "a100-sxm-80gb", "vllm"),
    ("opt-13b", "rtx-4090", "vllm"),
    ("llama-3.1-8b", "rtx-a6000", "torch-step"),
    ("mistral-7b", "l40s", "hf-eager"),
]


@pytest.mark.parametrize(("model", "gpu", "stack"), CASES)
def test_layer_and_embedding_tables_equal_op_by_op(model: str, gpu: str, stack: str) -> None:
    step = StepTimeModel(load_model(model), load_gpu(gpu))
    step.kernels = GPUKernelModel(step.gpu, stack=stack)
    top = 2100   # past the first table (2049 entries): one growth
    rest = [step.layer_rest(t) for t in range(top)]
    emb = [step._head(t, 0) for t in range(top)]
    assert step._rest_tab is not None and step._emb_tab is not None, "the tables were built"
    assert rest == [step._layer_rest_op_by_op(t) for t in range(top)]
    assert emb == [step._emb_op_by_op(t) for t in range(top)]


@pytest.mark.parametrize(("model", "tp"), [("mixtral-8x7b", 1), ("llama-3.1-8b", 2)])
def test_layers_not_scaled_by_tokens_are_costed_op_by_op(model: str, tp: int) -> None:
    """MoE expert GEMMs (rows per expert rounded up) and TP all-reduces are not vectorised: the layer
    time is then the op-by-op cost, memoised per token count."""
    step = StepTimeModel(load_model(model), load_gpu("h100-sxm-80gb"), tp=tp)
    vals = [step.layer_rest(t) for t in (1, 7, 300, 2048)]
    assert step._rest_tab is None and not step._rest_vec
    assert vals == [step._layer_rest_op_by_op(t) for t in (1, 7, 300, 2048)]
