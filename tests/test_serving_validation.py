"""Replaying the shared vLLM 0.19 RTX 4090 run (300 ShareGPT requests, Llama-3.1-8B, TP1).

Targets (issue 2): |rel_err| <= 0.05 on TPOT mean, <= 0.10 on TTFT mean and latency mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xpusim.cli import cli

RUN = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured" / "vllm_rtx4090_llama31_8b"
pytestmark = pytest.mark.skipif(not RUN.is_dir(), reason=f"shared data not found at {RUN}")


@pytest.fixture(scope="module")
def report() -> dict:
    r = CliRunner().invoke(cli, ["validate", "serve", "--format", "vllm-bench", str(RUN), "--hardware",
                                 "rtx-4090", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_keys(report: dict) -> None:
    keys = {f"{m}_{s}_s" for m in ("ttft", "tpot", "latency") for s in ("mean", "p50", "p90", "p99")}
    assert set(report["metrics"]) == keys
    assert report["num_gpu_blocks"]["measured"] == 2588
    assert report["num_gpu_blocks"]["simulated"] == pytest.approx(2588, rel=0.005)


def test_tpot_mean(report: dict) -> None:
    assert abs(report["metrics"]["tpot_mean_s"]["rel_err"]) <= 0.05


def test_ttft_and_latency_mean(report: dict) -> None:
    assert abs(report["metrics"]["ttft_mean_s"]["rel_err"]) <= 0.10
    assert abs(report["metrics"]["latency_mean_s"]["rel_err"]) <= 0.10
