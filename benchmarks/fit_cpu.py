"""Measure this host's CPU on isolated aten ops and in a model, and fit the constants of ``hwmodels/cpu.py``.

    python benchmarks/fit_cpu.py OUT_DIR [--threads 1] [--quick] [--refit]

``--refit`` measures nothing: it re-traces the cases (and the in-model configuration) and fits on the
times already in ``OUT_DIR``.

Two sets of measurements, two sets of constants:

1. isolated ops in hot loops (``microbench.csv``): per aten class the hot overhead and efficiencies,
   and the GEMM ramp and its floor (``gemm_m_half``, ``gemm_min_ramp``: MKL's GEMV-like small-m kernels);
2. one in-model configuration (``inmodel_ops.csv``: ``IN_MODEL`` below, per-op profiler times of the
   built-in Llama module, as ``xpusim validate torch`` takes them): per aten class the
   ``cold_overhead`` an op pays when its code was evicted from L2 by the bytes other ops moved since
   it last ran (the median of measured minus the hot model over that class's code-cold ops). Other
   configurations (batch, prompt, model) are the held-out check.

Writes ``OUT_DIR/microbench.csv`` (one row per case: the aten op, its class, FLOPs, bytes, the median
thread CPU time and wall time) and ``OUT_DIR/provenance.json`` (CPU model, torch version, threads,
date, load average), then prints the ``[efficiency]`` and ``[overhead_us]`` tables of the CPU spec
TOML, fitted per aten class by least squares on the relative error of the model's
``overhead + max(flops / (peak * eff_compute), bytes / (bandwidth * eff_memory))``.

Timing: ``time.thread_time`` (this thread's CPU time), median of 7 samples, each a loop long enough
(>= 2 ms) to make the clock's resolution negligible; one intra-op thread, because this machine's two
cores are shared with other users: with two threads, every parallel op waits at OpenMP's barrier for a
descheduled thread (15 ms per op measured under load), and thread CPU time excludes the time the
thread is descheduled. The DRAM bandwidth is the fastest one-thread read stream measured (a 256 MiB
``sum`` and the one-row ``mm`` of a 128 MiB weight, MKL's GEMV), the LLC bandwidth a 4 MiB ``copy_``.
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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from scipy.optimize import least_squares

from hwmodels.cpu import CPUModel, CPUSpec, code_state, load_cpu, op_class, step_reuse
from workloads.ops import Gemm
from workloads.pytorch.measure import bandwidth, cpu_name, cpu_time, host_cpu_facts, read_bandwidth
from workloads.pytorch.tracer import AtenClass, TracedOp, trace

MIB = 1024**2
COMPUTE_BOUND = ("gemm", "attention")  # the aten classes whose compute efficiency the hot loops identify
# the in-model fitting configuration (the held-out figures use other batches, prompts and models)
IN_MODEL = {"model": "llama-3.2-1b", "layers": 4, "batch": 4, "prompt": 32, "decode": 4}


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


def trace_steps(cfg: dict[str, object]) -> list[list[TracedOp]]:
    """The traced ops of each step of ``cfg`` (prefill, then decode steps), as ``run_llama`` traces them."""
    from workloads.catalog import load_model
    from workloads.pytorch.llama import build_llama

    spec = load_model(str(cfg["model"]))
    b, p, d = int(cfg["batch"]), int(cfg["prompt"]), int(cfg["decode"])  # type: ignore[call-overload]
    model = build_llama(spec, dtype=torch.float32, num_layers=int(cfg["layers"]), seed=0)  # type: ignore[call-overload]
    tokens = torch.randint(0, spec.vocab_size, (b, p + d), generator=torch.Generator().manual_seed(0))
    cache = model.new_cache(b, p + d)
    out = []
    with torch.no_grad():
        for i in range(d + 1):
            def fn(i: int = i) -> object:  # as run_llama's step: the token slice is inside the trace
                cache.length = 0 if i == 0 else p + i - 1
                return model(tokens[:, :p] if i == 0 else tokens[:, p + i - 1:p + i], cache)
            out.append(trace(fn, module=model)[0].ops)
    return out


def measure_in_model(out: Path, threads: int) -> None:
    from workloads.catalog import load_model
    from workloads.pytorch.runner import run_llama

    cfg = IN_MODEL
    run = run_llama(load_model(str(cfg["model"])), dtype="fp32", batch=int(cfg["batch"]),  # type: ignore[call-overload]
                    prompt=int(cfg["prompt"]), decode=int(cfg["decode"]), repeats=1,  # type: ignore[call-overload]
                    threads=threads, num_layers=int(cfg["layers"]))  # type: ignore[call-overload]
    with open(out / "inmodel_ops.csv", "w", newline="") as fh:
        for k, v in {**run.provenance, "config": json.dumps(cfg)}.items():
            fh.write(f"# {k}: {v}\n")
        w = csv.writer(fh)
        w.writerow(["step", "op_index", "aten", "class", "bytes", "measured_s"])
        for st in run.steps:
            for op, t in zip(st.graph.ops, st.op_seconds):
                if op.costs and t is not None:
                    w.writerow([st.index, op.index, op.aten, op.aclass.value, op.bytes, f"{t:.6e}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--refit", action="store_true", help="fit on the measurements already in OUT_DIR")
    ap.add_argument("--spec-out", type=Path, default=None,
                    help="write the fitted spec of this host to this TOML file (for validate torch --cpu PATH)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.refit:
        refit(args.out, args.quick, args.spec_out)
        return
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
        dram = read_bandwidth()
        copy_dram = bandwidth(256 * MIB)
        llc = bandwidth(4 * MIB)
        faults = page_fault_bandwidth()
        prof_event = profiler_event_overhead()
    with open(args.out / "microbench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    prov = {"cpu": cpu_name(), "host_cpu": host_cpu_facts(), "cores_online": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg_before_after": os.getloadavg(), "timer": "time.thread_time, median of 7",
            "dram_read_gb_per_s": dram / 1e9, "dram_copy_gb_per_s": copy_dram / 1e9, "llc_copy_gb_per_s": llc / 1e9,
            "page_fault_gb_per_s": faults / 1e9, "profiler_event_us": prof_event * 1e6}
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    measure_in_model(args.out, args.threads)
    refit(args.out, args.quick, args.spec_out)


def host_base(facts: dict[str, object]) -> CPUSpec:
    """The catalog spec's structure with a measured host's silicon fields (``provenance.json``'s
    ``host_cpu``: :func:`workloads.pytorch.measure.host_cpu_facts`); the constants are refitted after."""
    base = load_cpu("epyc-zen3-2c-kvm")
    f = {k: v for k, v in facts.items() if v is not None}
    return replace(
        base, id="host", name=f"{f.get('name', 'this host')}, {f.get('cores', base.cores)} CPUs "
                              f"(measured by benchmarks/fit_cpu.py)",
        cores=int(f.get("cores", base.cores)),  # type: ignore[call-overload]
        simd_width_bits=int(f.get("simd_width_bits", base.simd_width_bits)),  # type: ignore[call-overload]
        fma_units_per_core=int(f.get("fma_units_per_core", base.fma_units_per_core)),  # type: ignore[call-overload]
        clock_hz=float(f.get("clock_ghz", base.clock_hz / 1e9)) * 1e9,  # type: ignore[arg-type]
        llc_bytes=float(f.get("llc_mib", base.llc_bytes / MIB)) * MIB,  # type: ignore[arg-type]
        l2_bytes=float(f.get("l2_kib", base.l2_bytes / 1024)) * 1024)  # type: ignore[arg-type]


def write_spec(spec: CPUSpec, path: Path, prov: dict[str, object]) -> None:
    """The fitted spec as a complete CPU spec TOML (``--cpu PATH`` of ``xpusim validate torch``), written to a
    temporary file and renamed."""
    from hwmodels.cpu import spec_toml
    from xpusim.report import atomic_write_text

    comment = (f"Measured and fitted by `python benchmarks/fit_cpu.py DIR --spec-out {path.name}` on "
               f"{prov.get('date', '?')}\n(host: {prov.get('cpu', '?')}, torch {prov.get('torch', '?')}, "
               f"{prov.get('threads', 1)} thread(s)). fma_units_per_core is assumed from the fma flag.")
    text = spec_toml(spec, comment, source=f"benchmarks/fit_cpu.py on {prov.get('date', '?')}")
    atomic_write_text(path, text)


def refit(out: Path, quick: bool, spec_out: Path | None = None) -> None:
    """Fit on the files of ``out``: the microbenchmarks' cases re-traced and matched by label. With
    ``spec_out``, the silicon fields are the measured host's (``provenance.json``'s ``host_cpu``) and the
    whole spec is written there."""
    prov = json.loads((out / "provenance.json").read_text())
    times = {r["case"]: float(r["cpu_s"]) for r in csv.DictReader(open(out / "microbench.csv"))}
    pairs = []
    with torch.no_grad():
        for label, fn in cases(quick):
            if label not in times:
                continue
            g, _ = trace(fn)
            ops = g.costed() or g.ops
            pairs.append((max(ops, key=lambda o: (o.aclass is not AtenClass.VIEW, o.flops + o.bytes)), times[label]))
    base = host_base(prov["host_cpu"]) if spec_out is not None and "host_cpu" in prov else None
    spec = fit(pairs, prov["dram_read_gb_per_s"] * 1e9, prov["llc_copy_gb_per_s"] * 1e9,
               prov["page_fault_gb_per_s"] * 1e9, base)
    spec = fit_cold(spec, out)
    if spec_out is not None:
        write_spec(spec, spec_out, prov)
        print(f"# wrote {spec_out}: xpusim validate torch --device cpu --cpu {spec_out}")


def page_fault_bandwidth(nbytes: int = 128 * MIB) -> float:
    """Bytes/s of first-touch faults: a fresh ``torch.ones`` minus a ``fill_`` of an existing tensor."""
    y = torch.empty(nbytes // 4)
    fresh, _ = cpu_time(lambda: torch.ones(nbytes // 4))
    reuse, _ = cpu_time(lambda: y.fill_(1.0))
    return nbytes / max(fresh - reuse, 1e-9)


def gemv_rows(pairs: list[tuple[TracedOp, float]]) -> int:
    """The largest row count m (1, 2, 4, 8 ...) up to which the hot-loop GEMMs' time grows as m: the median
    over the (n, k) shapes of t(m) / t(1) is at least 0.75 m (MKL's one GEMV per row; on this VM m = 2 and
    4 give 2.1 and 3.4, m = 8 gives 3.9). 0 when the cases have no m = 1 row."""
    by_shape: dict[tuple[int, int], dict[int, float]] = {}
    for o, t in pairs:
        if isinstance(o.op, Gemm):
            by_shape.setdefault((o.op.n, o.op.k), {})[o.op.m] = t
    shapes = [d for d in by_shape.values() if 1 in d]
    if not shapes:
        return 0
    m = 1
    while all(2 * m in d for d in shapes) and statistics.median(d[2 * m] / d[1] for d in shapes) >= 0.75 * 2 * m:
        m *= 2
    print(f"gemm_gemv_max_m = {m}  # MKL's one GEMV per row up to here")
    return m


def fit(pairs: list[tuple[TracedOp, float]], dram: float, llc: float, faults: float,
        base: CPUSpec | None = None) -> CPUSpec:
    """Per aten class: (eff_compute, eff_memory, overhead[, gemm_m_half, gemm_min_ramp]) minimising
    the squared relative error of hwmodels.cpu.CPUModel over that class's cases (hot loops). ``base``
    gives the silicon fields (cores, SIMD, FMA, clock, LLC and L2 sizes): this project's VM's catalog
    spec unless given (:func:`host_base`)."""
    base = base or load_cpu("epyc-zen3-2c-kvm")
    base = replace(base, memory_bandwidth=dram, llc_bandwidth=llc, page_fault_bandwidth=faults,
                   gemv_max_m=gemv_rows(pairs))
    print(f"memory_bandwidth_gb_per_s = {dram / 1e9:.2f}\nllc_bandwidth_gb_per_s = {llc / 1e9:.2f}\n"
          f"page_fault_gb_per_s = {faults / 1e9:.3f}\n# peak fp32 one core {base.peak_flops(1) / 1e9:.1f} GFLOP/s")

    eff_lines, ovh_lines = [], []
    eff_all, ovh_all = dict(base.efficiency), dict(base.overhead_s)
    extra: dict[str, float] = {}
    for cls in sorted({op_class(o) for o, _ in pairs}):
        sel = [(o, t) for o, t in pairs if op_class(o) == cls]
        t = np.array([t for _, t in sel])
        if cls == "view":
            ovh_all["view"] = float(np.median(t))
            ovh_lines.append(f"view = {float(np.median(t)) * 1e6:.2f}  # n={len(t)}")
            continue
        gemm = cls == "gemm"

        def spec_of(p: np.ndarray, cls: str = cls, gemm: bool = gemm) -> CPUSpec:
            ec, em, ov = np.exp(p[:3])
            eff = dict(base.efficiency, **{f"{cls}_compute": min(ec, 1.0), f"{cls}_memory": min(em, 1.0)})
            return replace(base, efficiency=eff, overhead_s=dict(base.overhead_s, **{cls: ov * 1e-6}),
                           gemm_m_half=float(np.exp(p[3])) if gemm else base.gemm_m_half,
                           gemm_min_ramp=float(np.exp(p[4])) if gemm else base.gemm_min_ramp)

        def model(p: np.ndarray, sel: list[tuple[TracedOp, float]] = sel) -> np.ndarray:
            m = CPUModel(spec_of(p), threads=1)
            return np.array([m.time(o) for o, _ in sel])

        x0 = np.log([0.5, 0.5, 5.0] + ([20.0, 0.1] if gemm else []))
        lo = np.log([1e-4, 1e-3, 0.05] + ([0.1, 1e-3] if gemm else []))
        hi = np.log([1.0, 1.0, 1e4] + ([1e4, 1.0] if gemm else []))
        res = least_squares(lambda p, t=t: model(p) / t - 1.0, x0=x0, bounds=(lo, hi))
        ec, em, ov = np.exp(res.x[:3])
        pred = model(res.x)
        wape = float(np.abs(pred - t).sum() / t.sum())
        mape = float(np.mean(np.abs(pred - t) / t))
        if gemm:
            extra = {"gemm_m_half": float(np.exp(res.x[3])), "gemm_min_ramp": float(np.exp(res.x[4]))}
            print(f"gemm_m_half = {extra['gemm_m_half']:.1f}\ngemm_min_ramp = {extra['gemm_min_ramp']:.4f}")
        eff_all[f"{cls}_memory"] = min(em, 1.0)
        ovh_all[cls] = ov * 1e-6
        if cls in COMPUTE_BOUND:  # the memory-bound classes' FLOPs never bind: their compute stays at the peak
            eff_all[f"{cls}_compute"] = min(ec, 1.0)
            eff_lines.append(f"{cls}_compute = {min(ec, 1.0):.4f}")
        eff_lines.append(f"{cls}_memory = {min(em, 1.0):.3f}  # n={len(t)}, in-sample wape {wape:.3f} mape {mape:.3f}")
        ovh_lines.append(f"{cls} = {ov:.2f}")
    print("[efficiency]\n" + "\n".join(eff_lines))
    print("[overhead_us]\n" + "\n".join(ovh_lines))
    return replace(base, efficiency=eff_all, overhead_s=ovh_all, **extra)


def fit_cold(spec: CPUSpec, out: Path) -> CPUSpec:
    """The in-model constants, on the IN_MODEL configuration's per-op profiler times, each op's residual
    being measured - the hot-loop model (the profiler's own time inside an op's event, measured apart
    by :func:`profiler_event_overhead`, is under 1 us and left in):

    - per aten class but GEMMs, ``cold_overhead``: the median residual of the class's code-cold ops
      (the same aten op last ran more than the L2's size of traffic ago) not after a flush;
    - ``flush_overhead``: the median residual, less the class's cold overhead where it applies, of the
      ops right after one that moved more than half the LLC (a GEMM streaming its weights);
    - per aten op (GEMMs aside) and code state (hot, cold, after a flush, both), ``in_model_overhead``: the
      median residual of those ops; where an op's (aten op, state) has one, it replaces the two above (the
      ops of a class differ: a cold ``copy_`` into the KV cache takes ~10 us more than hot, a cold ``cat``
      ~30); and, for an aten op that serves more than one op kind (a ``mul`` in the norm, the rope and the
      MLP; the SDPA call in prefill and in decode), per (aten op, op kind, state), which wins over its
      (aten op, state) figure (docs/accuracy.md, session 7: over nine held-out runs, attention prefill's
      median 0.139 -> 0.104, elementwise 0.291 -> 0.260, activation 0.223 -> 0.208, decode attention's worst
      run 0.248 -> 0.207 but its median 0.172 -> 0.197; the other kinds within 0.005)."""
    lines = [ln for ln in open(out / "inmodel_ops.csv") if not ln.startswith("#")]
    meas = {(int(r["step"]), int(r["op_index"])): float(r["measured_s"]) for r in csv.DictReader(lines)}
    model = CPUModel(replace(spec, cold_overhead_s={}, flush_overhead_s=0.0, in_model_overhead_s={}))
    rows = []  # (class, code-cold, after a flush, residual, aten op, op kind)
    for i, ops in enumerate(trace_steps(IN_MODEL)):
        for op, reuse in zip(ops, step_reuse(ops)):
            t = meas.get((i, op.index))
            if t is None or not op.costs or op.aclass is AtenClass.GEMM:
                continue
            rows.append((op_class(op), *spec.code_flags(reuse), t - model.cost(op, reuse)[0], op.aten,
                         op.kind.value if op.kind is not None else None))
    cold = {}
    print("[cold_overhead_us]  # in-model fit: " + json.dumps(IN_MODEL))
    for cls in sorted({r[0] for r in rows}):
        r = [x[3] for x in rows if x[0] == cls and x[1] and not x[2]]
        if r:
            cold[cls] = max(0.0, float(np.median(r)))
            print(f"{cls} = {cold[cls] * 1e6:.1f}  # n={len(r)} code-cold ops")
    r = [x[3] - (cold.get(x[0], 0.0) if x[1] else 0.0) for x in rows if x[2]]
    flush = max(0.0, float(np.median(r)))
    print(f"flush_overhead_us = {flush * 1e6:.1f}  # n={len(r)} ops after a flush")
    in_model: dict[tuple[str, ...], float] = {}
    print("[in_model_overhead_us]  # per (aten op, state), then per (aten op, op kind, state) where the op serves "
          "more than one kind: the median residual, in place of the above")
    kinds_of: dict[str, set[str]] = {}
    for x in rows:
        if x[5] is not None:
            kinds_of.setdefault(x[4], set()).add(x[5])

    def median_table(key: Callable[[tuple], tuple[str, ...] | None]) -> None:
        """The median residual per key of the rows (rows whose key is None left out), into ``in_model``."""
        groups: dict[tuple[str, ...], list[float]] = {}
        for x in rows:
            k = key(x)
            if k is not None:
                groups.setdefault(k, []).append(x[3])
        for k in sorted(groups):
            in_model[k] = max(0.0, float(np.median(groups[k])))
            print(f'"{" ".join(k)}" = {in_model[k] * 1e6:.1f}  # n={len(groups[k])}')

    median_table(lambda x: (x[4], code_state(x[1], x[2])))
    median_table(lambda x: (x[4], x[5], code_state(x[1], x[2]))
                 if x[5] is not None and len(kinds_of[x[4]]) > 1 else None)
    # the spec as printed (one decimal of a microsecond), so that a written spec equals the tables above
    return replace(spec, cold_overhead_s={k: round(v * 1e6, 1) * 1e-6 for k, v in cold.items()},
                   flush_overhead_s=round(flush * 1e6, 1) * 1e-6,
                   in_model_overhead_s={k: round(v * 1e6, 1) * 1e-6 for k, v in in_model.items()})


def profiler_event_overhead() -> float:
    """Seconds ``torch.profiler`` (record_shapes) adds to an op's recorded CPU time: the median over a
    few small ops of (event time in a profiled hot loop - the op's time in a plain one)."""
    from torch.profiler import ProfilerActivity, profile

    x, w, s = torch.randn(1, 1, 2048), torch.randn(2048), torch.randn(1, 1, 1)
    out = []
    for fn in (lambda: x.pow(2), lambda: x * w, lambda: s.add_(1e-5), lambda: x.mean(-1, keepdim=True),
               lambda: torch.cat((x, x), -1)):
        plain, _ = cpu_time(fn)
        evs = []
        for _ in range(5):
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(200):
                    fn()
            evs += [e.cpu_time_total * 1e-6 for e in prof.events() if e.cpu_parent is None
                    and e.name.startswith("aten::")]
        out.append(statistics.median(evs) - plain)
    return max(0.0, statistics.median(out))


if __name__ == "__main__":
    main()
