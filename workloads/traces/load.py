"""Resolve a ``--trace`` argument into requests: a synthetic profile name or a trace file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from workloads.errors import ConfigError
from workloads.requests import Request
from workloads.traces.profiles import PROFILES
from workloads.traces.readers import VLLM_BENCH_FILE, MeasuredRequest, read_azure_csv, read_vllm_bench
from workloads.traces.synthetic import Arrival, synthetic


def trace_choices() -> list[str]:
    """What ``load_workload`` accepts, for help texts and error messages."""
    return [*sorted(PROFILES), "<file>.csv (Azure)", f"<dir> or <file>.jsonl (vLLM bench {VLLM_BENCH_FILE})"]


def load_workload(spec: str | Path, rate: float | None = None, duration_s: float | None = None,
                  seed: int = 0, arrival: Arrival | str | None = None,
                  cv: float | None = None) -> list[Request]:
    """Requests for ``spec``: ``'azure-code'`` / ``'azure-conv'`` (synthetic) or a path to a trace file.

    Synthetic: ``rate`` (req/s) defaults to the profile's measured mean rate; ``duration_s`` is required;
    ``seed``, ``arrival`` and ``cv`` are passed to :func:`synthetic`.

    File (an Azure CSV, a vLLM bench folder or its ``requests.jsonl``): arrivals are replayed as
    recorded. With ``rate``, arrival times are multiplied by one factor so that the mean rate, defined
    as (n - 1) / (last arrival - first arrival), equals ``rate``; this keeps the order, the lengths and
    the burstiness (cv of the gaps) of the trace. Then ``duration_s`` keeps only arrivals before it.
    Rescaled vLLM requests become plain Requests (their measured timestamps no longer apply).
    ``seed``, ``arrival`` and ``cv`` do not apply to files and are rejected when given.
    """
    name = str(spec)
    if name in PROFILES:
        if duration_s is None:
            raise ConfigError("a synthetic workload needs a duration", field="duration_s")
        use_rate = PROFILES[name].rate_rps if rate is None else rate
        return synthetic(name, use_rate, duration_s, seed, arrival=arrival, cv=cv)
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"unknown trace (no such profile or file); choices: {', '.join(trace_choices())}",
                          field="trace", value=name)
    if arrival is not None or cv is not None:
        raise ConfigError("arrival and cv apply to synthetic workloads only, not to a trace file",
                          file=name, field="arrival" if arrival is not None else "cv")
    requests: list[Request]
    if path.is_dir() or path.suffix.lower() == ".jsonl":
        requests = list(read_vllm_bench(path))
    elif path.suffix.lower() == ".csv":
        requests = read_azure_csv(path)
    else:
        raise ConfigError(f"unknown trace file type {path.suffix!r}; choices: {', '.join(trace_choices())}",
                          file=name, field="trace", value=name)
    if rate is not None:
        requests = rescale_rate(requests, rate, file=name)
    if duration_s is not None:
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise ConfigError(f"must be a finite number > 0, got {duration_s!r}", field="duration_s",
                              value=duration_s)
        requests = [r for r in requests if r.arrival_s < duration_s]
    return requests


def rescale_rate(requests: list[Request], rate: float, *, file: str = "") -> list[Request]:
    """Stretch or compress arrival times so the mean rate (n - 1) / span equals ``rate`` req/s."""
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"must be a finite number > 0, got {rate!r}", field="rate", value=rate)
    span = requests[-1].arrival_s - requests[0].arrival_s if requests else 0.0
    if len(requests) < 2 or span <= 0:
        raise ConfigError("cannot rescale the rate of a trace whose requests all arrive at once",
                          file=file or None, field="rate", value=rate)
    factor = (len(requests) - 1) / span / rate
    t0 = requests[0].arrival_s
    return [Request(r.id, (r.arrival_s - t0) * factor, r.prompt_tokens, r.output_tokens)
            if isinstance(r, MeasuredRequest) else dataclasses.replace(r, arrival_s=(r.arrival_s - t0) * factor)
            for r in requests]
