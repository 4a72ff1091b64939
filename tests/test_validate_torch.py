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
