"""The power controller's transient: compute-bound kernel times from the first call after idle onwards (CUDA).

After ``idle`` seconds the GPU runs (a) the Llama-3.1-8B gate_up GEMM (2048 x 28672 x 4096 bf16) 600 times
back to back, then (b) 8 eager prefill steps (4 x 512 tokens) of the built-in Llama-3.1-8B back to back,
each under the profiler; for idle = 2 s and 0.2 s. Every device kernel longer than 500 us is kept with its
start time (ms from the first kernel) and duration (us): the GEMM's own series, and the step's gate_up
projections. Writes one JSON object ``{case: [[t_ms, us], ...]}`` and prints the medians per 50 ms::

    python benchmarks/collect_clock_transient.py OUT.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def series(fn, reps: int, min_us: float = 500.0) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    ev = sorted((e for e in prof.events() if "CUDA" in str(getattr(e, "device_type", ""))),
                key=lambda e: e.time_range.start)
    t0 = ev[0].time_range.start
    return [(round((e.time_range.start - t0) / 1e3, 3), round(e.time_range.end - e.time_range.start, 1))
            for e in ev if e.time_range.end - e.time_range.start > min_us]


def main(argv: list[str]) -> None:
    import torch

    from workloads.catalog import load_model
    from workloads.pytorch.llama import build_llama

    out = Path(argv[0])
    spec = load_model("llama-3.1-8b")
    model = build_llama(spec, dtype=torch.bfloat16, device="cuda")
    tokens = torch.randint(0, spec.vocab_size, (4, 512), device="cuda")
    cache = model.new_cache(4, 513)

    def prefill() -> None:
        cache.length = 0
        model(tokens, cache)

    m, n, k = 2048, 2 * spec.intermediate_size, spec.hidden_size
    wa = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    wb = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    wc = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)

    def gemm() -> None:
        torch.mm(wa, wb, out=wc)

    res: dict[str, list[tuple[float, float]]] = {}
    with torch.no_grad():
        for _ in range(3):
            prefill()
            gemm()
        torch.cuda.synchronize()
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
