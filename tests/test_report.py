"""Report files: the Chrome/Perfetto trace and the KV-cache CSV agree with the simulation result."""

from __future__ import annotations

import csv
import io
import json

import pytest

from hwmodels.gpu import load_gpu
from sim.config import ServeConfig
from sim.serving import simulate_serving
from workloads.catalog import load_model
from workloads.requests import Request
from xpusim.report import chrome_trace, kv_cache_csv, write_outputs


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    reqs = [Request(i, 0.05 * i, 300 + 50 * i, 20 + i) for i in range(12)]
    return simulate_serving(load_model("llama-3.2-1b"), load_gpu("a100-sxm-80gb"), reqs,
                            ServeConfig(replicas=2), record_timeline=True)


def test_trace_has_one_async_span_per_request_ending_at_its_last_token(result) -> None:  # type: ignore[no-untyped-def]
    ev = json.loads(chrome_trace(result))["traceEvents"]
    begins = {e["id"]: e for e in ev if e["ph"] == "b"}
    ends = {e["id"]: e for e in ev if e["ph"] == "e"}
    assert sorted(begins) == sorted(int(i) for i in result.ids)
    for i, rid in enumerate(result.ids.tolist()):
        assert begins[rid]["ts"] == pytest.approx(result.arrival_ns[i] / 1e3)
        assert ends[rid]["ts"] == pytest.approx(result.last_ns[i] / 1e3)
        assert begins[rid]["tid"] == int(result.replica[i])


def test_trace_iterations_do_not_overlap_on_a_replica_track(result) -> None:  # type: ignore[no-untyped-def]
    ev = json.loads(chrome_trace(result))["traceEvents"]
    for rep in range(2):
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e["ph"] == "X" and e["tid"] == rep)
        assert spans, f"replica {rep} ran nothing"
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end - 1e-6


def test_kv_csv_fraction_is_blocks_over_total(result) -> None:  # type: ignore[no-untyped-def]
    rows = list(csv.DictReader(io.StringIO(kv_cache_csv(result))))
    assert len(rows) == sum(t.size for t in result.kv_t)
    assert max(int(r["blocks_used"]) for r in rows) > 0
    for r in rows:
        assert float(r["used_fraction"]) == pytest.approx(int(r["blocks_used"]) / result.memory.num_blocks,
                                                           abs=1e-6)


def test_write_outputs_writes_all_files(tmp_path, result) -> None:  # type: ignore[no-untyped-def]
    written = write_outputs(tmp_path / "out", {"requests": 12}, result, tmp_path / "t.json")
    assert sorted(p.name for p in written) == ["kv_cache.csv", "requests.csv", "summary.json", "t.json"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "temp files left behind"
