"""``xpusim validate torch --device cuda`` re-scored offline from the committed H200 runs (no GPU, no torch).

Data: ``validation/measured/h200/validate_torch_llama-3.2-1b`` and ``..._llama-3.1-8b`` (README there: one
prefill of 4 x 512 tokens and 32 decode steps each, PyTorch 2.11 eager, bf16, profiler device time per aten op,
synchronised wall time per step). What was fitted on what: the ``torch-step`` stack's memory-op tables and
the host profile ``h200-xeon-torch2.11`` on the 1B run only (their ``fitted_on``); the 8B run and the eager rows of
``validation/measured/h200/steps.csv`` are held out. Targets (issue 4, CUDA): GEMM and attention wape <= 0.10,
steps <= 0.10. Figures asserted here are what the model reaches (within 0.01 so that a regression shows);
those that miss a target say so and are asserted as misses, with the cause in docs/accuracy.md.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwmodels.gpu import load_gpu
from hwmodels.host import HostDispatch, co_execute, load_host, step_time
from hwmodels.validate_torch import CudaStepCost, TorchValidation, gpu_cost_fn, validate_steps, views_per_launch
from workloads.errors import WorkloadError
from workloads.measured import read_measured
from workloads.measured_xpusim import RecordedTorchRun, read_validate_torch
from workloads.ops import DecodeAttention, Gemm, PrefillAttention
from workloads.pytorch.tracer import AtenClass
from xpusim.cli import cli

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "measured" / "h200"
RUN_1B = H200 / "validate_torch_llama-3.2-1b"
RUN_8B = H200 / "validate_torch_llama-3.1-8b"
TARGET = 0.10


@pytest.fixture(scope="module")
def runs() -> dict[str, RecordedTorchRun]:
    return {"1b": read_validate_torch(RUN_1B), "8b": read_validate_torch(RUN_8B)}


@pytest.fixture(scope="module")
def scored(runs: dict[str, RecordedTorchRun]) -> dict[str, TorchValidation]:
    gpu = load_gpu("h200-sxm-141gb")
    return {k: validate_steps(r.steps, CudaStepCost(gpu)) for k, r in runs.items()}


def test_reader_rebuilds_every_step_and_op(runs: dict[str, RecordedTorchRun]) -> None:
    """33 steps each (README); per step 378 (1B: 16 layers x 23 + 10) / 746 (8B: 32 x 23 + 10) timed ops,
    the ``ops`` column of steps.csv; the skipped indices come back as views (452 / 900 per step)."""
    for key, launches, views in (("1b", 378, 452), ("8b", 746, 900)):
        run = runs[key]
        assert [s.phase for s in run.steps] == ["prefill"] + ["decode"] * 32
        assert run.provenance["gpu"] == "NVIDIA H200" and run.provenance["dtype"] == "bf16"
        for st in run.steps:
            ops = st.graph.ops
            assert sum(o.costs for o in ops) == launches and sum(not o.costs for o in ops) == views
            assert all(isinstance(o.op, Gemm) for o in ops if o.aclass is AtenClass.GEMM)
        attn = [o.op for o in run.steps[0].graph.ops if o.aclass is AtenClass.ATTENTION]
        assert attn and all(isinstance(a, PrefillAttention) and a.causal for a in attn)
        dec = [o.op for o in run.steps[5].graph.ops if o.aclass is AtenClass.ATTENTION]
        assert dec and all(isinstance(a, DecodeAttention) and a.kv_lens == (517,) * 4 for a in dec)


def test_rebuilt_ops_reproduce_the_recorded_simulation(runs: dict[str, RecordedTorchRun],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's ``simulated_s`` column was computed from the live trace with ``gpu_cost_fn`` (the ``torch``
    stack, launch included) at commit 41ea2d0 (README), when that stack costed SDPA with the family's own (FA3)
    attention constants and GEMMs ran in whole waves (no ``gemm_stream_k``); the ops rebuilt from the CSV, costed
    the same way, give the same times for GEMMs and attention (their ops come from the shapes alone)."""
    import csv
    import dataclasses

    import hwmodels.kernels as kernels
    from hwmodels.kernels import load_stack

    family = kernels.load_calibration
    monkeypatch.setattr(kernels, "load_calibration",
                        lambda f: dataclasses.replace(family(f), gemm_stream_k=False))
    gpu = load_gpu("h200-sxm-141gb")
    then = dataclasses.replace(load_stack("torch"), attention_kernel_by_family=(), attention_event_s=0.0,
                               attention_gap_s=0.0)   # no event latency on attention then either
    res = validate_steps(runs["1b"].steps[:2], gpu_cost_fn(gpu, then))  # type: ignore[arg-type]
    with (RUN_1B / "ops.csv").open() as fh:
        rec = list(csv.DictReader(line for line in fh if not line.startswith("#")))[:len(res.op_rows)]
    pairs = [(r["simulated_s"], float(o["simulated_s"])) for r, o in zip(res.op_rows, rec)
             if o["kind"] in ("gemm", "attn_prefill", "attn_decode")]
    assert len(pairs) == 2 * (16 * 5 + 1)
    assert all(a == pytest.approx(b, rel=1e-9) for a, b in pairs)


def test_from_dir_cli_json(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["validate", "torch", "--from", str(RUN_1B), "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(r.output.strip().splitlines()[-1])
    assert set(res) == {"n", "wape", "mape", "ops", "steps"} and res["n"] == 12474
    assert res["steps"]["decode"]["n"] == 32
    text = (tmp_path / "steps.csv").read_text()
    assert "# resimulated_from: " in text and "# gpu: NVIDIA H200" in text


def test_from_a_missing_or_broken_dir_is_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["validate", "torch", "--from", str(tmp_path)])
    assert r.exit_code == 2 and "ops.csv" in r.output
    (tmp_path / "ops.csv").write_text("# dtype: bf16\nphase,step\n")
    (tmp_path / "steps.csv").write_text("# dtype: bf16\nphase,step,context,measured_s\n")
    with pytest.raises(WorkloadError, match="missing column") as e:
        read_validate_torch(tmp_path)
    assert e.value.line == 2


def test_co_execution_by_hand() -> None:
    """Three ops, host 10 us each, gap 1 us: a 5 us kernel issued at 10 us ends at 15; a view (issued at 20);
    a 30 us kernel issued at 30 starts at max(30, 15 + 1) and ends at 60; the host is done at 30."""
    assert co_execute([(10e-6, 5e-6), (10e-6, 0.0), (10e-6, 30e-6)], 1e-6) == pytest.approx((60e-6, 30e-6, 35e-6))
    # device-bound: back-to-back kernels pay the gap
    assert co_execute([(1e-6, 50e-6), (1e-6, 50e-6)], 2e-6)[0] == pytest.approx(1e-6 + 50e-6 + 2e-6 + 50e-6)
    h = HostDispatch("x", 10e-6, 2e-6, 0.0)
    assert step_time(h, [False, True], [0.0, 1e-6]) == pytest.approx(13e-6)


def test_host_profile_refits_from_the_1b_run(runs: dict[str, RecordedTorchRun]) -> None:
    """``fitted_on`` of h200-xeon-torch2.11: with the measured device times, the co-executed 1B decode median
    and the 1B prefill reproduce the measured 8.28 ms and 10.10 ms at the committed constants (0.5 %)."""
    host = load_host("h200-xeon-torch2.11")
    steps = runs["1b"].steps

    def sim(st) -> float:  # type: ignore[no-untyped-def]
        return step_time(host, [o.costs for o in st.graph.ops], [m or 0.0 for m in st.op_seconds])

    dec_meas = statistics.median(s.step_seconds for s in steps if s.phase == "decode")
    assert statistics.median(sim(s) for s in steps if s.phase == "decode") == pytest.approx(dec_meas, rel=0.005)
    assert sim(steps[0]) == pytest.approx(steps[0].step_seconds, rel=0.005)
    assert host.view_s / host.launch_s == pytest.approx(0.2107, abs=0.001)


def test_8b_held_out_gemm_meets_the_target(scored: dict[str, TorchValidation]) -> None:
    """GEMMs (cuBLASLt through F.linear; the Hopper family constants, not fitted on any of this, stream-K
    scheduling): 8B 0.065 (held out), 1B 0.083, both meeting the target. Updated from 0.082 / 0.097 when the
    step's kernels were priced at the step's power-limited clock (CudaStepCost clock_context: the prefill GEMMs
    at m = 2048 run ~7 % faster between memory-bound kernels than alone, where the constants were measured);
    they still come out ~8 % (8B) / ~11 % (1B) slow in aggregate. 0.094 / 0.107 in whole waves of tiles."""
    g8, g1 = scored["8b"].per_kind["gemm"], scored["1b"].per_kind["gemm"]
    assert g8.wape <= TARGET and g8.wape == pytest.approx(0.065, abs=0.01)
    assert g1.wape <= TARGET and g1.wape == pytest.approx(0.083, abs=0.01)


def test_attention(scored: dict[str, TorchValidation]) -> None:
    """SDPA ran cuDNN's fused kernels (``_scaled_dot_product_cudnn_attention``): costed with the ``[attention_cudnn]``
    constants, which are kernel device time (fitted on kernel_times.csv's profiler times and the event-timed
    attention_cudnn.csv; these in-step calls held out), with cuDNN's own decode split rule. Prefill (4 x 512
    causal): 1B 0.004, 8B 0.026; decode (context 513-544): 1B 0.028, 8B 0.011, all within the target (decode 0.026 /
    0.070 while the p-norm hid the memory time of these 32-CTA grids, 8.85 us modelled against 9.5 us measured per
    8B call; below one CTA per SM it adds: attention.decode_overlap_p). Before (constants fitted on event times
    alone, a 3.35 us event latency subtracted): prefill 0.019 / 0.039, decode 0.319 / 0.129 (one launch constant for
    both phases made the shortest decodes slow)."""
    for key, pre, dec in (("1b", 0.004, 0.028), ("8b", 0.026, 0.011)):
        s = scored[key].per_kind
        assert s["attn_prefill"].wape == pytest.approx(pre, abs=0.01) and s["attn_prefill"].wape <= TARGET
        assert s["attn_decode"].wape == pytest.approx(dec, abs=0.01) and s["attn_decode"].wape <= TARGET


def test_steps(scored: dict[str, TorchValidation]) -> None:
    """Co-executed steps. 1B (fitted: the host constants): prefill 0.029, decode 0.016. 8B (held out):
    decode 0.036 (target met: 746 launches at 17.2 us + 900 views at 3.6 us against 16.3-18.4 ms measured);
    prefill 0.045. The prefills were 0.072 / 0.098 before their GEMMs were priced at the step's clock
    (clock_context; decode steps are unchanged: no kernel of theirs is power-limited alone); 0.143 for the 8B
    while the torch-step stack took the family's L2 credit and GEMMs ran in whole waves."""
    s1, s8 = scored["1b"].steps, scored["8b"].steps
    assert s1["decode"].wape == pytest.approx(0.016, abs=0.01)
    assert s1["prefill"].wape == pytest.approx(0.029, abs=0.01)
    assert s8["decode"].wape <= TARGET and s8["decode"].wape == pytest.approx(0.036, abs=0.01)
    assert s8["prefill"].wape <= TARGET and s8["prefill"].wape == pytest.approx(0.045, abs=0.01)


def test_memory_op_kinds(scored: dict[str, TorchValidation]) -> None:
    """The ``torch-step`` stack (fitted on the 1B, no L2 credit: ``benchmarks/fit_torch_step.py``) against the 8B
    (held out): norm 0.041, embedding 0.033, elementwise 0.090, activation 0.218, add 0.151, rope 0.224 (add 0.289
    and rope 0.252 with the family's L2 credit); with the ``torch`` stack and the launch they were 0.78, 0.49, 0.44,
    0.24, 0.80, 0.40 (result.json of the run)."""
    want = {"norm": 0.041, "embedding": 0.033, "elementwise": 0.090, "activation": 0.218, "add": 0.151,
            "rope": 0.224}
    got = scored["8b"].per_kind
    for kind, w in want.items():
        assert got[kind].wape == pytest.approx(w, abs=0.01), kind


def test_collect_cuda_eager_steps_held_out(runs: dict[str, RecordedTorchRun]) -> None:
    """validation/measured/h200/steps.csv, eager rows (1B/3B/8B, batch 1-128; held out): decode 0.189 (was
    0.595 as kernels alone), prefill 0.076 (0.054 before the kernels were priced at the step's clock: the large
    prefills, 3B/8B at 4 x 2048 and 16 x 512, went from -3..+5 % to -3..-7 %: their unfused memory-bound kernels,
    a third of the step, raise the modelled clock above the GEMMs' own; the small ones moved toward the
    measurement; 0.080 as kernels alone with the ``torch`` stack; 0.111 while torch-step took the L2 credit, which
    made the large prefills' memory-bound ops slow). The decode miss is host noise: the same 3B module's decode
    took 12.6-21.9 ms across configurations whose GPU work is 3-7 ms; the model gives 14.3 ms for all."""
    cost = CudaStepCost(load_gpu("h200-sxm-141gb"))
    ops = runs["1b"].steps[1].graph.ops
    vpl = views_per_launch(ops)
    f = read_measured("xpusim-steps", H200 / "steps.csv")
    from workloads.accuracy import ErrorStats

    for name, want in (("decode.eager", 0.189), ("prefill.eager", 0.076)):
        recs = [r for r in f.records if r.op == name]
        st = ErrorStats.from_pairs([cost.kernels_step_time(r.ops, vpl) for r in recs], [r.seconds for r in recs])
        assert st.n == 18 and st.wape == pytest.approx(want, abs=0.01), name


def test_unknown_host_profile_is_a_config_error() -> None:
    from workloads.errors import ConfigError

    with pytest.raises(ConfigError, match="h200-xeon-torch2.11"):
        load_host("no-such-host")
    assert dataclasses.is_dataclass(load_host("h200-xeon-torch2.11"))


def test_torch_step_takes_no_l2_credit() -> None:
    """``l2_credit = false`` (torch-step): a residual add moves its bytes at one rate whether they fit in half the
    L2 (12 MiB of a 60 MiB L2) or not (48 MiB): the body per byte is equal. The ``torch`` stack keeps the
    family's credit (Hopper ``l2_bw_mult`` = 2): the small add is faster per byte by more than 30 %.
    A non-boolean value is a ConfigError naming the key."""
    from hwmodels.kernels import GPUKernelModel
    from hwmodels.kernels.stack import parse_stack
    from workloads.errors import ConfigError
    from workloads.ops import MemoryOp, OpKind

    gpu = load_gpu("h200-sxm-141gb")

    def body_per_byte(stack: str, nbytes: int) -> float:
        op = MemoryOp("add", OpKind.ADD, 4096, nbytes * 2 // 3, nbytes // 3, 0.0)
        t, bd = GPUKernelModel(gpu, stack=stack).cost(op)
        return bd["memory_s"] / nbytes

    small, large = 12 * 2**20, 48 * 2**20
    assert body_per_byte("torch-step", small) == pytest.approx(body_per_byte("torch-step", large), rel=1e-9)
    assert body_per_byte("torch", small) < 0.7 * body_per_byte("torch", large)
    with pytest.raises(ConfigError, match="l2_credit"):
        parse_stack({"extends": "torch", "stack": {"l2_credit": "no"}}, file="x.toml", name="x")
