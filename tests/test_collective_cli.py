"""``xpusim simulate collective`` and ``xpusim validate collectives``: JSON shape, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from workloads.errors import ConfigError
from xpusim.cli import cli
from xpusim.commands.collective_cmd import parse_size

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured" / "vidur_a100" / "network"


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def test_simulate_collective_json() -> None:
    r = _run("simulate", "collective", "--op", "all_reduce", "--size", "1GiB", "--gpus", "16",
             "--cluster", "dgx-h100-superpod", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"time_s", "algbw_gb_per_s", "busbw_gb_per_s", "algo"} <= set(out)
    assert out["algbw_gb_per_s"] == pytest.approx((1 << 30) / out["time_s"] / 1e9)
    assert out["busbw_gb_per_s"] == pytest.approx(out["algbw_gb_per_s"] * 2 * 15 / 16)


def test_simulate_collective_table_and_algo() -> None:
    r = _run("simulate", "collective", "--op", "all_reduce", "--size", "64MB", "--gpus", "8",
             "--cluster", "dgx-h100-superpod", "--algo", "nvls")
    assert r.exit_code == 0 and "nvls" in r.output


def test_parse_size() -> None:
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("8K") == 8192
    assert parse_size("4096") == 4096
    with pytest.raises(ConfigError):
        parse_size("1.5")


@pytest.mark.parametrize(("args", "needle"), [
    (["--op", "all_reduc"], "all_reduce"),
    (["--cluster", "dgx-h100-superpd"], "dgx-h100-superpod"),
    (["--algo", "rng"], "ring"),
    (["--size", "12 parsecs"], "size"),
    (["--gpus", "100000"], "does not have"),
    (["--gpus", "16", "--algo", "nvls"], "NVLink SHARP"),
])
def test_bad_input_exits_2_with_a_hint(args: list[str], needle: str) -> None:
    base = {"--op": "all_reduce", "--size": "1GiB", "--gpus": "16", "--cluster": "dgx-h100-superpod"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    r = _run("simulate", "collective", *flat)
    assert r.exit_code == 2
    assert needle in r.output


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/measured/vidur_a100/network absent")
def test_validate_collectives_json() -> None:
    r = _run("validate", "collectives", "--format", "vidur-collective", str(DATA / "send_recv.csv"),
             "--cluster", "vidur-a100", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["format"] == "vidur-collective" and out["cluster"] == "vidur-a100"
    assert out["n"] == 1988 and 0 <= out["wape"] <= 0.10
    assert set(out["ops"]) == {"send_recv 2x1", "send_recv 1x2"}


def test_validate_collectives_bad_input(tmp_path: Path) -> None:
    r = _run("validate", "collectives", "--format", "vidur-colective", str(tmp_path / "x.csv"), "--cluster",
             "vidur-a100")
    assert r.exit_code == 2 and "vidur-collective" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("size,num_workers,devices_per_node,collective,time_stats.all_reduce.median\n"
                   "1024,4,3,all_reduce,0.1\n")
    r = _run("validate", "collectives", "--format", "vidur-collective", str(bad), "--cluster", "vidur-a100")
    assert r.exit_code == 2 and "line 2" in r.output


def test_send_recv_flow_fidelity_equals_closed_form() -> None:
    """send/recv between the first and last GPU of the sized cluster (two nodes): both fidelities run it
    between the same two GPUs and agree (one flow, no contention)."""
    args = ("simulate", "collective", "--op", "send_recv", "--size", "64MiB", "--gpus", "16",
            "--cluster", "dgx-a100-superpod", "--json")
    analytic, flow = json.loads(_run(*args).output), json.loads(_run(*args, "--fidelity", "flow").output)
    assert flow["fidelity"] == "flow" and analytic["fidelity"] == "analytic"
    assert flow["time_s"] == pytest.approx(analytic["time_s"], rel=1e-6)
