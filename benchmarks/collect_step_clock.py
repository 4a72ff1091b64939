"""How fast a compute-bound kernel runs inside an eager step, after idle and under sustained load (CUDA).

The same bf16 GEMM measures ~600 us inside a profiled prefill step of the built-in Llama-3.1-8B, ~650 us
isolated and ~700 us back to back on an H100/H200 (validation/measured/*/README.md): the SM clock the
power controller grants depends on what ran before. This script separates the two candidate causes:

* ``after idle``: the GPU idles ``--idle`` seconds, then one prefill step runs under the profiler (the
  situation of ``xpusim validate torch``: steps between profiler start/stop and host work);
* ``sustained``: prefill steps run back to back for ``--seconds`` while NVML samples the SM clock and
  board power (``collect_power.run``), then one more step runs under the profiler with no gap;
* the step's largest GEMM (gate_up, m = batch x prompt) alone, after idle and back to back, the same way.

For each, the profiler's device time of the GEMM kernels of at least ``--min-us`` (the gate_up and down
projections of every layer: their median) and, for the sustained runs, the sampled clock and power. One
JSON line per case, also written to ``OUT/step_clock.jsonl``::

    python benchmarks/collect_step_clock.py OUT [--model llama-3.1-8b] [--batch 4] [--prompt 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _clock_kit import cuda_kernels, llama_bench, warm_up


def _gemm_kernels_us(fn, min_us: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Device times (us) of the kernels of one call of ``fn`` that last at least ``min_us``."""
    out = []
    for start, end in cuda_kernels(fn):
        us = float(end - start)   # the kernel's own duration (us)
        if us >= min_us:
            out.append(us)
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--min-us", type=float, default=250.0)
    a = ap.parse_args(argv)

    import torch
    from collect_power import _sampler, run

    a.out.mkdir(parents=True, exist_ok=True)
    read, how = _sampler()
    b = llama_bench(a.model, a.batch, a.prompt)
    prefill, decode, gemm = b.prefill, b.decode, b.gemm
    m, n, k = b.mnk

    res = []
    prov = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0), "sampler": how, "model": a.model, "batch": a.batch,
            "prompt": a.prompt, "gemm": [m, n, k]}
    with torch.no_grad():
        warm_up(b)                   # cuBLAS heuristics, allocator
        for name, fn in (("prefill step", prefill), ("gate_up gemm alone", gemm)):
            time.sleep(a.idle)
            ks = _gemm_kernels_us(fn, a.min_us)
            r = {"case": f"{name} after {a.idle:g} s idle", "kernels": len(ks),
                 "kernel_us_median": round(statistics.median(ks), 1) if ks else None,
                 "kernel_us_first": round(ks[0], 1) if ks else None, "kernel_us_last": round(ks[-1], 1) if ks else None}
            res.append(r)
            print(json.dumps(r), flush=True)
            s = run(f"{name} back to back", fn, a.seconds, read)
            ks = _gemm_kernels_us(fn, a.min_us)
            s.update({"case": f"{name} back to back", "kernels": len(ks),
                      "kernel_us_median": round(statistics.median(ks), 1) if ks else None})
            res.append(s)
            print(json.dumps(s), flush=True)
        time.sleep(a.idle)
        s = run("decode step back to back", decode, a.seconds, read)
        s["case"] = "decode step back to back"
        res.append(s)
        print(json.dumps(s), flush=True)
    tmp = a.out / "step_clock.jsonl.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"provenance": prov}) + "\n")
        for r in res:
            f.write(json.dumps(r) + "\n")
    tmp.replace(a.out / "step_clock.jsonl")


if __name__ == "__main__":
    main(sys.argv[1:])
