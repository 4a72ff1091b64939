"""The power controller's transient: compute-bound kernel times from the first call after idle onwards (CUDA).

After ``idle`` seconds the GPU runs (a) the Llama-3.1-8B gate_up GEMM (2048 x 28672 x 4096 bf16) 600 times
back to back, then (b) 8 eager prefill steps (4 x 512 tokens) of the built-in Llama-3.1-8B back to back,
each under the profiler; for idle = 2 s and 0.2 s. Every device kernel longer than 500 us is kept with its
start time (ms from the first kernel) and duration (us): the GEMM's own series, and the step's gate_up
projections. Writes one JSON object ``{case: [[t_ms, us], ...]}`` and prints the medians per 50 ms::

    python benchmarks/collect_clock_transient.py OUT.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _clock_kit import cuda_kernels, llama_bench, warm_up


def series(fn, reps: int, min_us: float = 500.0) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    ev = cuda_kernels(fn, reps)
    t0 = ev[0][0]
    return [(round((start - t0) / 1e3, 3), round(end - start, 1)) for start, end in ev if end - start > min_us]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="the JSON file to write")
    out = ap.parse_args(argv).out

    import torch

    b = llama_bench("llama-3.1-8b", 4, 512)
    prefill, gemm = b.prefill, b.gemm

    res: dict[str, list[tuple[float, float]]] = {}
    with torch.no_grad():
        warm_up(b)
        for idle in (2.0, 0.2):
            time.sleep(idle)
            res[f"gemm_after_{idle}s"] = series(gemm, 600)
            time.sleep(idle)
            res[f"prefill_after_{idle}s"] = series(prefill, 8)
    out.write_text(json.dumps(res))
    for key, s in res.items():
        ts = [d for _, d in s]
        per50 = [round(statistics.median([d for t, d in s if lo <= t < lo + 50]), 1)
                 for lo in range(0, int(s[-1][0]) + 1, 50) if any(lo <= t < lo + 50 for t, _ in s)]
        print(json.dumps({"case": key, "kernels": len(ts), "first5_us": ts[:5], "median_us_per_50ms": per50}))


if __name__ == "__main__":
    main(sys.argv[1:])
