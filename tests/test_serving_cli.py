"""CLI: simulate request / serve, bad input gives exit code 2 and no partial output."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from xpusim.cli import cli


def test_simulate_request_json() -> None:
    r = CliRunner().invoke(cli, ["simulate", "request", "--model", "llama-2-70b", "--hardware", "h100-sxm-80gb",
                                 "--tp", "4", "--prompt", "512", "--batch", "1", "--output-tokens", "128", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d) == {"prefill_s", "decode_per_token_s", "e2e_s"}
    assert d["e2e_s"] == d["prefill_s"] + 127 * d["decode_per_token_s"]
    assert 0.005 < d["decode_per_token_s"] < 0.05


def test_simulate_serve_writes_outputs(tmp_path: Path) -> None:
    out = tmp_path / "res"
    r = CliRunner().invoke(cli, ["simulate", "serve", "--model", "meta-llama/Llama-3.1-8B", "--hardware",
                                 "h100-sxm-80gb", "--replicas", "2", "--trace", "azure-conv", "--rate", "4",
                                 "--duration", "30", "--out", str(out), "--timeline", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["replicas"] == 2 and s["requests"] > 50
    assert (out / "requests.csv").read_text().count("\n") == s["requests"] + 1
    trace = json.loads((tmp_path / "t.json").read_text())
    assert any(e.get("pid") == 1 and e["ph"] == "X" for e in trace["traceEvents"])


def test_model_that_does_not_fit_exits_2_without_output(tmp_path: Path) -> None:
    out = tmp_path / "res"
    r = CliRunner().invoke(cli, ["simulate", "serve", "--model", "llama-2-70b", "--hardware", "rtx-4090",
                                 "--trace", "azure-conv", "--rate", "1", "--duration", "10", "--out", str(out),
                                 "--timeline", str(tmp_path / "t.json")])
    assert r.exit_code == 2
    assert "does not fit" in r.output and "weights" in r.output and "Traceback" not in r.output
    assert not out.exists() and not (tmp_path / "t.json").exists()
    r = CliRunner().invoke(cli, ["simulate", "request", "--model", "llama-2-70b", "--hardware", "rtx-4090"])
    assert r.exit_code == 2
