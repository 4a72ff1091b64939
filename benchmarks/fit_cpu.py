"""Measure this host's CPU on isolated aten ops and fit the constants of ``hwmodels/cpu.py``.

    python benchmarks/fit_cpu.py OUT_DIR [--threads 1] [--quick]

Writes ``OUT_DIR/microbench.csv`` (one row per case: the aten op, its class, FLOPs, bytes, the median
thread CPU time and wall time) and ``OUT_DIR/provenance.json`` (CPU model, torch version, threads,
date, load average), then prints the ``[efficiency]`` and ``[overhead_us]`` tables of the CPU spec
TOML, fitted per aten class by least squares on the relative error of the model's
``overhead + max(flops / (peak * eff_compute), bytes / (bandwidth * eff_memory))``.

Timing: ``time.thread_time`` (this thread's CPU time), median of 7 samples, each a loop long enough
(>= 2 ms) to make the clock's resolution negligible; one intra-op thread, because this machine's two
cores are shared with other users: with two threads, every parallel op waits at OpenMP's barrier for a
descheduled thread (15 ms per op measured under load), and thread CPU time excludes the time the
thread is descheduled. The DRAM and LLC bandwidths are a 256 MiB and a 4 MiB ``copy_``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from scipy.optimize import least_squares

from hwmodels.cpu import host_cpu_name
from workloads.pytorch.tracer import AtenClass, TracedOp, trace

MIB = 1024**2


def cpu_time(fn: Callable[[], object], samples: int = 7) -> tuple[float, float]:
    """(median thread CPU seconds, median wall seconds) of one call."""
    fn()
    t0 = time.thread_time()
    fn()
    one = max(time.thread_time() - t0, 1e-7)
    loops = max(1, int(2e-3 / one))
    cpu, wall = [], []
    for _ in range(samples):
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(loops):
            fn()
        cpu.append((time.thread_time() - c0) / loops)
        wall.append((time.perf_counter() - w0) / loops)
    return statistics.median(cpu), statistics.median(wall)


def cases(quick: bool) -> list[tuple[str, Callable[[], object]]]:
    g = torch.Generator().manual_seed(0)
    out: list[tuple[str, Callable[[], object]]] = []
    # GEMMs: the Llama-3.2-1B weight shapes (n, k) of workloads.llm_ops, activation rows m
    ms = (1, 4, 16, 64, 256) if quick else (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    for n, k in ((3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192)):
        w = torch.randn(n, k, generator=g)
        for m in ms:
            if m * n * k > 512 * 16384 * 2048 // (4 if quick else 1):
                continue
            a = torch.randn(m, k, generator=g)
            out.append((f"mm m={m} n={n} k={k}", lambda a=a, w=w: torch.mm(a, w.t())))
    # attention (SDPA -> flash attention for CPU): 1B heads (32 q, 8 kv, dim 64)
    for b, t in ((1, 64), (1, 256), (4, 128), (1, 512), (4, 256)):
        q = torch.randn(b, 32, t, 64, generator=g)
        kv = torch.randn(b, 8, t, 64, generator=g)
        out.append((f"sdpa prefill b={b} t={t}", lambda q=q, kv=kv: torch.nn.functional.scaled_dot_product_attention(
            q, kv, kv, is_causal=True, enable_gqa=True)))
    for b, t in ((1, 128), (4, 512), (1, 2048), (16, 512), (4, 1024)):
        q = torch.randn(b, 32, 1, 64, generator=g)
        kv = torch.randn(b, 8, t, 64, generator=g)
        out.append((f"sdpa decode b={b} kv={t}", lambda q=q, kv=kv: torch.nn.functional.scaled_dot_product_attention(
            q, kv, kv, enable_gqa=True)))
    # memory-bound ops over the activation sizes of 1B steps (rows x 2048 and rows x 8192)
    for rows in (1, 4, 16, 64, 256, 1024, 2048):
        for width in (2048, 8192):
            x = torch.randn(rows, width, generator=g)
            y = torch.randn(rows, width, generator=g)
            w = torch.randn(width, generator=g)
            out += [(f"add {rows}x{width}", lambda x=x, y=y: x + y),
                    (f"mul-bcast {rows}x{width}", lambda x=x, w=w: x * w),
                    (f"silu {rows}x{width}", lambda x=x: torch.nn.functional.silu(x)),
                    (f"pow {rows}x{width}", lambda x=x: x.pow(2)),
                    (f"mean {rows}x{width}", lambda x=x: x.mean(-1, keepdim=True)),
                    (f"cat {rows}x{width}", lambda x=x, y=y: torch.cat((x, y), dim=-1)),
                    (f"copy_ {rows}x{width}", lambda x=x, y=y: y.copy_(x))]
    table = torch.randn(128256, 2048, generator=g)
    for rows in (4, 64, 512, 2048):
        idx = torch.randint(0, 128256, (rows,), generator=g)
        out.append((f"embedding rows={rows}", lambda idx=idx: torch.nn.functional.embedding(idx, table)))
    for n in (16, 4096, 65536, 16 * MIB):
        out.append((f"arange {n}", lambda n=n: torch.arange(n)))
        out.append((f"zeros {n}", lambda n=n: torch.zeros(n)))
    for b, t in ((1, 128), (4, 512)):  # the RoPE rotate-half and cache-write shapes of a 1B prefill
        x = torch.randn(b, 32, t, 64, generator=g)
        out.append((f"neg-half b={b} t={t}", lambda x=x: -x[..., 32:]))
        out.append((f"mul-rope b={b} t={t}", lambda x=x: x * x[0, 0]))
    v = torch.randn(64, 64)
    out.append(("view", lambda: v.view(4096)))
    out.append(("transpose", lambda: v.t()))
    return out


def bandwidth(nbytes: int) -> float:
    x = torch.empty(nbytes // 4).normal_()
    y = torch.empty_like(x)
    cpu, _ = cpu_time(lambda: y.copy_(x))
    return 2 * nbytes / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    pairs: list[tuple[TracedOp, float]] = []
    with torch.no_grad():
        for label, fn in cases(args.quick):
            g, _ = trace(fn)
            ops = g.costed() or g.ops
            main_op = max(ops, key=lambda o: (o.aclass is not AtenClass.VIEW, o.flops + o.bytes))
            cpu, wall = cpu_time(fn)
            pairs.append((main_op, cpu))
            rows.append({"case": label, "aten": main_op.aten, "class": main_op.aclass.value,
                         "flops": main_op.flops, "bytes": main_op.bytes,
                         "shapes": json.dumps([list(s) for s in main_op.input_shapes]),
                         "cpu_s": f"{cpu:.6e}", "wall_s": f"{wall:.6e}"})
        dram = bandwidth(256 * MIB)
        llc = bandwidth(4 * MIB)
        faults = page_fault_bandwidth()
    with open(args.out / "microbench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    prov = {"cpu": host_cpu_name(), "cores_online": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg_before_after": os.getloadavg(), "timer": "time.thread_time, median of 7",
            "dram_copy_gb_per_s": dram / 1e9, "llc_copy_gb_per_s": llc / 1e9,
            "page_fault_gb_per_s": faults / 1e9}
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    fit(pairs, dram, llc, faults)


def page_fault_bandwidth(nbytes: int = 128 * MIB) -> float:
    """Bytes/s of first-touch faults: a fresh ``torch.ones`` minus a ``fill_`` of an existing tensor."""
    y = torch.empty(nbytes // 4)
    fresh, _ = cpu_time(lambda: torch.ones(nbytes // 4))
    reuse, _ = cpu_time(lambda: y.fill_(1.0))
    return nbytes / max(fresh - reuse, 1e-9)


def fit(pairs: list[tuple[TracedOp, float]], dram: float, llc: float, faults: float) -> None:
    """Per aten class: (eff_compute, eff_memory, overhead[, gemm_m_half]) minimising the squared
    relative error of hwmodels.cpu.CPUModel over that class's cases."""
    from dataclasses import replace

    from hwmodels.cpu import TRANSCENDENTAL, CPUModel, load_cpu

    base = load_cpu("epyc-zen3-2c-kvm")  # the silicon fields (cores, SIMD, FMA, clock, LLC size)
    base = replace(base, memory_bandwidth=dram, llc_bandwidth=llc, page_fault_bandwidth=faults)
    print(f"memory_bandwidth_gb_per_s = {dram / 1e9:.2f}\nllc_bandwidth_gb_per_s = {llc / 1e9:.2f}\n"
          f"page_fault_gb_per_s = {faults / 1e9:.3f}\n# peak fp32 one core {base.peak_flops(1) / 1e9:.1f} GFLOP/s")

    def key(o: TracedOp) -> str:
        return "transcendental" if o.aten.split("::")[-1] in TRANSCENDENTAL else o.aclass.value

    eff_lines, ovh_lines = [], []
    for cls in sorted({key(o) for o, _ in pairs}):
        sel = [(o, t) for o, t in pairs if key(o) == cls]
        t = np.array([t for _, t in sel])
        if cls == "view":
            ovh_lines.append(f"view = {float(np.median(t)) * 1e6:.2f}  # n={len(t)}")
            continue
        gemm = cls == "gemm"

        def model(p: np.ndarray, sel=sel, cls=cls, gemm=gemm) -> np.ndarray:  # type: ignore[no-untyped-def]
            ec, em, ov = np.exp(p[:3])
            eff = dict(base.efficiency, **{f"{cls}_compute": min(ec, 1.0), f"{cls}_memory": min(em, 1.0)})
            spec = replace(base, efficiency=eff, overhead_s=dict(base.overhead_s, **{cls: ov * 1e-6}),
                           gemm_m_half=float(np.exp(p[3])) if gemm else base.gemm_m_half)
            m = CPUModel(spec, threads=1)
            return np.array([m.time(o) for o, _ in sel])

        x0 = np.log([0.5, 0.5, 5.0] + ([20.0] if gemm else []))
        lo = np.log([1e-4, 1e-3, 0.05] + ([0.1] if gemm else []))
        hi = np.log([1.0, 1.0, 1e4] + ([1e4] if gemm else []))
        res = least_squares(lambda p, t=t: model(p) / t - 1.0, x0=x0, bounds=(lo, hi))
        ec, em, ov = np.exp(res.x[:3])
        pred = model(res.x)
        wape = float(np.abs(pred - t).sum() / t.sum())
        mape = float(np.mean(np.abs(pred - t) / t))
        if gemm:
            print(f"gemm_m_half = {np.exp(res.x[3]):.1f}")
        eff_lines.append(f"{cls}_compute = {ec:.4f}")
        eff_lines.append(f"{cls}_memory = {em:.3f}  # n={len(t)}, in-sample wape {wape:.3f} mape {mape:.3f}")
        ovh_lines.append(f"{cls} = {ov:.2f}")
    print("[efficiency]\n" + "\n".join(eff_lines))
    print("[overhead_us]\n" + "\n".join(ovh_lines))


if __name__ == "__main__":
    main()
