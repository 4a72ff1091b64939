"""Measure what a traced run costs for real: per-op times from ``torch.profiler``.

``profile_ops(fn, graph)`` runs ``fn`` under the profiler and gives each op of ``graph`` (a trace of the
same call) the time the profiler recorded for it: its event's total CPU time (the op with everything it
called inside, e.g. the allocation of its output) on the CPU, its kernels' device time on CUDA.
Events are matched to traced ops in execution order by name and input shapes; an event inside an
already matched one (an op an aten kernel calls itself) is never matched, and composite ops the
dispatcher decomposed (``aten::linear``) are skipped because the trace holds their parts.

Whole steps are timed by :func:`workloads.pytorch.runner.run_llama` (its clocks: thread CPU time on the
CPU, synchronised wall time on CUDA).

torch is imported inside the functions (an optional dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from workloads.pytorch.tracer import TracedOp

SEARCH_WINDOW = 400  # profiler events looked ahead for a traced op before it is declared unmatched


def _flat_shapes(shapes: Any) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    for s in shapes or ():
        if isinstance(s, (list, tuple)) and s and isinstance(s[0], (list, tuple)):
            out.extend(tuple(int(v) for v in x) for x in s)
        elif isinstance(s, (list, tuple)):
            out.append(tuple(int(v) for v in s))
    return out


def match_events(ops: Sequence[TracedOp], events: Sequence[Any], device: str = "cpu") -> list[float | None]:
    """Seconds of each traced op from profiler ``events`` (FunctionEvent-like: name, input_shapes,
    time_range.start, cpu_time_total / device_time_total in microseconds, cpu_parent); None where no
    event matched."""
    evs = sorted((e for e in events if e.name.startswith(("aten::", "c10d::", "_c10d_functional::"))),
                 key=lambda e: (e.time_range.start, -e.time_range.end))
    matched: set[int] = set()
    out: list[float | None] = []
    pos = 0
    for op in ops:
        want = [s for s in op.input_shapes if s]
        found = None
        for j in range(pos, min(len(evs), pos + SEARCH_WINDOW)):
            e = evs[j]
            if e.name != op.aten or j in matched:
                continue
            shapes = [s for s in _flat_shapes(e.input_shapes) if s]
            if shapes and any(s not in shapes for s in want):
                continue
            parent, inside = e.cpu_parent, False
            while parent is not None:
                if id(parent) in matched:
                    inside = True
                    break
                parent = parent.cpu_parent
            if inside:
                continue
            found = j
            break
        if found is None:
            out.append(None)
            continue
        e = evs[found]
        matched.add(found)
        matched.add(id(e))
        pos = found + 1
        us = getattr(e, "device_time_total", 0.0) if device == "cuda" else e.cpu_time_total
        out.append(float(us) * 1e-6)
    return out


def profile_ops(fn: Callable[[], Any], ops: Sequence[TracedOp], device: str = "cpu") -> list[float | None]:
    """Run ``fn()`` once under ``torch.profiler`` and return the seconds of each of ``ops`` (its trace)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return match_events(ops, list(prof.events()), device)


def cpu_name() -> str:
    """The host's CPU model name (``/proc/cpuinfo`` on Linux, :func:`host_cpu_facts`), for provenance."""
    import platform

    return str(host_cpu_facts().get("name") or platform.processor() or platform.machine())


def host_cpu_facts(cpuinfo: str | None = None, sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[str, Any]:
    """The silicon fields of a CPU spec (``hwmodels/specs/cpu/``) as this Linux host reports them: the model
    name, online CPUs, SIMD width (avx512f: 512, avx2 or avx: 256, else 128), FMA pipes per core (2 where
    the ``fma`` flag is set: every x86 core with FMA since Haswell / Zen 1 has two; not in cpuinfo, an
    assumption), the clock ``/proc/cpuinfo`` reports, and the last-level and L2 cache sizes from sysfs.
    ``cpuinfo`` is the file's text (read from ``/proc/cpuinfo`` when None). Fields it cannot read are
    left out."""
    import os
    from pathlib import Path

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, val = line.partition(":")
        if sep and key.strip() not in first:
            first[key.strip()] = val.strip()
    out: dict[str, Any] = {"cores": os.cpu_count() or 1}
    if "model name" in first:
        out["name"] = first["model name"]
    flags = set(first.get("flags", "").split())
    if flags:
        out["simd_width_bits"] = 512 if "avx512f" in flags else 256 if flags & {"avx2", "avx"} else 128
        out["fma_units_per_core"] = 2 if "fma" in flags else 1
    try:
        out["clock_ghz"] = round(float(first["cpu MHz"]) / 1000.0, 3)
    except (KeyError, ValueError):
        pass

    def cache_kib(index: str) -> float | None:
        try:
            text = (Path(sysfs) / index / "size").read_text().strip()
        except OSError:
            return None
        scale = {"K": 1.0, "M": 1024.0}.get(text[-1:], 1.0 / 1024.0)
        try:
            return float(text.rstrip("KM")) * scale
        except ValueError:
            return None

    l3, l2 = cache_kib("index3"), cache_kib("index2")
    if l3 is not None:
        out["llc_mib"] = l3 / 1024.0
    if l2 is not None:
        out["l2_kib"] = l2
    return out


PROBE_OPS = ("add", "linear", "view")


def host_probe(device: str, calls: int = 2000, repeats: int = 5) -> dict[str, float]:
    """Host seconds per call of eager PyTorch's dispatch on this process, this machine, now: ``calls`` calls of
    a kernel-launching elementwise op (``x + 1``: Python, dispatcher, allocator, launch), a cuBLAS call
    (``F.linear`` on a 16 x 16 weight) and a view (``x.view``), on a 16-element tensor whose kernels take the
    device less than the host takes to issue them, so the loop's synchronised wall time is the host's.
    Median of ``repeats`` loops per op; keys ``host_probe_<op>_us`` (microseconds), for a run's provenance.

    The eager decode step of a small batch is as long as its host's issue time (``hwmodels/host.py``), and
    that time differs by +-8 % between leases of the same machine type (validation/measured/h100/README.md):
    a probe taken beside the steps records how fast this host issued ops when they were measured."""
    import statistics
    import time

    import torch
    import torch.nn.functional as F

    x = torch.zeros(16, device=device)
    w = torch.zeros(16, 16, device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    bodies = {"add": lambda: x + 1, "linear": lambda: F.linear(x, w), "view": lambda: x.view(4, 4)}
    out: dict[str, float] = {}
    with torch.no_grad():
        for name in PROBE_OPS:
            body = bodies[name]
            for _ in range(min(calls, 200)):   # warm-up: allocator blocks, cuBLAS handle, code in cache
                body()
            per: list[float] = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                for _ in range(calls):
                    body()
                sync()
                per.append((time.perf_counter() - t0) / calls)
            out[f"host_probe_{name}_us"] = round(statistics.median(per) * 1e6, 3)
    return out


MIB = 1024**2


def cpu_time(fn: Callable[[], object], samples: int = 7) -> tuple[float, float]:
    """(median thread CPU seconds, median wall seconds) of one call of ``fn``: ``samples`` loops, each long enough
    (>= 2 ms) to make the clock's resolution negligible (``benchmarks/fit_cpu.py``'s timer)."""
    import statistics
    import time

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


def bandwidth(nbytes: int) -> float:
    """Bytes/s of a one-thread ``copy_`` of ``nbytes`` (read plus write)."""
    import torch

    x = torch.empty(nbytes // 4).normal_()
    y = torch.empty_like(x)
    cpu, _ = cpu_time(lambda: y.copy_(x))
    return 2 * nbytes / cpu


def read_bandwidth(nbytes: int = 256 * MIB) -> float:
    """The fastest one-thread read stream: a ``sum`` of ``nbytes`` or MKL's GEMV over a 128 MiB weight."""
    import torch

    x = torch.empty(nbytes // 4).normal_()
    s, _ = cpu_time(lambda: x.sum(), samples=5)
    w = torch.empty(16384, 2048).normal_()
    v = torch.empty(1, 2048).normal_()
    g, _ = cpu_time(lambda: torch.mm(v, w.t()), samples=5)
    return max(nbytes / s, w.numel() * 4 / g)


def cpu_state_probe() -> dict[str, float]:
    """How fast this CPU runs now, by the methods ``benchmarks/fit_cpu.py`` measured its spec with: DRAM read
    and LLC copy bandwidth (the spec's ``memory_bandwidth_gb_per_s`` and ``llc_bandwidth_gb_per_s``) and the hot
    loop of one GEMM (``mm m=128 n=2048 k=2048`` of ``microbench.csv``), one thread. This VM's speed moves by
    up to ~2x over tens of minutes (docs/accuracy.md): a run's provenance records the probe before and after its
    steps, so its figures can be read against the state it met. ~3 s."""
    import torch

    a, w = torch.randn(128, 2048), torch.randn(2048, 2048)
    gemm, _ = cpu_time(lambda: torch.mm(a, w.t()))
    return {"cpu_probe_dram_read_gb_per_s": round(read_bandwidth() / 1e9, 2),
            "cpu_probe_llc_copy_gb_per_s": round(bandwidth(4 * MIB) / 1e9, 2),
            "cpu_probe_gemm_128x2048x2048_ms": round(gemm * 1e3, 3)}


def state_probe(device: str) -> dict[str, float]:
    """The probe a ``device`` run records around its steps: :func:`host_probe` on CUDA (the host's dispatch),
    :func:`cpu_state_probe` on the CPU."""
    return host_probe(device) if device == "cuda" else cpu_state_probe()
