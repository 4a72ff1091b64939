"""Readers of request-trace files: Azure LLM inference CSV and vLLM bench ``requests.jsonl``.

Both return requests sorted by arrival with arrivals in seconds relative to the first request and ids
``0..n-1`` in that order. A malformed row raises :class:`WorkloadError` naming the file, the line
(1-based, the header is line 1) and the column.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workloads.errors import WorkloadError
from workloads.requests import Request

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
VLLM_BENCH_FILE = "requests.jsonl"


@dataclass(frozen=True)
class MeasuredRequest(Request):
    """A request replayed from a measured serving run, with the timestamps the server recorded.

    The timestamps are seconds on the server's own clock (absolute, as in the file); ``arrival_s`` is
    ``queued_ts`` relative to the first request's ``queued_ts``. A MeasuredRequest is a Request, so
    it can be simulated as is and compared with its measurement afterwards.
    """

    request_id: str
    queued_ts: float
    scheduled_ts: float | None
    first_token_ts: float | None
    last_token_ts: float | None

    @property
    def ttft_s(self) -> float | None:
        """Measured time to first token: first_token_ts - queued_ts."""
        return None if self.first_token_ts is None else self.first_token_ts - self.queued_ts

    @property
    def e2e_s(self) -> float | None:
        """Measured end-to-end latency: last_token_ts - queued_ts."""
        return None if self.last_token_ts is None else self.last_token_ts - self.queued_ts

    @property
    def tpot_s(self) -> float | None:
        """Measured mean time per output token after the first; None for one-token outputs."""
        if self.first_token_ts is None or self.last_token_ts is None or self.output_tokens < 2:
            return None
        return (self.last_token_ts - self.first_token_ts) / (self.output_tokens - 1)


def _token_count(text: str, *, file: str, line: int, column: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise WorkloadError(f"not an integer token count: {text!r}", file=file, line=line,
                            column=column) from None
    if value < 1:
        raise WorkloadError(f"token count must be >= 1, got {value}", file=file, line=line, column=column)
    return value


def read_azure_csv(path: str | Path) -> list[Request]:
    """Read an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    TIMESTAMP is a datetime string such as ``2023-11-16 18:15:46.6805900`` (no time zone; only
    differences matter). Columns are found by header name, so their order is free and extra columns
    are ignored. Rows are sorted by time (stable), arrivals are relative to the earliest row.
    """
    p = Path(path)
    file = str(p)
    try:
        fh = p.open("r", encoding="utf-8", newline="")
    except FileNotFoundError:
        raise WorkloadError("file not found", file=file) from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise WorkloadError("empty file; expected a header " + ",".join(AZURE_COLUMNS), file=file, line=1)
        names = [h.strip() for h in header]
        idx = []
        for col in AZURE_COLUMNS:
            if col not in names:
                raise WorkloadError(f"missing column in header {','.join(names)!r}", file=file, line=1,
                                    column=col)
            idx.append(names.index(col))
        rows = list(reader)
    fast = _azure_columns(rows, *idx)
    if fast is not None:
        return _to_requests(*fast)
    # a blank, short or malformed row somewhere: the row-by-row pass skips the blanks or names the bad row
    with p.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        i_ts, i_ctx, i_gen = idx
        width = max(idx) + 1
        stamps: list[str] = []
        prompts: list[int] = []
        outputs: list[int] = []
        lines: list[int] = []
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < width:
                missing = [c for c, i in zip(AZURE_COLUMNS, idx, strict=True) if i >= len(row)]
                raise WorkloadError(f"row has {len(row)} fields, expected {len(names)}", file=file,
                                    line=line, column=missing[0])
            stamps.append(row[i_ts].strip())
            prompts.append(_token_count(row[i_ctx], file=file, line=line, column=AZURE_COLUMNS[1]))
            outputs.append(_token_count(row[i_gen], file=file, line=line, column=AZURE_COLUMNS[2]))
            lines.append(line)
    if not stamps:
        raise WorkloadError("no requests in file", file=file)
    times = _parse_timestamps(stamps, lines, file=file)
    return _to_requests(times, np.asarray(prompts), np.asarray(outputs))


def _azure_columns(rows: list[list[str]], i_ts: int, i_ctx: int, i_gen: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(seconds since the earliest timestamp, prompt tokens, output tokens) of well-formed ``rows``, each
    column converted in one call (``int`` on each count, as ``_token_count``; one vectorised datetime
    parse); None when any row is short or blank, or any value bad (the row-by-row pass then skips or
    reports it)."""
    if not rows or min(map(len, rows)) <= max(i_ts, i_ctx, i_gen):
        return None
    try:
        prompts = np.array(list(map(int, [r[i_ctx] for r in rows])))
        outputs = np.array(list(map(int, [r[i_gen] for r in rows])))
        t = np.array([r[i_ts].strip() for r in rows], dtype="datetime64[ns]")
    except (ValueError, OverflowError):
        return None
    if prompts.min() < 1 or outputs.min() < 1 or np.isnat(t).any():
        return None
    ns = t.astype(np.int64)
    return (ns - ns.min()).astype(np.float64) * 1e-9, prompts, outputs


def _parse_timestamps(stamps: list[str], lines: list[int], *, file: str) -> np.ndarray:
    """Datetime strings -> seconds (float64) since the earliest one."""
    try:
        t = np.array(stamps, dtype="datetime64[ns]")
    except ValueError:
        for s, line in zip(stamps, lines, strict=True):
            try:
                np.datetime64(s, "ns")
            except ValueError:
                raise WorkloadError(f"not a datetime: {s!r}", file=file, line=line,
                                    column=AZURE_COLUMNS[0]) from None
        raise  # pragma: no cover - the vectorised parse failed but no single string did
    bad = np.isnat(t)
    if bad.any():
        i = int(np.argmax(bad))
        raise WorkloadError(f"not a datetime: {stamps[i]!r}", file=file, line=lines[i], column=AZURE_COLUMNS[0])
    ns = t.astype(np.int64)
    return (ns - ns.min()).astype(np.float64) * 1e-9


def _to_requests(times: np.ndarray, prompts: np.ndarray, outputs: np.ndarray) -> list[Request]:
    order = np.argsort(times, kind="stable")
    t = (times[order] - times[order[0]]).tolist()
    pr = prompts[order].tolist()
    out = outputs[order].tolist()
    return [Request(i, t[i], pr[i], out[i]) for i in range(len(t))]


def _bench_path(path_or_dir: str | Path) -> Path:
    p = Path(path_or_dir)
    return p / VLLM_BENCH_FILE if p.is_dir() else p


def _field(rec: dict[str, Any], key: str, *, file: str, line: int, optional: bool = False) -> Any:
    if key not in rec:
        if optional:
            return None
        raise WorkloadError("missing key", file=file, line=line, column=key)
    return rec[key]


def _int_field(rec: dict[str, Any], key: str, *, file: str, line: int) -> int:
    v = _field(rec, key, file=file, line=line)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise WorkloadError(f"not an integer token count: {v!r}", file=file, line=line, column=key)
    if v < 1:
        raise WorkloadError(f"token count must be >= 1, got {v!r}", file=file, line=line, column=key)
    return int(v)


def _time_field(rec: dict[str, Any], key: str, *, file: str, line: int, optional: bool) -> float | None:
    v = _field(rec, key, file=file, line=line, optional=optional)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise WorkloadError(f"not a timestamp in seconds: {v!r}", file=file, line=line, column=key)
    return float(v)


def _required_time(rec: dict[str, Any], key: str, *, file: str, line: int) -> float:
    v = _time_field(rec, key, file=file, line=line, optional=False)
    if v is None:  # pragma: no cover - optional=False never returns None
        raise WorkloadError("missing timestamp", file=file, line=line, column=key)
    return v


def read_vllm_bench(path_or_dir: str | Path) -> list[MeasuredRequest]:
    """Read a vLLM bench run: a folder holding ``requests.jsonl`` or the file itself.

    Each line is a JSON object with ``input_toks``, ``output_toks`` and ``queued_ts`` (the arrival on
    the server clock, s; required) and ``request_id``, ``scheduled_ts``, ``first_token_ts``,
    ``last_token_ts`` (optional; null for a request that never ran). Arrivals are ``queued_ts``
    relative to the earliest one.
    """
    p = _bench_path(path_or_dir)
    file = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkloadError("file not found", file=file) from None
    except IsADirectoryError:  # pragma: no cover - a folder named requests.jsonl
        raise WorkloadError("is a directory", file=file) from None
    rows: list[tuple[str, int, int, float, float | None, float | None, float | None]] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"not valid JSON: {exc.msg} at character {exc.colno}", file=file,
                                line=line) from None
        if not isinstance(rec, dict):
            raise WorkloadError(f"expected a JSON object, got {type(rec).__name__}", file=file, line=line)
        rid = rec.get("request_id", f"line-{line}")
        rows.append((
            str(rid),
            _int_field(rec, "input_toks", file=file, line=line),
            _int_field(rec, "output_toks", file=file, line=line),
            _required_time(rec, "queued_ts", file=file, line=line),
            _time_field(rec, "scheduled_ts", file=file, line=line, optional=True),
            _time_field(rec, "first_token_ts", file=file, line=line, optional=True),
            _time_field(rec, "last_token_ts", file=file, line=line, optional=True),
        ))
    if not rows:
        raise WorkloadError("no requests in file", file=file)
    rows.sort(key=lambda r: r[3])  # stable: ties keep file order
    t0 = rows[0][3]
    return [MeasuredRequest(i, r[3] - t0, r[1], r[2], r[0], r[3], r[4], r[5], r[6])
            for i, r in enumerate(rows)]
