"""hwmodels/power.py: board power and the sustained clock under a power limit (docs/power.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hwmodels.engine import EngineProfile, EngineStepTimeModel, load_engine, parse_engines
from hwmodels.gpu import load_gpu
from hwmodels.machines import capped_gpu
from hwmodels.power import (
    Phase,
    cap_clock_ratio,
    dense_phase,
    gpu_power,
    load_power,
    parse_power,
    power_at,
    sustained_clock,
)
from hwmodels.step import StepTimeModel
from workloads.catalog import load_model
from workloads.errors import ConfigError
from workloads.llm_ops import Batch

ROOT = Path(__file__).resolve().parents[1]
H100_KT = ROOT / "validation" / "measured" / "h100" / "kernel_times.csv"


def test_clock_is_max_when_under_the_limit() -> None:
    """A phase drawing idle + clock domain + a trickle of work is far under 700 W: f = f_max (1980 MHz)."""
    g = load_gpu("h100-sxm-80gb")
    s = sustained_clock(g, Phase(flops=1e9, dram_bytes=1e9, t_compute=0.5, t_other=0.5))
    assert s.clock_frac == 1.0 and s.slowdown == 1.0
    assert s.clock_hz == pytest.approx(1980e6, rel=1e-4)
    assert s.power_w < g.tdp_w


def test_power_rises_with_clock_and_clock_is_monotone_in_the_cap() -> None:
    g = load_gpu("h100-sxm-80gb")
    cal, ph = gpu_power(g), dense_phase(g)
    ps = [power_at(cal, ph, x / 20) for x in range(4, 21)]
    assert ps == sorted(ps)
    clocks = [sustained_clock(g, ph, g.tdp_w * c / 10).clock_frac for c in range(3, 11)]
    assert clocks == sorted(clocks) and clocks[0] < clocks[-1]
    for c in (0.5, 0.7, 0.9, 1.0):   # the limit is met exactly where the clock is between floor and max
        s = sustained_clock(g, ph, g.tdp_w * c)
        assert s.power_w == pytest.approx(g.tdp_w * c, rel=1e-4)


def test_capped_h100_slows_prefill_not_decode() -> None:
    """Splitwise (Patel et al., ISCA 2024) measured on H100 under a 70 % cap: the prompt phase slows, the token
    phase barely. The capped clock ratio is the model's (0.871 for a dense GEMM phase; P ~ f^3 alone gave
    0.888): a 4096-token Llama-2-70B prefill at TP8 slows by more than 3 % and at most 1/ratio; a decode
    step by under 2 %."""
    g = load_gpu("h100-sxm-80gb")
    r = cap_clock_ratio(g, 0.7)
    assert 0.8 < r < 0.7 ** (1 / 3)
    m70 = load_model("llama-2-70b")
    full, cap = StepTimeModel(m70, g, 8), StepTimeModel(m70, capped_gpu(g, 0.7), 8)
    b = Batch(prefill=((4096, 4096),))
    pre = cap.iteration_time(b) / full.iteration_time(b)
    dec = float(cap.decode_times([1000] * 8, 1)[0] / full.decode_times([1000] * 8, 1)[0])
    assert 1.03 < pre <= 1 / r + 1e-9
    assert dec < 1.02


def test_engine_power_off_by_default_is_bit_identical() -> None:
    """The default engine has no power_limit: its step times are the plain step model's, unchanged."""
    eng = load_engine("vllm")
    assert eng.power_limit is None
    m, g = load_model("llama-3.1-8b"), load_gpu("h100-sxm-80gb")
    s = EngineStepTimeModel(m, g, 1, engine=eng)
    ref = StepTimeModel(m, g, 1)
    ref.kernels = s.kernels
    assert s.power_cal is None
    assert s.batch_time(((2048, 2048),), (), 2048, 1) == ref.batch_time(((2048, 2048),), (), 2048, 1)


def test_engine_power_limit_slows_a_prefill_that_would_exceed_it() -> None:
    """A tight limit (30 % of TDP) on an 8192-token Llama-3.1-8B prefill: the clock drops, the step is
    longer, its power sits at the limit; a loose one (150 %) leaves the step as the plain model's."""
    m, g = load_model("llama-3.1-8b"), load_gpu("a100-sxm-80gb")
    args = (((8192, 8192),), (), 8192, 1)
    free = EngineStepTimeModel(m, g, 1, engine=EngineProfile("t", "vllm", 0.0, 0.0)).batch_time(*args)
    tight = EngineStepTimeModel(m, g, 1, engine=EngineProfile("t", "vllm", 0.0, 0.0, power_limit=0.3))
    loose = EngineStepTimeModel(m, g, 1, engine=EngineProfile("t", "vllm", 0.0, 0.0, power_limit=1.5))
    s = tight.sustained(*args)
    assert s.clock_frac < 1.0 and tight.batch_time(*args) > free
    assert s.power_w == pytest.approx(0.3 * g.tdp_w, rel=1e-4)
    assert loose.batch_time(*args) == pytest.approx(free, rel=1e-12)


def test_h100_gate_up_clock_held_out() -> None:
    """Held out: nvidia-smi read 1500 MHz under the 8B gate_up GEMM at m = 2048 on our H100
    (validation/measured/h100/kernel_times.csv); the model (constants from our H200 run) says 1553 MHz.
    At m = 8192 the file's one sample reads 1230 MHz while the GEMM's own time needs >= 1374 MHz at the
    tensor peak: the model's 1559 MHz is reported in docs/power.md, not asserted."""
    if not H100_KT.exists():
        pytest.skip("kernel_times.csv absent")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from fit_power import h100_check
    finally:
        sys.path.pop(0)
    rows = {r["gemm"]: r for r in h100_check()}
    r = rows["llama-3.1-8b.gate_up m=2048"]
    assert r["measured_clock_mhz"] == 1500.0
    assert abs(float(r["clock_err"])) <= 0.05  # type: ignore[arg-type]


def test_power_tables_load() -> None:
    assert load_power("ada") is None
    with pytest.raises(ConfigError):
        gpu_power(load_gpu("rtx-4090"))
    h = load_power("hopper")
    assert h is not None and h.idle_w == 80.5 and h.reference_tdp_w == 700


GOOD: dict[str, object] = {"idle_w": 80, "clock_w": 40, "tensor_pj_per_flop": 1.0, "dram_pj_per_byte": 80,
                           "v_intercept": 0.0, "max_clock_ratio": 1.0, "min_clock_frac": 0.2, "reference_tdp_w": 700}


@pytest.mark.parametrize("key,value", [("v_intercept", 1.0), ("v_intercept", -0.1), ("min_clock_frac", 0.0),
                                       ("max_clock_ratio", 0.9), ("idle_w", -5), ("tensor_pj_per_flop", "a"),
                                       ("idle_w", None), ("bogus_w", 3)])
def test_bad_power_values_name_file_and_key(key: str, value: object) -> None:
    t = dict(GOOD)
    if value is None:
        del t[key]
    else:
        t[key] = value
    with pytest.raises(ConfigError) as e:
        parse_power(t, file="hopper.toml", family="hopper")
    msg = str(e.value)
    assert "hopper.toml" in msg and key in msg


def test_bad_engine_power_limit() -> None:
    with pytest.raises(ConfigError) as e:
        parse_engines({"x": {"stack": "vllm", "host_op_us": 0, "iteration_us": 0, "power_limit": 2.0}},
                      file="engines.toml")
    assert "x.power_limit" in str(e.value) and "engines.toml" in str(e.value)
