"""``xpusim validate torch`` on the CPU: a tiny Llama-style config runs for real, end to end, quickly.

What is checked is the shape of the answer (the JSON schema of issue 4, finite errors, the CSVs and
their provenance) and that bad input is exit code 2; the accuracy figures themselves are measured on
the 1B model and reported in docs/torch.md (timings on a shared 2-core machine are not test material).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from xpusim.cli import cli  # noqa: E402
from xpusim.commands.torch_cmd import gpu_id_for  # noqa: E402

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
        "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY))
    return p


def _finite(stats: dict) -> bool:  # type: ignore[type-arg]
    return stats["n"] > 0 and math.isfinite(stats["wape"]) and math.isfinite(stats["mape"])


def test_cpu_run_json_schema_and_csvs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["validate", "torch", "--device", "cpu", "--model", str(tiny), "--batch", "2",
                                 "--prompt", "16", "--decode", "2", "--repeats", "1", "--json", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert set(res) == {"n", "wape", "mape", "ops", "steps"}
    assert _finite(res)
    assert {"gemm", "attn_prefill", "attn_decode", "norm", "activation"} <= set(res["ops"])
    assert all(_finite(v) for v in res["ops"].values())
    assert set(res["steps"]) == {"prefill", "decode"}
    assert res["steps"]["prefill"]["n"] == 1 and res["steps"]["decode"]["n"] == 2
    assert all(_finite(v) for v in res["steps"].values())
    steps = (out / "steps.csv").read_text()
    for key in ("# device: cpu", "# torch: ", "# date: ", "# cpu: ", "measured_s,simulated_s"):
        assert key in steps
    # the CPU's state around the steps (workloads.pytorch.measure.cpu_state_probe): positive rates, before and after
    prov = dict(line[2:].split(": ", 1) for line in steps.splitlines() if line.startswith("# "))
    for key in ("cpu_probe_dram_read_gb_per_s", "cpu_probe_llc_copy_gb_per_s", "cpu_probe_gemm_128x2048x2048_ms"):
        assert float(prov[key]) > 0 and float(prov[f"{key}_after"]) > 0, key
    assert "aten::mm" in (out / "ops.csv").read_text()


@pytest.mark.parametrize("args", [["--batch", "0"], ["--prompt", "-1"], ["--model", "no-such-model"],
                                  ["--cpu", "no-such-cpu"], ["--layers", "0"]])
def test_bad_input_is_exit_2(tiny: Path, args: list[str]) -> None:
    base = ["validate", "torch", "--model", str(tiny), "--prompt", "4", "--decode", "0", "--repeats", "1"]
    r = CliRunner().invoke(cli, base + args)
    assert r.exit_code == 2, r.output


def test_cuda_without_a_gpu_is_exit_2(tiny: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = CliRunner().invoke(cli, ["validate", "torch", "--device", "cuda", "--model", str(tiny)])
    assert r.exit_code == 2 and "CUDA" in r.output


def test_gpu_name_to_catalog() -> None:
    """torch.cuda.get_device_name() strings as the H200 run's provenance.json records them."""
    assert gpu_id_for("NVIDIA H200") == "h200-sxm-141gb"
    assert gpu_id_for("NVIDIA H100 80GB HBM3") == "h100-sxm-80gb"


def _ops(fn):  # type: ignore[no-untyped-def]
    from workloads.pytorch.tracer import trace

    return [o for o in trace(fn)[0].ops if o.costs]


def test_cold_code_pays_its_class_overhead_once() -> None:
    """A step [add, copy of 2 MiB, add, add] run in a loop: the second add's code last ran before the
    2 MiB copy (more than the 512 KiB L2 ago), so it pays ``cold_overhead.elementwise`` (the copy moved
    less than half the LLC: no flush overhead); the third ran just after the second and the first just
    after the previous step's third: both hot. The three adds are equal otherwise (same shapes, inputs
    touched a few KiB ago). With the spec's ``in_model_overhead`` table, add's own cold and hot figures
    apply instead."""
    import torch

    from hwmodels.cpu import CPUModel, load_cpu, step_reuse

    cpu = load_cpu("epyc-zen3-2c-kvm")
    x, y = torch.randn(64), torch.randn(64)
    big, dst = torch.randn(256 * 1024), torch.empty(256 * 1024)

    def step() -> None:
        a = x + y
        dst.copy_(big)
        b = a + y
        b + y

    ops = _ops(step)
    assert [o.aten for o in ops] == ["aten::add", "aten::copy_", "aten::add", "aten::add"]
    reuse = step_reuse(ops)
    assert reuse[2].code > cpu.l2_bytes >= reuse[3].code and reuse[0].code == 0
    from dataclasses import replace

    by_class = CPUModel(replace(cpu, in_model_overhead_s={}))   # the class-wide constants only
    t = [by_class.cost(o, r)[0] for o, r in zip(ops, reuse)]
    assert cpu.cold_overhead_s["elementwise"] > 0
    assert t[2] - t[3] == pytest.approx(cpu.cold_overhead_s["elementwise"], rel=1e-9)
    assert t[0] == pytest.approx(t[3], rel=1e-9)
    assert by_class.step_costs(ops) == t
    # the spec's own (aten op, state) figures replace the class's where it has them: add cold vs hot
    model = CPUModel(cpu)
    own = [model.cost(o, r)[0] for o, r in zip(ops, reuse)]
    cold, hot = cpu.in_model_overhead_s[("aten::add", "cold")], cpu.in_model_overhead_s[("aten::add", "hot")]
    assert own[2] - own[3] == pytest.approx(cold - hot, rel=1e-9)
    assert own[3] - t[3] == pytest.approx(hot, rel=1e-9) and own[0] == pytest.approx(own[3], rel=1e-9)


def test_in_model_overhead_of_an_op_kind_wins_over_its_aten_op() -> None:
    """An aten op that serves several op kinds (a mul in the norm, the rope, the MLP) takes its kind's in-model
    figure where the spec has one, else its aten op's, else None (the class-wide constants apply)."""
    from dataclasses import replace

    import torch

    from hwmodels.cpu import load_cpu

    x, y = torch.randn(64), torch.randn(64)
    (op,) = _ops(lambda: x + y)
    assert op.kind is not None
    base = replace(load_cpu("epyc-zen3-2c-kvm"), in_model_overhead_s={("aten::add", "cold"): 1e-6})
    assert base.in_model(op, "cold") == 1e-6 and base.in_model(op, "hot") is None
    own = replace(base, in_model_overhead_s={("aten::add", "cold"): 1e-6, ("aten::add", op.kind.value, "cold"): 5e-6})
    assert own.in_model(op, "cold") == 5e-6
    other = "rope" if op.kind.value != "rope" else "norm"
    elsewhere = replace(base, in_model_overhead_s={("aten::add", "cold"): 1e-6, ("aten::add", other, "cold"): 5e-6})
    assert elsewhere.in_model(op, "cold") == 1e-6


def test_cpu_spec_in_model_keys_are_checked(tmp_path: Path) -> None:
    from hwmodels.cpu import _specs_dir, code_state, load_cpu
    from workloads.errors import ConfigError

    assert [code_state(c, f) for f in (False, True) for c in (False, True)] == ["hot", "cold", "flush", "cold+flush"]
    text = (_specs_dir() / "epyc-zen3-2c-kvm.toml").read_text()
    for bad in ('"aten::add warm" = 3.0', '"add cold" = 3.0', '"aten::gelu cold" = -1.0',
                '"aten::mul ropes cold" = 3.0', '"aten::mul rope norm cold" = 3.0'):
        p = tmp_path / "bad.toml"
        p.write_text(text.replace("[in_model_overhead_us]", "[in_model_overhead_us]\n" + bad))
        with pytest.raises(ConfigError, match="in_model_overhead_us") as ei:
            load_cpu(p)
        assert "bad.toml" in str(ei.value)


def test_weights_streamed_every_step_come_from_dram() -> None:
    """A one-row GEMM over a 64 MiB weight: in a hot loop of its own (weight > half the 32 MiB LLC)
    and in a step (never written in the step: last touched one step, 64 MiB, ago) the weight is read at
    the DRAM rate; a 4 MiB weight is read at the LLC rate alone, at the DRAM rate inside a step that
    also streams a 64 MiB weight (what it reads was never written in the step, so it was last touched
one step, 68 MiB, ago), and in a step its output is written back to DRAM too (in a hot loop its
dirty lines stay in the LLC)."""
    import torch

    from hwmodels.cpu import CPUModel, load_cpu, step_reuse

    cpu = load_cpu("epyc-zen3-2c-kvm")
    model = CPUModel(cpu)
    v = torch.randn(1, 2048)
    w_big, w_small = torch.randn(8192, 2048), torch.randn(512, 2048)
    ops = _ops(lambda: (torch.mm(v, w_big.t()), torch.mm(v, w_small.t())))
    reuse = step_reuse(ops)
    small = ops[1]
    eff = cpu.efficiency["gemm_memory"]
    hot = model.cost(small)[1]["memory"]
    assert hot == pytest.approx(small.bytes / (cpu.llc_bandwidth * eff), rel=1e-9)
    in_step = model.cost(small, reuse[1])[1]["memory"]
    expected = (small.bytes_read + small.bytes_written) / (cpu.memory_bandwidth * eff)
    assert in_step == pytest.approx(expected, rel=1e-6)
    assert model.cost(ops[0], reuse[0])[1]["memory"] == pytest.approx(model.cost(ops[0])[1]["memory"], rel=1e-9)


def test_cpu_spec_rejects_unknown_cold_key(tmp_path: Path) -> None:
    from hwmodels.cpu import _specs_dir, load_cpu
    from workloads.errors import ConfigError

    text = (_specs_dir() / "epyc-zen3-2c-kvm.toml").read_text()
    p = tmp_path / "bad.toml"
    p.write_text(text + "\n[cold_overhead_us]\nmatmul = 3.0\n" if "[cold_overhead_us]" not in text
                 else text.replace("[cold_overhead_us]", "[cold_overhead_us]\nmatmul = 3.0"))
    with pytest.raises(ConfigError, match="matmul"):
        load_cpu(p)


def test_host_probe_orders_a_view_below_a_launching_op() -> None:
    """The host probe (workloads.pytorch.measure.host_probe, recorded in every CUDA run's provenance) times eager
    dispatch per call: a view (no kernel, no allocation) must cost the host less than ``x + 1`` (allocation and
    kernel), and every figure is a positive number of microseconds below a millisecond."""
    from workloads.pytorch.measure import PROBE_OPS, host_probe

    got = host_probe("cpu", calls=300, repeats=3)
    assert set(got) == {f"host_probe_{op}_us" for op in PROBE_OPS}
    assert all(0 < v < 1000 for v in got.values())
    assert got["host_probe_view_us"] < got["host_probe_add_us"]


CPU_RUNS = Path(__file__).resolve().parents[1] / "validation" / "measured" / "cpu-epyc-zen3-2c"


def test_cpu_small_ops_repeat_about_as_far_as_the_target() -> None:
    """Measured against measured (benchmarks/torch_run_noise.py) on this project's 2-vCPU VM: two held-out runs
    of one configuration (16 layers, batch 1, prompt 128, decode 8; h and i, one right after the other, 13:06 to
    13:11 UTC) differ per op kind by 0.21 on rope, 0.16-0.18 on norm, elementwise and add, while their GEMMs
    repeat within 0.09 and their decode steps within 0.06. The CPU target (0.20 per op kind) is at what the
    machine itself repeats for the small eager ops (docs/accuracy.md, "Host CPU")."""
    import sys

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from torch_run_noise import run_noise

    h, i = (CPU_RUNS / f"validate_torch_llama-3.2-1b-l16b1p128-{r}" for r in "hi")
    figs = {r["compared"]: r["wape"] for r in run_noise(h, i)}
    assert figs["op kind rope"] == pytest.approx(0.211, abs=0.005)
    for kind in ("norm", "elementwise", "add"):
        assert 0.15 < figs[f"op kind {kind}"] < 0.20, kind
    assert figs["op kind gemm"] < 0.10
    assert figs["step decode"] < 0.07
    # the issue's own configuration (batch 4, prompt 512, decode 32), two runs 24 minutes apart
    b1, b2 = (CPU_RUNS / f"validate_torch_llama-3.2-1b-b4p512d32-{r}" for r in "12")
    figs = {r["compared"]: r["wape"] for r in run_noise(b1, b2)}
    assert figs["op kind rope"] == pytest.approx(0.396, abs=0.005)
    assert figs["op kind activation"] == pytest.approx(0.311, abs=0.005)
    assert figs["step decode"] < 0.06 and figs["step prefill"] < 0.04


def test_host_cpu_facts_read_cpuinfo_and_sysfs(tmp_path: Path) -> None:
    from workloads.pytorch.measure import host_cpu_facts

    for index, size in (("index2", "1024K"), ("index3", "36M")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    info = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\ncpu MHz\t\t: 2000.000\n"
            "flags\t\t: fpu sse2 avx avx2 fma avx512f\n\nprocessor\t: 1\nmodel name\t: other\n")
    facts = host_cpu_facts(info, sysfs=str(tmp_path))
    assert facts["name"] == "Intel(R) Xeon(R) Platinum 8480+"   # the first processor's
    assert (facts["simd_width_bits"], facts["fma_units_per_core"], facts["clock_ghz"]) == (512, 2, 2.0)
    assert (facts["llc_mib"], facts["l2_kib"]) == (36.0, 1024.0)
    bare = host_cpu_facts("", sysfs=str(tmp_path / "none"))
    assert set(bare) == {"cores"}   # nothing else could be read: left out, not guessed


def test_cpu_spec_written_by_fit_reads_back_equal(tmp_path: Path) -> None:
    """hwmodels.cpu.spec_toml (what benchmarks/fit_cpu.py --spec-out writes) reads back, through the same
    loader and checks as a catalog spec, to the spec it was written from (ten significant digits)."""
    from dataclasses import fields

    from hwmodels.cpu import load_cpu, spec_toml

    cpu = load_cpu("epyc-zen3-2c-kvm")
    path = tmp_path / "host.toml"
    path.write_text(spec_toml(cpu, "a comment\nover two lines", source="a test"))
    back = load_cpu(path)
    for f in fields(cpu):
        if f.name in ("id", "source_file"):
            continue
        a, b = getattr(back, f.name), getattr(cpu, f.name)
        if isinstance(b, dict):
            assert a.keys() == b.keys(), f.name
            assert all(a[k] == pytest.approx(b[k], rel=1e-9) for k in b), f.name
        elif isinstance(b, str):
            assert a == b, f.name
        else:
            assert a == pytest.approx(b, rel=1e-9), f.name


def test_spec_mismatch_names_the_fields_a_host_differs_in() -> None:
    from hwmodels.cpu import load_cpu, spec_mismatch

    cpu = load_cpu("epyc-zen3-2c-kvm")
    same = {"cores": 2, "simd_width_bits": 256, "llc_mib": 32.0, "l2_kib": 512.0, "name": "AMD EPYC"}
    assert spec_mismatch(cpu, same) == []
    other = spec_mismatch(cpu, dict(same, cores=64, simd_width_bits=512))
    assert other == ["cores: host 64, spec 2", "simd_width_bits: host 512, spec 256"]
    assert spec_mismatch(cpu, {"cores": 2}) == []   # a field the host did not report is not a difference


def test_small_m_gemm_streams_the_weight_once_per_row() -> None:
    """Up to ``gemm_gemv_max_m`` rows MKL runs one GEMV per row (microbench.csv on this VM: m = 1, 2, 4 over a
    128 MiB weight take 8.7, 18.7, 34.9 ms): in the model each row after the first reads the weight again, from
    DRAM when it is larger than half the LLC; one row more than that is a GEMM on the compute ramp."""
    from dataclasses import replace

    import torch

    from hwmodels.cpu import CPUModel, load_cpu

    cpu = load_cpu("epyc-zen3-2c-kvm")
    assert cpu.gemv_max_m == 4
    w = torch.randn(2048, 8192)          # 64 MiB fp32: more than half the 32 MiB LLC
    model = CPUModel(cpu)
    t = {m: model.cost(_ops(lambda m=m: torch.randn(m, 2048) @ w)[-1])[1] for m in (1, 4, 5)}
    weight = 2048 * 8192 * 4
    again = weight / (cpu.memory_bandwidth * cpu.efficiency["gemm_memory"])
    assert t[4]["compute"] == 0 and t[4]["memory"] - t[1]["memory"] == pytest.approx(3 * again, rel=0.01)
    assert t[5]["compute"] > 0 and t[5]["memory"] < t[4]["memory"]
    off = CPUModel(replace(cpu, gemv_max_m=0)).cost(_ops(lambda: torch.randn(4, 2048) @ w)[-1])[1]
    assert off["compute"] > 0 and off["memory"] == pytest.approx(t[1]["memory"], rel=0.01)


def test_a_cache_written_one_token_is_read_from_dram() -> None:
    """A decode step writes one token into a 4 MiB KV cache and then reads the whole cache: what it wrote is
    fresh, the other 511 tokens were last touched a step ago (docs/torch.md). So the read's reuse distance is
    the step's total bytes, as for a weight. A cache written whole just before is read at its own short
    distance."""
    import torch

    from hwmodels.cpu import step_reuse

    cache, new = torch.zeros(512, 2048), torch.randn(1, 2048)

    def one_token() -> None:
        cache[511:512].copy_(new)
        cache.sum()

    def whole() -> None:
        cache.copy_(torch.ones(512, 2048))
        cache.sum()

    for step, stale in ((one_token, True), (whole, False)):
        ops = _ops(step)
        reuse = step_reuse(ops)
        total = float(sum(o.bytes for o in ops))
        read = next(i for i, o in enumerate(ops) if o.aten == "aten::sum")
        assert (reuse[read].inputs[0] == total) is stale, step.__name__
