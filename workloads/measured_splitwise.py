"""Reader of SplitwiseSim's ``perf_model.csv`` (Mutinifni/splitwise-sim ``data/perf_model.csv``).

Each row is one isolated batch measured on a DGX machine (Patel et al., "Splitwise", ISCA 2024): ``model``,
``hardware``, ``prompt_size`` (prompt tokens per request), ``batch_size`` (requests), ``token_size``
(output tokens per request), ``tensor_parallel``, and the measured ``prompt_time`` (the prompt phase of
the batch: time to the first token) and ``token_time`` (mean time between tokens), in ms. Model names
are the file's own (``llama2-70b``, ``bloom-176b``) and resolve to catalog names here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import WorkloadError

# the file's model names -> catalog names (workloads/models/)
MODEL_NAMES = {"llama2-70b": "llama-2-70b", "bloom-176b": "bloom-176b"}
COLUMNS = ("model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time", "token_time",
           "tensor_parallel")


@dataclass(frozen=True)
class SplitwiseRow:
    line: int
    model: str          # catalog name
    hardware: str       # as the file writes it (a100-80gb)
    prompt: int
    batch: int
    output: int
    tp: int
    prompt_s: float
    token_s: float
    # optional columns (0: absent or not recorded): peak_power / average_power normalised to the GPU's TDP
    # (0 in the file where not measured), e2e_time in seconds
    peak_power: float = 0.0
    average_power: float = 0.0
    e2e_s: float = 0.0


def read_splitwise_perf(path: str | Path) -> list[SplitwiseRow]:
    """Rows of a perf_model.csv; a missing column or a bad value is a ``WorkloadError`` naming the line."""
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise WorkloadError("file not found", file=str(p)) from None
    rows: list[SplitwiseRow] = []
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise WorkloadError(f"missing columns {missing}", file=str(p), line=1)
        for i, r in enumerate(reader, start=2):
            def num(col: str, kind: type = float, r: dict = r, i: int = i) -> float:
                try:
                    v = kind(r[col])
                except (TypeError, ValueError):
                    raise WorkloadError(f"not a number: {r[col]!r}", file=str(p), line=i, column=col) from None
                if not v > 0:
                    raise WorkloadError(f"must be > 0, got {v!r}", file=str(p), line=i, column=col)
                return float(v)

            def opt(col: str, r: dict = r, i: int = i) -> float:
                if not r.get(col):
                    return 0.0
                try:
                    v = float(r[col])
                except (TypeError, ValueError):
                    raise WorkloadError(f"not a number: {r[col]!r}", file=str(p), line=i, column=col) from None
                if v < 0:
                    raise WorkloadError(f"must be >= 0, got {v!r}", file=str(p), line=i, column=col)
                return v

            name = (r["model"] or "").strip()
            rows.append(SplitwiseRow(
                line=i, model=MODEL_NAMES.get(name, name), hardware=(r["hardware"] or "").strip(),
                prompt=int(num("prompt_size", int)), batch=int(num("batch_size", int)),
                output=int(num("token_size", int)), tp=int(num("tensor_parallel", int)),
                prompt_s=num("prompt_time") * 1e-3, token_s=num("token_time") * 1e-3,
                peak_power=opt("peak_power"), average_power=opt("average_power"), e2e_s=opt("e2e_time") * 1e-3))
    if not rows:
        raise WorkloadError("no rows", file=str(p))
    return rows
