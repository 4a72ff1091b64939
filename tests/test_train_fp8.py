"""fp8 training as Transformer Engine runs it (workloads/train_ops.py, module docstring): fp8 inputs for
the linear layers' GEMMs, bf16 for everything else; rejected on a GPU without fp8 tensor cores.

No number here comes from a publication: the assertions are what the definition implies (which ops
change dtype, which bytes stay 16-bit) and orderings the kernel model derives from the H100 spec's
fp8 peak (1,979 dense TFLOP/s against 989 for bf16, hwmodels/specs/h100-sxm-80gb.toml)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hwmodels.gpu import load_gpu
from hwmodels.network.topology import load_cluster
from hwmodels.train_memory import train_memory
from planners.train import plan_train
from sim.training import simulate_training
from workloads.errors import ConfigError
from workloads.ops import DType, Gemm
from workloads.train_ops import Recompute, TrainLayout, head_passes, layer_passes, load_train_model
from xpusim.cli import cli

GPT = "gpt:layers=8,hidden=8192,heads=64,vocab=51200"    # wide layers: GEMM-bound at 4k tokens
H100, A100 = load_gpu("h100-sxm-80gb"), load_gpu("a100-sxm-80gb")


def _lay(dtype: DType) -> TrainLayout:
    return TrainLayout(tp=8, pp=1, dp=1, micro_batch=2, global_batch=8, seq=2048, sequence_parallel=True,
                       recompute=Recompute.SELECTIVE, dtype=dtype)


def test_only_the_linear_gemms_are_fp8() -> None:
    """fp8: QKV, O, FC1, FC2 and their gradients' GEMMs take fp8 inputs; every other op (attention core,
    norms, collectives, LM head) is the bf16 layout's op, byte for byte."""
    model = load_train_model(GPT, 2048)
    f8, b16 = layer_passes(model, _lay(DType.FP8)), layer_passes(model, _lay(DType.BF16))
    for a, b in zip(f8.forward + f8.backward, b16.forward + b16.backward, strict=True):
        if isinstance(a.op, Gemm):
            assert a.op.dtype is DType.FP8 and b.op is not None and a.op.flops == b.op.flops
        else:
            assert a == b
    assert head_passes(model, _lay(DType.FP8)) == head_passes(model, _lay(DType.BF16))


def test_fp8_is_faster_on_h100_and_memory_is_unchanged() -> None:
    """An 8-GPU H100 node, a GEMM-bound layer: fp8 GEMMs run at twice the tensor-core peak, so the step is
    shorter, but by less than 2x (the bf16 rest is unchanged); weights, gradients, optimizer states and
    activations stay as with bf16 (the fp8 copies TE keeps are not modelled)."""
    model = load_train_model(GPT, 2048)
    cl = load_cluster("dgx-h100-superpod", gpus=8)
    f8 = simulate_training(model, _lay(DType.FP8), H100, cl)
    b16 = simulate_training(model, _lay(DType.BF16), H100, cl)
    assert b16.step_time_s / 2 < f8.step_time_s < b16.step_time_s
    assert f8.memory == b16.memory
    assert train_memory(model, _lay(DType.FP8)) == train_memory(model, _lay(DType.BF16))
    # the TP collectives move bf16 activations either way
    assert {k: v for k, v in f8.exposed_comm_s.items() if k.startswith("tp_")} == \
        {k: v for k, v in b16.exposed_comm_s.items() if k.startswith("tp_")}
    # the same model FLOPs over a shorter step
    assert f8.tflops_per_gpu * f8.step_time_s == pytest.approx(b16.tflops_per_gpu * b16.step_time_s, rel=1e-12)


def test_fp8_on_a100_is_rejected() -> None:
    """The A100 has no fp8 tensor cores (no fp8_dense_tflops in its spec): simulate and plan refuse fp8."""
    assert not A100.fp8_flops
    model = load_train_model(GPT, 2048)
    cl = load_cluster("dgx-a100-superpod", gpus=8)
    with pytest.raises(ConfigError, match="no fp8_dense_tflops"):
        simulate_training(model, _lay(DType.FP8), A100, cl)
    with pytest.raises(ConfigError, match="no fp8_dense_tflops"):
        plan_train(model, A100, cl, 8, 8, dtype=DType.FP8)
    args = ["--model", GPT, "--hardware", "a100-sxm-80gb", "--cluster", "dgx-a100-superpod", "--gpus", "8",
            "--global-batch", "8", "--dtype", "fp8"]
    for cmd in (["simulate", "train", "--tp", "8"], ["plan", "train"]):
        res = CliRunner().invoke(cli, [*cmd, *args])
        assert res.exit_code == 2 and "fp8" in res.output and "Traceback" not in res.output
