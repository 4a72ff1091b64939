"""The kernel model on xpusim's own H200 measurements (``validation/measured/h200/``, provenance there).

Targets (issue 4, CUDA): GEMM and attention wape <= 0.10, end-to-end steps <= 0.10. What the model
reaches (``python benchmarks/accuracy.py``; docs/accuracy.md): GEMM file 0.061 (not fitted: the Hopper
GEMM constants are derived from published figures), attention 0.045 (the ``[attention_fa2]`` table is
fitted on this file; the ``[attention_cudnn]`` table on attention_cudnn.csv, 0.037), CUDA-graph decode
steps 0.038 and device-bound eager prefill steps 0.087 (held out:
no step was used in any fit). Each test asserts the target, and the figure reached within 0.01 so that
a regression shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hwmodels.gpu import load_gpu
from hwmodels.kernels import GPUKernelModel, load_stack
from hwmodels.kernels.attention_calibration import AttnKernel, load_attention_calibration
from hwmodels.validate_ops import stack_for, validate_ops
from workloads.errors import ConfigError, WorkloadError
from workloads.measured import read_measured

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "measured" / "h200"
FILES = {"xpusim-gemm": "gemm.csv", "xpusim-attention": "attention.csv", "xpusim-memory-ops": "memory_ops.csv",
         "xpusim-steps": "steps.csv"}
CUDA_TARGET = 0.10


@pytest.fixture(scope="module")
def results() -> dict:
    gpu = load_gpu("h200-sxm-141gb")
    return {fmt: validate_ops(read_measured(fmt, H200 / name), gpu) for fmt, name in FILES.items()}


def test_formats_read_every_row() -> None:
    """Row counts of the committed CSVs (``wc -l`` minus the header): 588 GEMMs (none failed), 333
    SDPA calls, 210 memory-op rows of which the 105 behind the L2 flush are kernel times, 54 steps."""
    counts = {fmt: read_measured(fmt, H200 / name) for fmt, name in FILES.items()}
    assert len(counts["xpusim-gemm"].records) == 588
    assert len(counts["xpusim-attention"].records) == 333
    mem = counts["xpusim-memory-ops"]
    assert len(mem.records) == 105 and sum(n for _, n in mem.skipped) == 105
    assert len(counts["xpusim-steps"].records) == 54
    assert {r.op for r in counts["xpusim-steps"].records} == {"prefill.eager", "decode.eager", "decode.cuda_graph"}


def test_formats_run_under_pytorch_stacks() -> None:
    assert stack_for("xpusim-gemm") == stack_for("xpusim-memory-ops") == stack_for("xpusim-steps") == "torch"
    flash = load_stack(stack_for("xpusim-attention"))
    assert flash.attention_kernel == "fa2"      # SDPA's flash backend is FlashAttention-2, on Hopper too
    assert flash.ops == load_stack("torch").ops  # extends torch: only the attention kernel differs
    h200 = load_gpu("h200-sxm-141gb")
    assert GPUKernelModel(h200, stack="torch-flash").attn.kernel is AttnKernel.FA2
    # PyTorch's default SDPA dispatch runs cuDNN's kernels on Hopper (every SDPA call of our H200 runs)
    assert GPUKernelModel(h200, stack="torch").attn.kernel is AttnKernel.CUDNN
    assert GPUKernelModel(h200, stack="torch-step").attn.kernel is AttnKernel.CUDNN
    assert GPUKernelModel(h200, stack="vllm").attn.kernel is AttnKernel.FA3    # the family's own
    assert GPUKernelModel(load_gpu("a100-sxm-80gb"), stack="torch").attn == load_attention_calibration("ampere")
    # H100 takes the same family constants through its own spec
    assert GPUKernelModel(load_gpu("h100-sxm-80gb"), stack="torch-flash").attn is load_attention_calibration(
        "hopper", "fa2")


def test_family_without_the_kernel_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="attention_fa3"):
        load_attention_calibration("ampere", "fa3")
    with pytest.raises(ConfigError, match="attention_cudnn"):
        load_attention_calibration("ampere", "cudnn")


def test_stack_attention_kernel_per_family(tmp_path: Path) -> None:
    """``attention_kernel`` is one name or a {family: name} table; a bad name is a ConfigError naming the key."""
    from hwmodels.kernels.stack import ATTENTION_KERNELS

    assert set(ATTENTION_KERNELS) == {k.value for k in AttnKernel}
    torch = load_stack("torch")
    assert torch.attention_kernel_for("hopper") == "cudnn" and torch.attention_kernel_for("ampere") is None
    p = tmp_path / "s.toml"
    p.write_text('extends = "torch"\n[stack]\nattention_kernel = { hopper = "fa4" }\n')
    with pytest.raises(ConfigError, match="stack.attention_kernel.hopper"):
        load_stack(str(p))


def test_cudnn_attention_file_meets_the_cuda_target() -> None:
    """attention_cudnn.csv (SDPA with cuDNN's backend first, CUDA-event timed; [attention_cudnn] is fitted on it
    and on kernel_times.csv, in-sample): prefill wape 0.040, decode 0.068 (0.067 before a cuDNN grid below one CTA
    per SM added its memory time, attention.decode_overlap_p) under the torch stack, which adds the
    event latency to the kernel-time constants (the event-only fit had 0.039 / 0.034 and missed the in-step decodes;
    the family's FA3 constants gave 0.203 / 0.228)."""
    r = validate_ops(read_measured("xpusim-attention", H200 / "attention_cudnn.csv"), load_gpu("h200-sxm-141gb"),
                     stack="torch")
    assert r.overall.wape <= CUDA_TARGET
    assert r.per_op["attn_prefill"].wape == pytest.approx(0.040, abs=0.01)
    assert r.per_op["attn_decode"].wape == pytest.approx(0.068, abs=0.01)


def test_kernel_times_file() -> None:
    """kernel_times.csv (collect_cuda.py --sections kernel_times): each SDPA call scored against the profiler's device
    time of its kernels, with the constants of the backend that ran (the row names it): cuDNN decode wape 0.065
    (0.066 before attention.decode_overlap_p), prefill 0.033 (fitted on these rows and attention_cudnn.csv); flash
    decode 0.068 (0.078 before a split call's first KV tile ran serially; 0.121 before an unsplit decode ran FA2's
    forward kernel; the decode constants refitted on these rows and attention.csv's each time), prefill 0.052 (the
    event-fitted [attention_fa2] restated as kernel time).
    The event latency the `torch` stack adds is what the same file measures: event minus kernel time."""
    r = validate_ops(read_measured("xpusim-kernel-times", H200 / "kernel_times.csv"), load_gpu("h200-sxm-141gb"))
    assert r.stack == "torch-step"
    figures = {"attn_decode.cudnn": 0.065, "attn_prefill.cudnn": 0.033, "attn_decode.fa2": 0.068,
               "attn_prefill.fa2": 0.052}
    for op, w in figures.items():
        assert r.per_op[op].n == (32 if "decode" in op else 10)
        assert r.per_op[op].wape == pytest.approx(w, abs=0.01)
    for op in figures:
        assert r.per_op[op].wape <= CUDA_TARGET
    import csv
    import statistics
    with (H200 / "kernel_times.csv").open() as fh:
        rows = [x for x in csv.DictReader(fh) if x["kind"] == "attn_decode.cudnn_attention"]
    gap = {n: statistics.median(float(x["event_flushed_s"]) - float(x["kernel_s"]) for x in rows
                                if x["kernels"] == n) for n in ("1", "2")}
    stack = load_stack("torch")
    assert stack.attention_event_s == pytest.approx(gap["1"], abs=0.3e-6)
    assert stack.attention_event_s + stack.attention_gap_s == pytest.approx(gap["2"], abs=0.3e-6)


def test_bad_rows_name_the_file_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "gemm.csv"
    p.write_text("label,dtype,m,n,k,time_s\nx,int4,1,2,3,1e-6\n")
    with pytest.raises(WorkloadError, match="unknown dtype") as e:
        read_measured("xpusim-gemm", p)
    assert e.value.line == 2 and e.value.column == "dtype"
    p.write_text("phase,batch,q_len,kv_len,q_heads,kv_heads,head_dim,causal,time_s\ndecode,1,2,8,4,2,64,0,1e-6\n")
    with pytest.raises(WorkloadError, match="one query token"):
        read_measured("xpusim-attention", p)
    p.write_text("op,tokens,hidden,l2_flushed\n")
    with pytest.raises(WorkloadError, match="time_s"):
        read_measured("xpusim-memory-ops", p)


def test_gemm_meets_the_cuda_target(results: dict) -> None:
    """588 bf16 F.linear / fp8 _scaled_mm GEMMs, m = 1..16384: wape 0.061 (bf16 0.044, fp8 0.090; 0.064 with whole
    waves of tiles instead of Hopper's stream-K scheduling, ``gemm_stream_k``)."""
    r = results["xpusim-gemm"]
    assert r.overall.wape <= CUDA_TARGET
    assert r.overall.wape == pytest.approx(0.061, abs=0.01)
    assert r.per_op["gemm_bf16"].wape <= CUDA_TARGET and r.per_op["gemm_fp8"].wape <= CUDA_TARGET


def test_attention_meets_the_cuda_target(results: dict) -> None:
    """SDPA flash (FA2): file wape 0.045; prefill 0.036, decode 0.063 (in-sample: [attention_fa2] is fitted here;
    0.061 before a split call's first KV tile ran serially; 0.054 / decode 0.093 before an unsplit decode ran FA2's
    forward kernel, hopper.toml)."""
    r = results["xpusim-attention"]
    assert r.overall.wape <= CUDA_TARGET
    assert r.overall.wape == pytest.approx(0.045, abs=0.01)
    for op in ("attn_prefill", "attn_decode"):
        assert r.per_op[op].wape <= CUDA_TARGET


def test_cuda_graph_decode_steps_meet_the_end_to_end_target(results: dict) -> None:
    """Whole decode steps of the built-in 1B/3B/8B modules replayed from a CUDA graph (18 rows, batch
    1-128, context 513-2049; held out): wape 0.038 (0.045 with whole GEMM waves, 0.059 with cuDNN's decode costed by
    the FA3 constants),
    every step within 14 %."""
    r = results["xpusim-steps"]
    s = r.per_op["decode.cuda_graph"]
    assert s.n == 18 and s.wape <= CUDA_TARGET
    assert s.wape == pytest.approx(0.038, abs=0.01)
    assert s.max_ape <= 0.14


def test_eager_steps(results: dict) -> None:
    """Eager prefill steps (held out): wape 0.087, carried by the device-bound large ones. Eager decode
    steps are bound by Python's launch rate (the 1B decode takes 7-10 ms eager, 1.7-3.0 ms from a CUDA
    graph): out of the kernel model's scope, so every one measures slower than the kernels it runs."""
    r = results["xpusim-steps"]
    assert r.per_op["prefill.eager"].wape <= CUDA_TARGET
    eager = [p for p in r.points if p.op == "decode.eager"]
    assert len(eager) == 18 and all(p.simulated_s < p.measured_s for p in eager)


def test_accuracy_report_writes_its_table(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import accuracy

    rows = accuracy.kit_ops(tmp_path / "no-shared-data")
    # attention_cudnn.csv under the torch stack (KIT_FILES' per-file stack: PyTorch's default SDPA on Hopper)
    # the same kit on both GPUs (the H100's files are held out)
    assert {r["source"] for r in rows} == {f"validation/measured/{gpu}/{n}" for gpu in ("h200", "h100")
                                           for n in (*FILES.values(), "attention_cudnn.csv", "kernel_times.csv")}
    cudnn = [r for r in rows if r["source"] == "validation/measured/h200/attention_cudnn.csv"
             and "all rows" in r["compared"]]
    assert len(cudnn) == 1 and "stack torch" in cudnn[0]["compared"]
    assert cudnn[0]["wape"] == pytest.approx(0.049, abs=0.01) and cudnn[0]["wape"] <= CUDA_TARGET
    from xpusim.report import atomic_write_text  # what accuracy.main writes with

    atomic_write_text(tmp_path / "r.json", json.dumps(rows))
    atomic_write_text(tmp_path / "r.md", accuracy.markdown(rows))
    assert json.loads((tmp_path / "r.json").read_text()) == rows
    assert "| validation/measured/h200/gemm.csv | h200-sxm-141gb |" in (tmp_path / "r.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]   # no temporary files left


def test_hopper_gemms_schedule_stream_k() -> None:
    """gemm.csv: bf16 768 x 3072 x 2048 took 18.6 us. Its best tile, 128 x 128, makes 6 x 24 = 144 tiles on 132
    SMs: in whole waves the busiest SM runs two tiles' K loops (2 x 64 iterations of bk = 32); stream-K (Hopper,
    ``gemm_stream_k``) spreads the 144 x 64 K iterations, 70 per SM (ceil(9216 / 132)) against 128, so the kernel
    is faster and closer to the measurement (18.7 us against 29.5 in whole waves).
    Ampere keeps whole waves. A non-boolean value is a ConfigError naming the key."""
    import dataclasses

    from hwmodels.kernels import load_calibration
    from hwmodels.kernels.calibration import parse_calibration
    from workloads.ops import DType, Gemm
    from workloads.specfile import read_toml

    gpu = load_gpu("h200-sxm-141gb")
    cal = load_calibration("hopper")
    assert cal.gemm_stream_k and not load_calibration("ampere").gemm_stream_k
    op = Gemm("qkv", 768, 3072, 2048, DType.BF16)
    streamed = GPUKernelModel(gpu, cal, "torch").time(op)
    waves = GPUKernelModel(gpu, dataclasses.replace(cal, gemm_stream_k=False), "torch").time(op)
    assert abs(streamed - 18.6e-6) < abs(waves - 18.6e-6) and streamed < 0.7 * waves
    data = read_toml(ROOT / "hwmodels" / "calibration" / "hopper.toml")
    data["kernels"]["gemm_stream_k"] = 1
    with pytest.raises(ConfigError, match="gemm_stream_k"):
        parse_calibration(data, file="hopper.toml", family="hopper")
