"""splitwise-perf validation: SplitwiseSim's measured perf_model_a100.csv (Patel et al., Splitwise, ISCA 2024).

The figures below are those the fitted profile reaches (benchmarks/fit_splitwise.py; the stack and engine
files record them): prompt_time 0.0895 and token_time 0.0561 in-sample, both under the issue's target
(WAPE <= 0.10), with the engine's per-iteration host term quadratic in the prefill tokens and its 8,192-token
iteration cap (hwmodels/engine.py); the peak power the model predicts is scored too (not fitted on it as a whole).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwmodels.engine import EngineProfile, launched_ops, load_engine
from hwmodels.gpu import load_gpu
from workloads.catalog import load_model
from workloads.errors import ConfigError, WorkloadError
from workloads.measured_splitwise import read_splitwise_perf
from xpusim.cli import cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured" / "splitwise" / "perf_model_a100.csv"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present")


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    if not DATA.exists():
        pytest.skip("../shared/data not present")
    from sim.splitwise_perf import validate_splitwise_perf

    return validate_splitwise_perf(read_splitwise_perf(DATA), load_gpu("a100-sxm-80gb"))


@needs_data
def test_token_time_meets_target(result) -> None:  # type: ignore[no-untyped-def]
    assert result.columns["token_time"].wape <= 0.10
    for g, cols in result.groups.items():   # every TP / model, not only the pooled figure
        assert cols["token_time"].wape <= 0.10, g


@needs_data
def test_prompt_time_meets_target(result) -> None:  # type: ignore[no-untyped-def]
    assert result.columns["prompt_time"].wape <= 0.10
    for g, cols in result.groups.items():
        assert cols["prompt_time"].wape <= 0.10, g


@needs_data
def test_figures_as_fitted(result) -> None:  # type: ignore[no-untyped-def]
    """0.0895 / 0.0561 in-sample (benchmarks/fit_splitwise.py prints them); 0.01 of slack for float noise only."""
    assert result.columns["prompt_time"].wape == pytest.approx(0.0895, abs=0.01)
    assert result.columns["token_time"].wape == pytest.approx(0.0561, abs=0.01)


@needs_data
def test_peak_power_as_reached(result) -> None:  # type: ignore[no-untyped-def]
    """Predicted peak power (prefill iteration at its sustained clock, or a decode step) against the file's
    peak_power x 400 W on the 260 rows that record it: WAPE 0.123 (docs/power.md; 0.300 when the fit's
    gemm_eff 0.50 kept the prompt phase's draw low); and never above the 400 W limit the engine holds the
    prefill under, beyond a decode step's draw."""
    assert result.power is not None and result.power.n == 260
    assert result.power.wape == pytest.approx(0.123, abs=0.01)
    assert max(p.peak_power_w for p in result.points) <= 400.0 + 1e-6


@needs_data
def test_rows_that_do_not_fit_are_skipped(result) -> None:  # type: ignore[no-untyped-def]
    """420 rows: llama2-70b TP2 batch 64 x 640 tokens needs 40,960 KV tokens, the memory model leaves
    24,672 (5 repeats skipped); every other row is scored."""
    assert sum(result.skipped.values()) == 5
    assert result.columns["prompt_time"].n == result.columns["token_time"].n == 415


def test_host_floor_binds_decode_only_when_gpu_is_faster() -> None:
    """max(gpu, ops x host_op): with a host cost of 1 s per op the decode step is exactly the floor."""
    from hwmodels.engine import EngineStepTimeModel

    m, g = load_model("llama-2-7b"), load_gpu("a100-sxm-80gb")
    eng = EngineProfile("t", "vllm", 1.0, 0.0)
    s = EngineStepTimeModel(m, g, 1, engine=eng)
    assert s.decode_times([100], 3).tolist() == [float(launched_ops(m, 1))] * 3
    free = EngineStepTimeModel(m, g, 1, engine=EngineProfile("t", "vllm", 0.0, 0.0))
    assert free.decode_times([100], 3)[0] < 1.0


def test_isolated_prefill_iterations_and_quadratic_host_term() -> None:
    """``isolated``: a batch of whole prompts is prefilled in ceil(batch / (cap // prompt)) iterations, each
    paying ``iteration_s`` and ``q x (its prefill tokens)^2`` on top of its kernels (decode unchanged).
    Derivation: with cap 1,024 and 512-token prompts, 5 prompts run as 2 + 2 + 1; with q = 1 ns, the host
    term adds 2 x 1024^2 + 512^2 ns over the same engine without it."""
    from hwmodels.engine import EngineStepTimeModel

    m, g = load_model("llama-2-7b"), load_gpu("a100-sxm-80gb")
    base = EngineProfile("t", "vllm", 0.0, 1e-3)
    capped = EngineProfile("t", "vllm", 0.0, 1e-3, max_num_batched_tokens=1024)
    quad = EngineProfile("t", "vllm", 0.0, 1e-3, prefill_host_s_per_token_sq=1e-9, max_num_batched_tokens=1024)
    s0, s1, s2 = (EngineStepTimeModel(m, g, 1, engine=e) for e in (base, capped, quad))
    two = s0.batch_time(((512, 512),) * 2, (), 1024, 2)
    one = s0.batch_time(((512, 512),), (), 512, 1)
    pre1, dec1 = s1.isolated(512, 5, 8)
    assert pre1 == pytest.approx(2 * (two + 1e-3) + one + 1e-3, rel=1e-12)
    assert s0.isolated(512, 5, 8)[0] == s0.batch_time(((512, 512),) * 5, (), 2560, 5) + 1e-3   # no cap: one
    pre2, dec2 = s2.isolated(512, 5, 8)
    assert pre2 - pre1 == pytest.approx((2 * 1024 ** 2 + 512 ** 2) * 1e-9, rel=1e-9)
    assert dec2 == dec1 == s0.isolated(512, 5, 8)[1]   # decode steps carry no prefill tokens


@pytest.mark.parametrize(("prompt", "batch", "cap", "want"), [
    (512, 5, None, ((1, 5),)),            # no cap: one iteration
    (512, 5, 1024, ((2, 2), (1, 1))),     # 1024 // 512 = 2 per iteration: 2 + 2 + 1
    (512, 4, 1024, ((2, 2),)),            # an exact multiple: no partial iteration
    (512, 3, 8192, ((1, 3),)),            # the cap above the batch: one iteration
    (8192, 4, 8192, ((4, 1),)),           # one prompt per iteration at the cap
    (9000, 2, 8192, ((2, 1),)),           # a prompt over the cap still runs whole, alone
])
def test_prefill_iterations(prompt: int, batch: int, cap: int | None, want: tuple) -> None:
    from hwmodels.engine import prefill_iterations

    got = prefill_iterations(prompt, batch, cap)
    assert got == want
    assert sum(c * n for c, n in got) == batch


def test_prefill_iterations_rejects_empty() -> None:
    from hwmodels.engine import prefill_iterations

    for prompt, batch in ((0, 4), (512, 0)):
        with pytest.raises(ValueError, match="must be >= 1"):
            prefill_iterations(prompt, batch, 8192)


def test_peak_power_takes_the_capped_iteration() -> None:
    """``peak_power_w`` prices the prefill iteration ``isolated`` runs: under a 256-token cap a batch of
    8 x 128 tokens draws what 2 x 128 draws, not what one 1,024-token iteration would. The limit (2 x TDP)
    is one the kernels never reach, so the draw follows the iteration's shape (at 1.0 x TDP both sit on it)."""
    from hwmodels.engine import EngineStepTimeModel
    from sim.splitwise_perf import peak_power_w

    m, g = load_model("llama-2-7b"), load_gpu("a100-sxm-80gb")
    step = EngineStepTimeModel(m, g, 1, engine=EngineProfile("t", "vllm", 0.0, 1e-3, power_limit=2.0,
                                                             max_num_batched_tokens=256))
    two = step.sustained(((128, 128),) * 2, (), 256, 2).power_w
    eight = step.sustained(((128, 128),) * 8, (), 1024, 8).power_w
    assert two != eight and two > step.decode_power_w([129] * 8)
    assert peak_power_w(step, 128, 8, 2) == two


def test_engine_keys_are_checked(tmp_path: Path) -> None:
    from hwmodels.engine import parse_engines

    ok = {"e": {"stack": "vllm", "host_op_us": 0, "iteration_us": 1, "prefill_host_ns_per_token_sq": 2.5,
                "max_num_batched_tokens": 4096}}
    e = parse_engines(ok, file="x.toml")["e"]
    assert e.prefill_host_s_per_token_sq == pytest.approx(2.5e-9) and e.max_num_batched_tokens == 4096
    for key, bad in (("prefill_host_ns_per_token_sq", -1), ("max_num_batched_tokens", 0),
                     ("max_num_batched_tokens", 10.5)):
        with pytest.raises(ConfigError) as ei:
            parse_engines({"e": {**ok["e"], key: bad}}, file="x.toml")
        assert f"e.{key}" in str(ei.value) and "x.toml" in str(ei.value)


def test_unknown_engine_is_config_error() -> None:
    with pytest.raises(ConfigError):
        load_engine("vllm-2019")


def test_malformed_file(tmp_path: Path) -> None:
    p = tmp_path / "perf.csv"
    p.write_text("model,hardware,prompt_size\nllama2-70b,a100-80gb,512\n")
    with pytest.raises(WorkloadError):
        read_splitwise_perf(p)
    r = CliRunner().invoke(cli, ["validate", "serve", "--format", "splitwise-perf", str(p),
                                 "--hardware", "a100-sxm-80gb"])
    assert r.exit_code == 2 and "missing columns" in r.output


@needs_data
def test_cli_json(tmp_path: Path) -> None:
    """The CLI on a 10-row slice (TP8, 512 x 1 x 128 and 128 x 1 x 128): an entry per column."""
    lines = DATA.read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if ln.startswith("llama2-70b,a100-80gb,512,1,128,")
                         and ln.endswith(",8")][:5] + [ln for ln in lines[1:] if
                                                        ln.startswith("llama2-70b,a100-80gb,128,1,128,")
                                                        and ln.endswith(",8")][:5]
    p = tmp_path / "slice.csv"
    p.write_text("\n".join(keep) + "\n")
    r = CliRunner().invoke(cli, ["validate", "serve", "--format", "splitwise-perf", str(p),
                                 "--hardware", "a100-sxm-80gb", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d["columns"]) == {"prompt_time", "token_time"}
    assert d["ops"] == d["columns"]   # validate ops' layout: {"n", "wape", "mape", "ops": {entry: {...}}}
    assert d["columns"]["token_time"]["n"] == 10
