"""A kernel's SM clock in the context of an eager step (``CudaStepCost(clock_context=...)``,
:func:`hwmodels.power.context_scales`).

Physics: the power controller holds the board at its limit over tens of milliseconds. A big GEMM run alone, back
to back, sustains its own clock (the Hopper ``[power]`` table gives ~1556 MHz for the 8B gate_up at m = 2048 on
an H100, measured 1455-1500 MHz in validation/measured/h100/kernel_times.csv); inside a step, memory-bound kernels
and host gaps lower the mean power, so the clock and the GEMM's speed rise. Figures are derived here from the
family's ``[power]`` table and the kernel model, or measured on the committed runs (docs/accuracy.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hwmodels.gpu import load_gpu
from hwmodels.power import Phase, context_scales, gpu_power, sustained_clock
from hwmodels.validate_torch import CudaStepCost, validate_steps
from workloads.ops import Gemm, MemoryOp, OpKind

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "validation" / "measured" / "h100"
GATE_UP = Gemm("gate_up", 2048, 28672, 4096)  # Llama-3.1-8B's gate_up at 4 x 512 tokens


@pytest.fixture(scope="module")
def cost() -> CudaStepCost:
    return CudaStepCost(load_gpu("h100-sxm-80gb"))


def _priced(cost: CudaStepCost, op: Gemm) -> tuple[float, Phase]:
    t, bd = cost.model.cost(op)
    return t, cost.kernel_phase(op, t, bd)


def test_gemm_phase_is_its_compute_term(cost: CudaStepCost) -> None:
    """A compute-bound GEMM's clock-bound seconds are the kernel model's ``compute_s`` (gemm.py: t = compute +
    loss x memory + launch); its FLOPs 2mnk; alone it is power-limited well below f_max (1980 MHz)."""
    t, ph = _priced(cost, GATE_UP)
    _, bd = cost.model.cost(GATE_UP)
    assert ph.t_compute == bd["compute_s"] and ph.t_compute + ph.t_other == pytest.approx(t, rel=1e-12)
    assert ph.flops == 2.0 * 2048 * 28672 * 4096
    alone = sustained_clock(cost.model.gpu, ph, cal=cost.power)
    assert 0.7 < alone.clock_frac < 0.85 and alone.power_w == pytest.approx(700.0, abs=0.1)


def test_gemm_only_step_equals_the_isolated_context(cost: CudaStepCost) -> None:
    """A step of the same GEMM back to back, no idle time: its power and clock are the GEMM's alone (a sum of
    equal phases has the same FLOP and byte rates), so the factor is 1 and each GEMM keeps its time."""
    t, ph = _priced(cost, GATE_UP)
    scales, step = context_scales(cost.model.gpu, [ph] * 32, 0.0, cal=cost.power)
    alone = sustained_clock(cost.model.gpu, ph, cal=cost.power).clock_frac
    assert step.clock_frac == pytest.approx(alone, abs=1e-5)
    assert all(f == pytest.approx(1.0, abs=1e-5) for f in scales)
    assert cost.in_context([(t, ph)] * 32, 0.0) == pytest.approx([t] * 32, rel=1e-5)


def test_memory_bound_kernels_raise_the_clock(cost: CudaStepCost) -> None:
    """The GEMM between memory-bound kernels (a residual add's DRAM traffic, not clock-bound) of as many seconds:
    the step draws less than the GEMM alone, its clock is higher, and the GEMM's clock-bound seconds shrink by
    x_gemm / x_step; the memory-bound kernel keeps its time."""
    t, ph = _priced(cost, GATE_UP)
    add = MemoryOp("add", OpKind.ADD, 2048, 2.0 * 3.3e12 * t / 3, 3.3e12 * t / 3)   # ~3.3 TB/s for t seconds
    ta, bda = cost.model.cost(add)
    ph_add = cost.kernel_phase(add, ta, bda)
    assert ph_add.t_compute == 0.0 and ph_add.flops == 0.0
    scales, step = context_scales(cost.model.gpu, [ph, ph_add], 0.0, cal=cost.power)
    alone = sustained_clock(cost.model.gpu, ph, cal=cost.power).clock_frac
    assert step.clock_frac > alone + 0.02
    assert scales[0] == pytest.approx(max(alone / step.clock_frac, 1 / cost.power.max_clock_ratio), rel=1e-9)
    got = cost.in_context([(t, ph), (ta, ph_add)], 0.0)
    assert got[0] < t and got[1] == ta


def test_no_kernel_faster_than_the_clock_cap(cost: CudaStepCost) -> None:
    """Host gaps so long that the step runs at f_max: the GEMM's raw factor x_gemm / 1 (~0.79) is below
    1 / max_clock_ratio (1830 / 1980 MHz = 0.924), so the cap holds: its clock-bound seconds shrink by 0.924."""
    t, ph = _priced(cost, GATE_UP)
    cap = 1.0 / gpu_power(cost.model.gpu).max_clock_ratio
    scales, step = context_scales(cost.model.gpu, [ph], 1.0, cal=cost.power)
    assert step.clock_frac == 1.0 and scales == [pytest.approx(cap, rel=1e-12)]
    (got,) = cost.in_context([(t, ph)], 1.0)
    assert got == pytest.approx(ph.t_other + ph.t_compute * cap, rel=1e-12)
    assert got >= ph.t_other + ph.t_compute / gpu_power(cost.model.gpu).max_clock_ratio * (1 - 1e-12)


def test_kernels_not_power_limited_alone_are_unchanged(cost: CudaStepCost) -> None:
    """A small GEMM (decode, m = 4) is far under the limit alone (x_k = 1): unchanged whether the step runs at
    f_max or power-limited (only a speed-up is applied: CudaStepCost's docstring)."""
    small = Gemm("qkv", 4, 6144, 4096)
    t, ph = _priced(cost, small)
    assert sustained_clock(cost.model.gpu, ph, cal=cost.power).clock_frac == 1.0
    big_t, big = _priced(cost, GATE_UP)
    assert cost.in_context([(t, ph)], 0.0) == [t]
    assert cost.in_context([(big_t, big)] * 8 + [(t, ph)], 0.0)[-1] == t


def test_decode_steps_and_ampere_are_unchanged() -> None:
    """A committed decode step (no kernel power-limited alone) costs exactly what the kernels cost alone; an
    Ampere GPU takes no clock context (its kernel constants come from short microbenchmarks)."""
    from workloads.measured_xpusim import read_validate_torch

    run_dir = H100 / "validate_torch_llama-3.2-1b"
    if not run_dir.is_dir():
        pytest.skip("committed H100 run absent")
    st = read_validate_torch(run_dir).steps[5]
    assert st.phase == "decode"
    ctx = CudaStepCost(load_gpu("h100-sxm-80gb"))
    assert ctx.step_costs(st.graph.ops) == [ctx(o) for o in st.graph.ops]
    a100 = CudaStepCost(load_gpu("a100-sxm-80gb"))
    assert not a100.clock_context
    assert a100.step_costs(st.graph.ops) == [a100(o) for o in st.graph.ops]


def test_h100_qwen3_prefill_in_context() -> None:
    """validation/measured/h100/validate_torch_qwen3-8b (third lease; a model never measured before, held out):
    prefill step wape 0.015 in context (simulated 56.3 ms, measured 55.5 ms), 0.070 without; its GEMMs 0.037
    (0.051 without); attention and decode unchanged."""
    from workloads.measured_xpusim import read_validate_torch

    run_dir = H100 / "validate_torch_qwen3-8b"
    if not run_dir.is_dir():
        pytest.skip("committed H100 run absent")
    steps = read_validate_torch(run_dir).steps
    gpu = load_gpu("h100-sxm-80gb")
    on = validate_steps(steps, CudaStepCost(gpu))
    off = validate_steps(steps, CudaStepCost(gpu, clock_context=False))
    assert on.steps["prefill"].wape == pytest.approx(0.015, abs=0.005)
    assert off.steps["prefill"].wape == pytest.approx(0.070, abs=0.005)
    assert on.per_kind["gemm"].wape == pytest.approx(0.037, abs=0.005)
    assert off.per_kind["gemm"].wape == pytest.approx(0.051, abs=0.005)
    assert on.per_kind["attn_prefill"].wape == off.per_kind["attn_prefill"].wape
    assert on.steps["decode"].wape == off.steps["decode"].wape


def test_cli_no_clock_context(tmp_path: Path) -> None:
    """``validate torch --from DIR --no-clock-context`` re-scores as before; the --out provenance says which."""
    import json

    from click.testing import CliRunner

    from xpusim.cli import cli

    run_dir = H100 / "validate_torch_qwen3-8b"
    if not run_dir.is_dir():
        pytest.skip("committed H100 run absent")
    r = CliRunner().invoke(cli, ["validate", "torch", "--from", str(run_dir), "--json", "--no-clock-context",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["steps"]["prefill"]["wape"] == pytest.approx(0.070, abs=0.005)
    assert "# clock_context: False" in (tmp_path / "steps.csv").read_text()
