"""`make demo` runs `xpusim demo`: it must work on built-in defaults alone (no shared data), write its files and
print a plan of `xpusim plan serve` (the chosen cluster and the runner-ups)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from xpusim.cli import cli


def test_demo_runs_on_built_in_defaults(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    for gpu in ("a100", "h100", "h200", "l40s"):   # the what-if table (names may be cut to fit the terminal)
        assert gpu in r.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["hardware"] == "h100-sxm-80gb" and summary["requests"] > 1000
    assert (tmp_path / "demo" / "requests.csv").read_text().count("\n") == summary["requests"] + 1
    # the planner part: a chosen cluster that met the SLOs in simulation, and runner-ups
    assert "Planning" in r.output and "chosen" in r.output and "next" in r.output
    chosen = next(line for line in r.output.splitlines() if "chosen" in line)
    assert " met " in chosen and ("P " in chosen or "C " in chosen)
