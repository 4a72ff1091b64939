"""Request workloads: trace readers, Azure-fitted synthetic generators, ``load_workload``.

Figures pinned to the Azure 2023 traces are quoted from ``shared/data/README.md`` (code: input median
1,469 / mean 2,048, output median 13 / mean 28; conversation: input median 1,020 / mean 1,155, output
median 129 / mean 211). Tests that read ``shared/data`` skip when it is absent.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from workloads.errors import ConfigError, WorkloadError
from workloads.requests import Request
from workloads.traces import (
    PROFILES,
    Arrival,
    MeasuredRequest,
    arrival_times,
    fit_profile,
    inter_arrival_cv,
    load_workload,
    read_azure_csv,
    read_vllm_bench,
    register_profile,
    synthetic,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACES = DATA / "traces"
VLLM = DATA / "measured" / "vllm_rtx4090_llama31_8b"
needs_data = pytest.mark.skipif(not (TRACES / "azure_llm_2023_conv.csv").exists(),
                                reason="shared/data (Azure traces, vLLM run) not present")

# (profile, prompt median, prompt mean, output median, output mean) from shared/data/README.md
AZURE_FACTS = [
    ("azure-code", 1469, 2048, 13, 28),
    ("azure-conv", 1020, 1155, 129, 211),
]
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _arrays(reqs: list[Request]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r.arrival_s for r in reqs]), np.array([r.prompt_tokens for r in reqs]),
            np.array([r.output_tokens for r in reqs]))


# ---------------------------------------------------------------- synthetic generators


@pytest.mark.parametrize(("name", "p_med", "p_mean", "o_med", "o_mean"), AZURE_FACTS)
def test_synthetic_reproduces_azure_lengths(name: str, p_med: int, p_mean: int, o_med: int, o_mean: int) -> None:
    """~200k requests: medians within 2 % (output medians within 1 token), means within 3 %.

    Sampling error of a mean of 200k draws is < 0.5 % for these tails, so the tolerance is the
    quantile-table interpolation, not noise."""
    reqs = synthetic(name, rate=200.0, duration_s=1000.0, seed=7)
    _, prompt, output = _arrays(reqs)
    assert len(reqs) > 150_000
    assert np.median(prompt) == pytest.approx(p_med, rel=0.02)
    assert prompt.mean() == pytest.approx(p_mean, rel=0.03)
    assert abs(np.median(output) - o_med) <= 1
    assert output.mean() == pytest.approx(o_mean, rel=0.03)
    assert prompt.min() >= 1 and output.min() >= 1


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_synthetic_lengths_stay_within_trace_range(name: str) -> None:
    """Inverse-CDF sampling never leaves [min, max] of the fitted table."""
    prof = PROFILES[name]
    _, prompt, output = _arrays(synthetic(name, 100.0, 500.0, seed=3))
    assert prof.prompt_quantiles[0] <= prompt.min() and prompt.max() <= prof.prompt_quantiles[-1]
    assert prof.output_quantiles[0] <= output.min() and output.max() <= prof.output_quantiles[-1]


@pytest.mark.parametrize(("arrival", "cv"), [("poisson", None), ("gamma", 2.0), ("gamma", 0.5)])
def test_arrival_rate_matches_rate(arrival: str, cv: float | None) -> None:
    """n / duration within 3 % of --rate for ~100k arrivals (relative s.e. = cv / sqrt(n) < 0.7 %)."""
    reqs = synthetic("azure-conv", rate=50.0, duration_s=2000.0, seed=11, arrival=arrival, cv=cv)
    t, _, _ = _arrays(reqs)
    assert len(reqs) / 2000.0 == pytest.approx(50.0, rel=0.03)
    assert t.min() >= 0 and t.max() < 2000.0
    assert np.all(np.diff(t) >= 0)
    assert [r.id for r in reqs] == list(range(len(reqs)))


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0, 4.0])
def test_gamma_cv_matches(cv: float) -> None:
    """Gaps of Gamma(k = 1/cv^2) arrivals have that cv (5 %, 1e6 gaps)."""
    t = arrival_times(1000.0, 1000.0, np.random.default_rng(5), arrival=Arrival.GAMMA, cv=cv)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_gamma_matches_azure_code_moment_cv() -> None:
    """The full-hour moment cv of the code trace (13.15) is reachable with cv=; kurtosis 6/k ~ 1000, so
    1e6 gaps give a ~2 % standard error and the tolerance is 10 %."""
    cv = PROFILES["azure-code"].cv_moment
    t = arrival_times(1000.0, 1000.0, np.random.default_rng(9), arrival="gamma", cv=cv)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.10)


def test_poisson_cv_is_one() -> None:
    t = arrival_times(1000.0, 200.0, np.random.default_rng(1), arrival="poisson")
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_default_arrival_is_gamma_with_fitted_cv(name: str) -> None:
    """Default burstiness is the profile's cv; refitting the generated gaps recovers it (5 %)."""
    reqs = synthetic(name, rate=50.0, duration_s=2000.0, seed=2)
    assert inter_arrival_cv(reqs) == pytest.approx(PROFILES[name].cv, rel=0.05)
    refit = fit_profile(name, reqs, source="synthetic")
    assert refit.cv_mle == pytest.approx(PROFILES[name].cv, rel=0.05)


def test_seed_reproduces_and_different_seeds_differ() -> None:
    a = synthetic("azure-code", 5.0, 300.0, seed=42)
    b = synthetic("azure-code", 5.0, 300.0, seed=42)
    c = synthetic("azure-code", 5.0, 300.0, seed=43)
    assert a == b
    assert a != c


def test_same_seed_same_lengths_whatever_the_arrival_process() -> None:
    """Lengths come from their own random streams, so Poisson vs Gamma compares like with like."""
    g = synthetic("azure-conv", 20.0, 100.0, seed=4, arrival="gamma", cv=3.0)
    p = synthetic("azure-conv", 20.0, 100.0, seed=4, arrival=Arrival.POISSON)
    n = min(len(g), len(p))
    assert [r.prompt_tokens for r in g[:n]] == [r.prompt_tokens for r in p[:n]]
    assert [r.arrival_s for r in g[:n]] != [r.arrival_s for r in p[:n]]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rate": 0.0}, "rate"), ({"rate": -1.0}, "rate"), ({"rate": float("nan")}, "rate"),
    ({"duration_s": 0.0}, "duration_s"), ({"cv": 0.0}, "cv"), ({"arrival": "bursty"}, "arrival"),
    ({"arrival": "poisson", "cv": 2.0}, "cv"),
])
def test_synthetic_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    args = {"rate": 1.0, "duration_s": 10.0, "seed": 0} | kwargs
    with pytest.raises(ConfigError) as err:
        synthetic("azure-conv", **args)
    assert err.value.field == field


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(ConfigError, match="azure-code, azure-conv"):
        synthetic("azure-chat", 1.0, 10.0, seed=0)


def test_duplicate_profile_registration_raises() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_profile(PROFILES["azure-code"])


def test_profile_rejects_a_bad_table() -> None:
    prof = PROFILES["azure-conv"]
    with pytest.raises(ValueError, match="non-decreasing"):
        dataclasses.replace(prof, output_quantiles=tuple(reversed(prof.output_quantiles)))


# ---------------------------------------------------------------- readers on the real files


@needs_data
@pytest.mark.parametrize(("file", "rows", "facts", "p_max"), [
    ("azure_llm_2023_code.csv", 8819, AZURE_FACTS[0], 7437),
    ("azure_llm_2023_conv.csv", 19366, AZURE_FACTS[1], 14050),
])
def test_read_azure_csv_real(file: str, rows: int, facts: tuple, p_max: int) -> None:
    """Row counts and length facts of shared/data/README.md; arrivals start at 0 and never go back."""
    reqs = read_azure_csv(TRACES / file)
    t, prompt, output = _arrays(reqs)
    _, p_med, p_mean, o_med, o_mean = facts
    assert len(reqs) == rows
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert np.median(prompt) == p_med and prompt.mean() == pytest.approx(p_mean, abs=0.5)
    assert prompt.max() == p_max
    assert np.median(output) == o_med and output.mean() == pytest.approx(o_mean, abs=0.5)


@needs_data
def test_read_azure_csv_first_rows_and_timestamps() -> None:
    """conv rows 1-2: 18:15:46.6805900 (374, 44) and 18:15:50.9951690 (396, 109): 4.314579 s apart."""
    reqs = read_azure_csv(TRACES / "azure_llm_2023_conv.csv")
    assert reqs[0] == Request(0, 0.0, 374, 44)
    assert reqs[1].arrival_s == pytest.approx(4.314579, abs=1e-6)
    assert (reqs[1].prompt_tokens, reqs[1].output_tokens) == (396, 109)


@needs_data
def test_real_trace_burstiness_matches_shipped_profiles() -> None:
    """Inter-arrival cv of the real traces: code 13.15 (moment), conv 1.094."""
    code = read_azure_csv(TRACES / "azure_llm_2023_code.csv")
    conv = read_azure_csv(TRACES / "azure_llm_2023_conv.csv")
    assert inter_arrival_cv(code) == pytest.approx(13.15, rel=0.01)
    assert inter_arrival_cv(conv) == pytest.approx(1.094, rel=0.01)


@needs_data
def test_shipped_profiles_are_the_fit_of_the_data() -> None:
    """profiles.py holds exactly what benchmarks/fit_azure.py derives from the CSVs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fit_azure", Path(__file__).resolve().parents[1]
                                                  / "benchmarks" / "fit_azure.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.fit_all(TRACES) == {name: PROFILES[name] for name in mod.TRACES}


@needs_data
def test_read_vllm_bench_real() -> None:
    """300 ShareGPT requests at ~10 req/s (README); bench-0: 2358 in / 531 out, queued 27536.660701067,
    first token 27537.350135653 -> TTFT 0.689 s."""
    reqs = read_vllm_bench(VLLM)
    assert len(reqs) == 300
    assert all(isinstance(r, MeasuredRequest) for r in reqs)
    r0 = reqs[0]
    assert (r0.id, r0.arrival_s, r0.prompt_tokens, r0.output_tokens, r0.request_id) == (0, 0.0, 2358, 531, "bench-0")
    assert r0.queued_ts == 27536.660701067
    assert r0.ttft_s == pytest.approx(0.689434, abs=1e-6)
    assert r0.e2e_s is not None and r0.tpot_s is not None and r0.ttft_s is not None
    assert r0.e2e_s > r0.ttft_s
    t = np.array([r.arrival_s for r in reqs])
    assert np.all(np.diff(t) >= 0)
    assert (len(reqs) - 1) / t[-1] == pytest.approx(10.0, rel=0.05)
    assert read_vllm_bench(VLLM / "requests.jsonl") == reqs


# ---------------------------------------------------------------- malformed files


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(("body", "line", "column", "match"), [
    ("2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,3x4,44\n", 3, "ContextTokens", "3x4"),
    ("2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,374\n", 3, "GeneratedTokens", "fields"),
    ("2023-11-16 18:15:46.68,374,-5\n", 2, "GeneratedTokens", "-5"),
    ("2023-11-16 18:15:46.68,0,5\n", 2, "ContextTokens", ">= 1"),
    ("2023-11-16 18:15:46.68,1,5\n2023-11-16 18:1x:47.00,1,5\n", 3, "TIMESTAMP", "datetime"),
])
def test_azure_csv_malformed_row(tmp_path: Path, body: str, line: int, column: str, match: str) -> None:
    p = _write(tmp_path, "bad.csv", HEADER + body)
    with pytest.raises(WorkloadError, match=match) as err:
        read_azure_csv(p)
    assert (err.value.file, err.value.line, err.value.column) == (str(p), line, column)
    assert f"line {line}" in str(err.value) and column in str(err.value) and str(p) in str(err.value)


def test_azure_csv_missing_column_in_header(tmp_path: Path) -> None:
    p = _write(tmp_path, "bad.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,374\n")
    with pytest.raises(WorkloadError) as err:
        read_azure_csv(p)
    assert (err.value.line, err.value.column) == (1, "GeneratedTokens")


@pytest.mark.parametrize("text", ["", HEADER, HEADER + "\n"])
def test_azure_csv_empty(tmp_path: Path, text: str) -> None:
    with pytest.raises(WorkloadError):
        read_azure_csv(_write(tmp_path, "empty.csv", text))


def test_azure_csv_unsorted_rows_are_sorted(tmp_path: Path) -> None:
    """Columns found by name (any order); rows sorted by time; arrivals from the earliest row."""
    p = _write(tmp_path, "t.csv", "GeneratedTokens,TIMESTAMP,ContextTokens\n"
               "7,2023-11-16 18:00:02.5,30\n5,2023-11-16 18:00:01.0,10\n\n6,2023-11-16 18:00:01.5,20\n")
    assert read_azure_csv(p) == [Request(0, 0.0, 10, 5), Request(1, 0.5, 20, 6), Request(2, 1.5, 30, 7)]


def test_azure_csv_column_pass_equals_row_by_row_pass(tmp_path: Path) -> None:
    """A well-formed file is converted a column at a time (``_azure_columns``); one blank line sends the same
    rows through the row-by-row pass instead: both give the same requests (unsorted rows, padded counts)."""
    rows = "7,2023-11-16 18:00:02.5, 30\n5,2023-11-16 18:00:01.0,10\n6 ,2023-11-16 18:00:01.5,20\n"
    head = "GeneratedTokens,TIMESTAMP,ContextTokens\n"
    fast = read_azure_csv(_write(tmp_path, "a.csv", head + rows))
    slow = read_azure_csv(_write(tmp_path, "b.csv", head + "\n" + rows))
    assert fast == slow == [Request(0, 0.0, 10, 5), Request(1, 0.5, 20, 6), Request(2, 1.5, 30, 7)]


def test_missing_file_is_a_workload_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="not found"):
        read_azure_csv(tmp_path / "nope.csv")
    with pytest.raises(WorkloadError, match="not found"):
        read_vllm_bench(tmp_path)


def _jsonl(rows: list[dict | str]) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


GOOD = {"request_id": "a", "input_toks": 10, "output_toks": 5, "queued_ts": 100.0,
        "scheduled_ts": 100.1, "first_token_ts": 100.5, "last_token_ts": 101.0}


@pytest.mark.parametrize(("bad", "column", "match"), [
    (GOOD | {"input_toks": "ten"}, "input_toks", "integer"),
    (GOOD | {"output_toks": 2.5}, "output_toks", "integer"),
    (GOOD | {"output_toks": -3}, "output_toks", ">= 1"),
    ({k: v for k, v in GOOD.items() if k != "queued_ts"}, "queued_ts", "missing"),
    (GOOD | {"first_token_ts": "soon"}, "first_token_ts", "timestamp"),
    ('{"input_toks": 10,', None, "JSON"),
    ("[1, 2]", None, "object"),
])
def test_vllm_bench_malformed_row(tmp_path: Path, bad: dict | str, column: str | None, match: str) -> None:
    p = _write(tmp_path, "requests.jsonl", _jsonl([GOOD, bad]))
    with pytest.raises(WorkloadError, match=match) as err:
        read_vllm_bench(tmp_path)
    assert (err.value.file, err.value.line, err.value.column) == (str(p), 2, column)


def test_vllm_bench_optional_timestamps_and_order(tmp_path: Path) -> None:
    """A request that never ran has null timestamps; rows are sorted by queued_ts."""
    p = _write(tmp_path, "r.jsonl", _jsonl([GOOD | {"queued_ts": 103.0, "first_token_ts": None,
                                                    "last_token_ts": None}, GOOD]))
    reqs = read_vllm_bench(p)
    assert [(r.id, r.arrival_s, r.request_id) for r in reqs] == [(0, 0.0, "a"), (1, 3.0, "a")]
    assert reqs[1].ttft_s is None and reqs[1].e2e_s is None and reqs[1].tpot_s is None
    assert reqs[0].ttft_s == pytest.approx(0.5) and reqs[0].tpot_s == pytest.approx(0.125)


# ---------------------------------------------------------------- load_workload


def test_load_workload_synthetic() -> None:
    reqs = load_workload("azure-conv", rate=4.0, duration_s=100.0, seed=1)
    assert reqs == synthetic("azure-conv", 4.0, 100.0, seed=1)
    default_rate = load_workload("azure-code", duration_s=2000.0, seed=1)
    assert len(default_rate) / 2000.0 == pytest.approx(PROFILES["azure-code"].rate_rps, rel=0.15)
    with pytest.raises(ConfigError, match="duration"):
        load_workload("azure-conv", rate=1.0)


def test_load_workload_unknown_lists_choices() -> None:
    with pytest.raises(ConfigError, match="azure-code, azure-conv") as err:
        load_workload("azure-cod", rate=1.0, duration_s=1.0)
    assert err.value.field == "trace"


def _small_csv(tmp_path: Path) -> Path:
    """Arrivals at 0, 1, 2, 3, 4 s: rate (n-1)/span = 1 req/s."""
    rows = "".join(f"2023-11-16 18:00:0{i}.0,{10 + i},{1 + i}\n" for i in range(5))
    return _write(tmp_path, "small.csv", HEADER + rows)


def test_load_workload_file_rate_rescale_and_duration(tmp_path: Path) -> None:
    p = _small_csv(tmp_path)
    assert [r.arrival_s for r in load_workload(p)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    fast = load_workload(str(p), rate=4.0)
    assert [r.arrival_s for r in fast] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert [r.prompt_tokens for r in fast] == [10, 11, 12, 13, 14]
    cut = load_workload(p, rate=2.0, duration_s=1.2)
    assert [r.arrival_s for r in cut] == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(ConfigError, match="synthetic"):
        load_workload(p, arrival="gamma")
    with pytest.raises(ConfigError):
        load_workload(p, rate=0.0)


def test_load_workload_rescale_rejects_single_instant(tmp_path: Path) -> None:
    p = _write(tmp_path, "one.csv", HEADER + "2023-11-16 18:00:00.0,1,1\n")
    with pytest.raises(ConfigError, match="at once"):
        load_workload(p, rate=2.0)


def test_load_workload_unknown_file_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file type"):
        load_workload(_write(tmp_path, "t.parquet", "x"))


def test_load_workload_vllm(tmp_path: Path) -> None:
    _write(tmp_path, "requests.jsonl", _jsonl([GOOD, GOOD | {"queued_ts": 102.0}]))
    as_is = load_workload(tmp_path)
    assert all(isinstance(r, MeasuredRequest) for r in as_is)
    rescaled = load_workload(tmp_path / "requests.jsonl", rate=1.0)
    assert [type(r) for r in rescaled] == [Request, Request]
    assert [r.arrival_s for r in rescaled] == [0.0, 1.0]


@needs_data
def test_load_workload_real_files() -> None:
    conv = load_workload(TRACES / "azure_llm_2023_conv.csv", rate=11.0, duration_s=600.0)
    t = np.array([r.arrival_s for r in conv])
    assert t.max() < 600.0
    assert len(conv) / 600.0 == pytest.approx(11.0, rel=0.25)  # one bursty window of a 1 h trace
    assert len(load_workload(VLLM)) == 300
