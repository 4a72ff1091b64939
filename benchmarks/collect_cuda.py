"""Measure one CUDA GPU for xpusim's validation, in one prepared run (under 8 minutes on an H100).

    python benchmarks/collect_cuda.py OUT_DIR [--budget-s 420] [--quick] [--device cuda|cpu]

Writes into OUT_DIR (each file written whole through a temp file, then renamed):
- ``provenance.json``: GPU name, SM count, L2, driver, CUDA and torch versions, date, clocks, host;
- ``gemm.csv``: bf16 GEMMs ``C[m,n] = A[m,k] @ W[n,k]^T`` (``torch.nn.functional.linear``) over the
  (n, k) of Llama-3.2-1B, Llama-3.1-8B and Llama-3-70B at TP8 (vLLM's fused QKV and gate+up shapes,
  the LM head) and m from 1 to 16,384; fp8 (e4m3, ``torch._scaled_mm``) on the same shapes where the
  GPU has fp8 tensor cores (compute capability >= 8.9);
- ``attention.csv``: ``scaled_dot_product_attention`` prefill (causal, batch x length grid) and decode
  (one query token over a KV of L tokens) for the head layouts of 1B/8B/70B-class models, with the
  backend that ran (flash first); ``attention_cudnn.csv``: the same with cuDNN's backend first (what
  PyTorch's default dispatch runs inside the built-in module's prefill on Hopper);
- ``memory_ops.csv``: RMSNorm, SiLU-and-mul, residual add, RoPE and embedding over token counts;
- ``steps.csv``: end-to-end prefill and decode steps of the built-in Llama-style modules
  (``workloads.pytorch.llama``, random weights) of Llama-3.2-1B, -3B and Llama-3.1-8B: eager, and
  decode also replayed from a CUDA graph (as vLLM runs decode);
- ``kernel_times.csv`` (``--sections kernel_times``): the same calls timed four ways (events behind the
  flush, events warm, the profiler's kernel time, per call of a CUDA graph), SM clock under GEMM load;
- ``power.jsonl`` (``--sections power``, by ``benchmarks/collect_power.py``): sustained loads' clock and power;
- ``step_ops.csv``: the profiler's per-(op, input shapes) device time of one prefill and one decode
  step of each of those models (what ``xpusim validate torch --device cuda`` compares per op kind).

Timing: CUDA events around each launch, after a 256 MiB write that evicts the L2 (the kernel sees cold
weights and KV, as in serving) and keeps the GPU's queue ahead of the CPU, so the events measure the
kernel, not the launch gap; the median of ``reps`` launches after warm-ups. Each section stops early
when the run's time budget is spent and says so in ``provenance.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from workloads.catalog import load_model
from workloads.pytorch.llama import build_llama

# (label, n, k) of the weight GEMMs, vLLM layouts at TP1 unless noted (source: the catalog's model specs)
GEMM_SHAPES = (
    ("llama-3.2-1b.qkv", 3072, 2048), ("llama-3.2-1b.o", 2048, 2048), ("llama-3.2-1b.gate_up", 16384, 2048),
    ("llama-3.2-1b.down", 2048, 8192), ("llama-3.2-1b.lm_head", 128256, 2048),
    ("llama-3.1-8b.qkv", 6144, 4096), ("llama-3.1-8b.o", 4096, 4096), ("llama-3.1-8b.gate_up", 28672, 4096),
    ("llama-3.1-8b.down", 4096, 14336), ("llama-3.1-8b.lm_head", 128256, 4096),
    ("llama-3-70b.tp8.qkv", 1280, 8192), ("llama-3-70b.tp8.o", 8192, 1024),
    ("llama-3-70b.tp8.gate_up", 7168, 8192), ("llama-3-70b.tp8.down", 8192, 3584),
)
GEMM_M = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
          6144, 8192, 16384)
# (label, query heads, kv heads, head dim)
ATTN_HEADS = (("llama-3.2-1b", 32, 8, 64), ("llama-3.1-8b", 32, 8, 128), ("llama-2-7b", 32, 32, 128),
              ("llama-3-70b.tp8", 8, 1, 128))
PREFILL_BATCH = (1, 2, 4, 8, 16)
PREFILL_LEN = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
DECODE_BATCH = (1, 4, 16, 64, 128, 256)
DECODE_LEN = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
MEM_TOKENS = (1, 16, 64, 256, 1024, 4096, 16384)
MEM_HIDDEN = (2048, 4096, 8192)
STEP_MODELS = ("llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b")
PREFILL_STEPS = ((1, 128), (1, 512), (1, 2048), (4, 512), (4, 2048), (16, 512))   # (batch, prompt)
DECODE_STEPS = ((1, 512), (8, 512), (32, 512), (8, 2048), (64, 1024), (128, 1024))  # (batch, context)


class Timer:
    """Median time of ``fn`` over ``reps`` runs after ``warmup``: CUDA events behind an L2-evicting
    write on a GPU, wall clock on the CPU."""

    def __init__(self, device: torch.device, flush_mib: int = 256) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.flush = torch.empty(flush_mib * 2**20, dtype=torch.uint8, device=device) if self.cuda else None

    def __call__(self, fn: Callable[[], object], reps: int = 20, warmup: int = 5, flush: bool = True) -> float:
        for _ in range(warmup):
            fn()
        if not self.cuda:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        torch.cuda.synchronize()
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in pairs:
            if flush and self.flush is not None:
                self.flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in pairs) / 1e3


class Writer:
    """Rows of one CSV, written whole (temp file, then rename) at each flush and at the end."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path, self.header, self.rows = path, header, []

    def add(self, **row: object) -> None:
        self.rows.append([row.get(h, "") for h in self.header])

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.header)
            w.writerows(self.rows)
        os.replace(tmp, self.path)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds, self.cut = time.monotonic(), seconds, []

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def over(self, section: str, share: float = 1.0) -> bool:
        """True once the run has spent ``share`` of its budget; records the cut section."""
        if time.monotonic() - self.t0 > share * self.seconds:
            if section not in self.cut:
                self.cut.append(section)
            return True
        return False


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(device: torch.device) -> dict[str, object]:
    p: dict[str, object] = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
        "cpu": platform.processor() or platform.machine(), "device": str(device),
    }
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        p.update(gpu=prop.name, sm_count=prop.multi_processor_count, memory_bytes=prop.total_memory,
                 l2_bytes=getattr(prop, "L2_cache_size", None), capability=f"{prop.major}.{prop.minor}",
                 cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                 nvidia_smi=_sh(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,"
                                 "power.limit,pstate", "--format=csv"]))
    return p


def section_gemm(timer: Timer, dev: torch.device, budget: Budget, out: Writer, quick: bool) -> None:
    ms = GEMM_M[:6] if quick else GEMM_M
    shapes = GEMM_SHAPES[:2] if quick else GEMM_SHAPES
    fp8 = dev.type == "cuda" and torch.cuda.get_device_capability(dev) >= (8, 9) and hasattr(torch, "_scaled_mm")
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for label, n, k in shapes:
        w = torch.randn(n, k, device=dev, dtype=dt)
        w8 = w.to(torch.float8_e4m3fn) if fp8 else None
        one = torch.ones((), device=dev, dtype=torch.float32)
        for m in ms:
            if budget.over("gemm", 0.30):
                return
            a = torch.randn(m, k, device=dev, dtype=dt)
            t = timer(partial(F.linear, a, w))
            out.add(label=label, dtype=str(dt).removeprefix("torch."), m=m, n=n, k=k, time_s=f"{t:.9g}",
                    tflops=f"{2 * m * n * k / t / 1e12:.4g}")
            if w8 is not None and m % 16 == 0:
                a8 = a.to(torch.float8_e4m3fn)
                try:
                    t8 = timer(partial(torch._scaled_mm, a8, w8.t(), scale_a=one, scale_b=one,
                                       out_dtype=torch.bfloat16))
                    out.add(label=label, dtype="fp8_e4m3", m=m, n=n, k=k, time_s=f"{t8:.9g}",
                            tflops=f"{2 * m * n * k / t8 / 1e12:.4g}")
                except (RuntimeError, TypeError) as e:  # an fp8 path this build lacks: note once, go on
                    out.add(label=label, dtype="fp8_e4m3", m=m, n=n, k=k, time_s="", tflops="", error=str(e)[:200])
                    w8 = None
        out.flush()


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
          first: str = "flash") -> tuple[Callable[[], object], str]:
    """The SDPA call and the backend it runs on: ``first`` ('flash' or 'cudnn') if it accepts the shapes,
    else the next that does (flash, efficient, cudnn, math)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    gqa = q.shape[1] != k.shape[1]
    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    if first == "cudnn":
        order.insert(0, order.pop(2))
    for backend in order:
        def fn(backend: SDPBackend = backend) -> object:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        try:
            fn()
            return fn, backend.name.lower()
        except RuntimeError:
            continue
    raise RuntimeError("no SDPA backend ran")


def section_attention(timer: Timer, dev: torch.device, budget: Budget, out: Writer, quick: bool,
                      first: str = "flash") -> None:
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    heads = ATTN_HEADS[:1] if quick else ATTN_HEADS
    max_tokens = 2048 if quick else 65536
    for label, hq, hkv, d in heads:
        for b in PREFILL_BATCH:
            for s in PREFILL_LEN:
                if b * s > max_tokens or budget.over("attention_prefill", 0.50):
                    continue
                q = torch.randn(b, hq, s, d, device=dev, dtype=dt)
                k = torch.randn(b, hkv, s, d, device=dev, dtype=dt)
                v = torch.randn(b, hkv, s, d, device=dev, dtype=dt)
                fn, backend = _sdpa(q, k, v, causal=True, first=first)
                t = timer(fn)
                out.add(phase="prefill", label=label, batch=b, q_len=s, kv_len=s, q_heads=hq, kv_heads=hkv,
                        head_dim=d, causal=1, backend=backend, time_s=f"{t:.9g}")
        out.flush()
        for b in DECODE_BATCH:
            for kv in DECODE_LEN:
                if b * kv * hkv * d * 4 > (2**24 if quick else 24 * 2**30) or budget.over("attention_decode", 0.60):
                    continue
                q = torch.randn(b, hq, 1, d, device=dev, dtype=dt)
                k = torch.randn(b, hkv, kv, d, device=dev, dtype=dt)
                v = torch.randn(b, hkv, kv, d, device=dev, dtype=dt)
                fn, backend = _sdpa(q, k, v, causal=False, first=first)
                t = timer(fn)
                out.add(phase="decode", label=label, batch=b, q_len=1, kv_len=kv, q_heads=hq, kv_heads=hkv,
                        head_dim=d, causal=0, backend=backend, time_s=f"{t:.9g}")
                del q, k, v
        out.flush()


def _rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = qk.chunk(2, dim=-1)
    return qk * cos + torch.cat((-x2, x1), dim=-1) * sin


def _silu_mul(gu: torch.Tensor) -> torch.Tensor:
    g, u = gu.split(gu.shape[-1] // 2, dim=-1)
    return F.silu(g) * u


def section_memory_ops(timer: Timer, dev: torch.device, budget: Budget, out: Writer, quick: bool) -> None:
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for h in MEM_HIDDEN[:1] if quick else MEM_HIDDEN:
        norm = torch.nn.RMSNorm(h, eps=1e-5, device=dev, dtype=dt)
        emb = torch.nn.Embedding(128256 if not quick else 1024, h, device=dev, dtype=dt)
        for t in MEM_TOKENS[:4] if quick else MEM_TOKENS:
            if budget.over("memory_ops", 0.65):
                return
            x = torch.randn(t, h, device=dev, dtype=dt)
            y = torch.randn(t, h, device=dev, dtype=dt)
            gu = torch.randn(t, 7 * h, device=dev, dtype=dt)  # gate+up of a 3.5 h FFN (Llama-3)
            d = 128
            qk = torch.randn(1, h // d + h // d // 4, t, d, device=dev, dtype=dt)  # q and k heads of a GQA-4 layer
            cos = torch.randn(t, d, device=dev, dtype=dt)
            sin = torch.randn(t, d, device=dev, dtype=dt)
            ids = torch.randint(0, emb.num_embeddings, (t,), device=dev)

            with torch.no_grad():
                for name, fn, nbytes in (
                    ("rmsnorm", partial(norm, x), 2 * x.nbytes),
                    ("add", partial(torch.add, x, y), 3 * x.nbytes),
                    ("silu_mul", partial(_silu_mul, gu), gu.nbytes * 3 // 2),
                    ("rope", partial(_rope, qk, cos, sin), 2 * qk.nbytes),
                    ("embedding", partial(emb, ids), x.nbytes),
                ):
                    for flush in (False, True):
                        tm = timer(fn, flush=flush)
                        out.add(op=name, tokens=t, hidden=h, bytes=nbytes, l2_flushed=int(flush), time_s=f"{tm:.9g}")
        out.flush()


# ---- kernel_times: one call timed four ways (what each measurement method sees) ----------------------------
KT_DECODE_BATCH = (1, 4, 16, 64)
KT_DECODE_LEN = (128, 512, 2048, 8192)
KT_PREFILL = ((1, 128), (1, 512), (4, 512), (1, 2048), (4, 2048))
KT_GEMM = (("llama-3.2-1b.qkv", 3072, 2048), ("llama-3.2-1b.down", 2048, 8192), ("llama-3.1-8b.qkv", 6144, 4096),
           ("llama-3.1-8b.o", 4096, 4096), ("llama-3.1-8b.gate_up", 28672, 4096), ("llama-3.1-8b.down", 4096, 14336))
KT_GEMM_M = (4, 64, 512, 2048, 8192)
KT_MEM_TOKENS = (4, 64, 2048, 8192)


def _kernel_time(fn: Callable[[], object], flush: torch.Tensor, reps: int = 20) -> tuple[float, int, str]:
    """(median per-call device time, device events per call, their names) from the profiler: the device
    events (kernels, memsets) in stream order are split into calls at the L2-evicting write before each
    call (a ``FillFunctor<unsigned char>`` kernel, which no measured call launches) and summed per call:
    the kernels' durations alone, no launch gaps, as ``validate torch``'s per-op device times."""
    from torch.profiler import ProfilerActivity, profile

    def device_events(prof: Any) -> list[Any]:
        return sorted((e for e in prof.events() if "CUDA" in str(getattr(e, "device_type", ""))),
                      key=lambda e: e.time_range.start)

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as probe:
        flush.zero_()
        torch.cuda.synchronize()
    flush_names = {e.name for e in device_events(probe)}  # the L2-evicting write's own kernel (or memset)
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
    calls: list[list[tuple[str, float]]] = []
    for e in device_events(prof):
        if e.name in flush_names:
            calls.append([])
        elif calls:
            calls[-1].append((e.name, (e.time_range.end - e.time_range.start) / 1e6))
    calls = [c for c in calls if c]
    if not calls:
        return float("nan"), 0, ""
    names = "|".join(n[:60] for n, _ in calls[0])
    return (statistics.median(sum(t for _, t in c) for c in calls),
            int(statistics.median(len(c) for c in calls)), names)


def _graph_time(fn: Callable[[], object], n: int = 20) -> float:
    """Per-call time of ``n`` back-to-back calls replayed from one CUDA graph (no host in the way, L2 warm:
    the kernel plus the GPU's own gap between consecutive kernels); NaN when the call cannot be captured."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                fn()
        g.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3 / n)
        del g
        return statistics.median(times)
    except Exception:  # noqa: BLE001 - a call that cannot be captured (or replayed) has no graph figure
        torch.cuda.synchronize()
        return float("nan")


def _sm_clock_under(fn: Callable[[], object], seconds: float = 0.4) -> str:
    """nvidia-smi's SM clock and power while ``fn`` runs back to back for about ``seconds`` (queued ahead)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    for _ in range(int(min(2000, seconds / one))):
        fn()
    q = _sh(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits"])
    torch.cuda.synchronize()
    return q.replace(",", " ").replace("  ", " ")


def section_kernel_times(timer: Timer, dev: torch.device, budget: Budget, out: Writer, quick: bool) -> None:
    """The same calls timed four ways: CUDA events behind an L2-evicting write (the kit's usual timing), CUDA
    events without it, the profiler's kernel device time (what ``validate torch`` compares per op), and per
    call of a CUDA graph of 20 back-to-back calls; plus the SM clock and power under the call's load for
    GEMMs. Tells launch/event overheads and clock effects apart from kernel time."""
    if dev.type != "cuda":
        return
    dt = torch.bfloat16
    flush = timer.flush
    assert flush is not None

    def row(kind: str, label: str, shape: str, fn: Callable[[], object], clock: bool = False) -> None:
        try:
            ev = timer(fn, flush=True)
            ev_warm = timer(fn, flush=False)
        except Exception as e:  # noqa: BLE001 - one failing call must not lose the section
            out.add(kind=kind, label=label, shape=shape, kernel_names=f"failed: {e}"[:200])
            return
        try:
            kt, nk, names = _kernel_time(fn, flush)
        except Exception as e:  # noqa: BLE001 - the other three timings still stand
            kt, nk, names = float("nan"), 0, f"profiler failed: {e}"[:200]
        gr = _graph_time(fn)
        clk = _sm_clock_under(fn) if clock else ""
        out.add(kind=kind, label=label, shape=shape, event_flushed_s=f"{ev:.9g}", event_warm_s=f"{ev_warm:.9g}",
                kernel_s=f"{kt:.9g}", kernels=nk, graph_s=f"{gr:.9g}", sm_clock_mhz_power_w=clk,
                kernel_names=names)

    heads = ATTN_HEADS[:2]
    for first in ("cudnn", "flash"):
        for label, hq, hkv, d in heads:
            for b in KT_DECODE_BATCH[:2] if quick else KT_DECODE_BATCH:
                for kv in KT_DECODE_LEN[:2] if quick else KT_DECODE_LEN:
                    if budget.over("kernel_times", 0.5):
                        return
                    q = torch.randn(b, hq, 1, d, device=dev, dtype=dt)
                    k = torch.randn(b, hkv, kv, d, device=dev, dtype=dt)
                    v = torch.randn(b, hkv, kv, d, device=dev, dtype=dt)
                    fn, backend = _sdpa(q, k, v, causal=False, first=first)
                    row(f"attn_decode.{backend}", label, f"b={b};q=1;kv={kv};hq={hq};hkv={hkv};d={d}", fn)
            for b, s in KT_PREFILL[:2] if quick else KT_PREFILL:
                if budget.over("kernel_times", 0.6):
                    return
                q = torch.randn(b, hq, s, d, device=dev, dtype=dt)
                k = torch.randn(b, hkv, s, d, device=dev, dtype=dt)
                v = torch.randn(b, hkv, s, d, device=dev, dtype=dt)
                fn, backend = _sdpa(q, k, v, causal=True, first=first)
                row(f"attn_prefill.{backend}", label, f"b={b};q={s};kv={s};hq={hq};hkv={hkv};d={d}", fn)
        out.flush()
    for label, n, kk in KT_GEMM[:2] if quick else KT_GEMM:
        w = torch.randn(n, kk, device=dev, dtype=dt)
        for m in KT_GEMM_M[:2] if quick else KT_GEMM_M:
            if budget.over("kernel_times", 0.8):
                return
            a = torch.randn(m, kk, device=dev, dtype=dt)
            row("gemm", label, f"m={m};n={n};k={kk}", partial(F.linear, a, w), clock=m >= 2048)
    out.flush()
    for h in (2048, 4096):
        norm = torch.nn.RMSNorm(h, eps=1e-5, device=dev, dtype=dt)
        for t in KT_MEM_TOKENS[:2] if quick else KT_MEM_TOKENS:
            if budget.over("kernel_times", 0.9):
                return
            x = torch.randn(t, h, device=dev, dtype=dt)
            y = torch.randn(t, h, device=dev, dtype=dt)
            gu = torch.randn(t, 7 * h, device=dev, dtype=dt)
            with torch.no_grad():
                for name, fn in (("rmsnorm", partial(norm, x)), ("add", partial(torch.add, x, y)),
                                 ("silu_mul", partial(_silu_mul, gu))):
                    row(f"mem.{name}", f"h{h}", f"t={t};h={h}", fn)
    out.flush()


# ---- power: sustained load, clock and power read while it runs ---------------------------------------------

def section_power(dev: torch.device, out_dir: Path, quick: bool) -> None:
    """``benchmarks/collect_power.py`` (one implementation of the sustained-load measurement): each workload
    back to back for seconds while NVML samples the SM clock, power and clock-event reasons; writes
    ``power.jsonl`` and ``provenance_power.json`` into the kit's folder."""
    if dev.type != "cuda":
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import collect_power

    collect_power.main([str(out_dir)] + (["--seconds", "1.5"] if quick else []))

def _graph_decode(model: torch.nn.Module, tok: torch.Tensor, cache: object) -> Callable[[], object] | None:
    """A CUDA graph of one decode step at a fixed cache position (the step rewrites the same KV slot)."""
    length = cache.length  # type: ignore[attr-defined]
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                cache.length = length  # type: ignore[attr-defined]
                model(tok, cache)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        cache.length = length  # type: ignore[attr-defined]
        with torch.cuda.graph(g):
            model(tok, cache)
    except RuntimeError:
        cache.length = length  # type: ignore[attr-defined]
        return None
    cache.length = length  # type: ignore[attr-defined]
    return g.replay


def _profile(model: torch.nn.Module, fn: Callable[[], object], dev: torch.device) -> list[dict[str, object]]:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    fn()
    with profile(activities=acts, record_shapes=True) as prof:
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        dev_t = getattr(e, "self_device_time_total", None)
        if dev_t is None:
            dev_t = getattr(e, "self_cuda_time_total", 0.0)
        rows.append({"op": e.key, "input_shapes": json.dumps(e.input_shapes), "count": e.count,
                     "self_device_time_s": f"{dev_t / 1e6:.9g}",
                     "self_cpu_time_s": f"{e.self_cpu_time_total / 1e6:.9g}"})
    return rows


def section_steps(timer: Timer, dev: torch.device, budget: Budget, steps: Writer, ops: Writer, quick: bool) -> None:
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    models = STEP_MODELS[:1] if quick else STEP_MODELS
    for name in models:
        if budget.over("steps", 0.92):
            return
        spec = load_model(name)
        model = build_llama(spec, dtype=dt, device=dev, num_layers=2 if quick else None)
        prefills = PREFILL_STEPS[:2] if quick else PREFILL_STEPS
        decodes = DECODE_STEPS[:2] if quick else DECODE_STEPS
        with torch.inference_mode():
            for b, s in prefills:
                if budget.over("steps", 0.92):
                    break
                cache = model.new_cache(b, s + 1)
                tok = torch.randint(0, spec.vocab_size, (b, s), device=dev)

                def prefill(cache: object = cache, tok: torch.Tensor = tok, model: torch.nn.Module = model) -> object:
                    cache.length = 0  # type: ignore[attr-defined]
                    return model(tok, cache)

                t = timer(prefill, reps=10, warmup=2)
                steps.add(model=name, layers=spec.num_layers if not quick else 2, phase="prefill", mode="eager",
                          batch=b, prompt=s, context=s, time_s=f"{t:.9g}")
                if (b, s) == (1, 512):
                    for r in _profile(model, prefill, dev):
                        ops.add(model=name, phase="prefill", batch=b, context=s, **r)
                del cache
            for b, ctx in decodes:
                if budget.over("steps", 0.92):
                    break
                cache = model.new_cache(b, ctx + 1)
                cache.length = ctx
                tok = torch.randint(0, spec.vocab_size, (b, 1), device=dev)

                def decode(cache: object = cache, tok: torch.Tensor = tok, model: torch.nn.Module = model,
                           ctx: int = ctx) -> object:
                    cache.length = ctx  # type: ignore[attr-defined]
                    return model(tok, cache)

                t = timer(decode, reps=20, warmup=3)
                steps.add(model=name, layers=spec.num_layers if not quick else 2, phase="decode", mode="eager",
                          batch=b, prompt=ctx, context=ctx + 1, time_s=f"{t:.9g}")
                if dev.type == "cuda":
                    cache.length = ctx
                    replay = _graph_decode(model, tok, cache)
                    if replay is not None:
                        tg = timer(replay, reps=20, warmup=3)
                        steps.add(model=name, layers=spec.num_layers, phase="decode", mode="cuda_graph",
                                  batch=b, prompt=ctx, context=ctx + 1, time_s=f"{tg:.9g}")
                if (b, ctx) == (8, 512):
                    for r in _profile(model, decode, dev):
                        ops.add(model=name, phase="decode", batch=b, context=ctx + 1, **r)
                del cache
        steps.flush()
        ops.flush()
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop sections once this many seconds are spent")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="a few shapes of each section (a smoke test)")
    ap.add_argument("--sections", default="gemm,attention,attention_cudnn,memory_ops,steps",
                    help="comma-separated sections to run (default: all)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    budget = Budget(args.budget_s)
    timer = Timer(dev)
    prov = provenance(dev)
    writers = {
        "gemm": Writer(args.out / "gemm.csv", ["label", "dtype", "m", "n", "k", "time_s", "tflops", "error"]),
        "attention": Writer(args.out / "attention.csv", ["phase", "label", "batch", "q_len", "kv_len", "q_heads",
                                                          "kv_heads", "head_dim", "causal", "backend", "time_s"]),
        "attention_cudnn": Writer(args.out / "attention_cudnn.csv", ["phase", "label", "batch", "q_len", "kv_len",
                                                                      "q_heads", "kv_heads", "head_dim", "causal",
                                                                      "backend", "time_s"]),
        "memory_ops": Writer(args.out / "memory_ops.csv", ["op", "tokens", "hidden", "bytes", "l2_flushed", "time_s"]),
        "steps": Writer(args.out / "steps.csv", ["model", "layers", "phase", "mode", "batch", "prompt", "context",
                                                  "time_s"]),
        "kernel_times": Writer(args.out / "kernel_times.csv", ["kind", "label", "shape", "event_flushed_s",
                                                                "event_warm_s", "kernel_s", "kernels", "graph_s",
                                                                "sm_clock_mhz_power_w", "kernel_names"]),
        "step_ops": Writer(args.out / "step_ops.csv", ["model", "phase", "batch", "context", "op", "input_shapes",
                                                        "count", "self_device_time_s", "self_cpu_time_s"]),
    }
    errors: dict[str, str] = {}
    sections: list[tuple[str, Callable[[], None]]] = [
        ("gemm", lambda: section_gemm(timer, dev, budget, writers["gemm"], args.quick)),
        ("attention", lambda: section_attention(timer, dev, budget, writers["attention"], args.quick)),
        ("attention_cudnn", lambda: section_attention(timer, dev, budget, writers["attention_cudnn"], args.quick,
                                                      first="cudnn")),
        ("memory_ops", lambda: section_memory_ops(timer, dev, budget, writers["memory_ops"], args.quick)),
        ("kernel_times", lambda: section_kernel_times(timer, dev, budget, writers["kernel_times"], args.quick)),
        ("power", lambda: section_power(dev, args.out, args.quick)),
        ("steps", lambda: section_steps(timer, dev, budget, writers["steps"], writers["step_ops"], args.quick)),
    ]
    spent = {}
    wanted = set(args.sections.split(","))
    for name, run in sections:
        if name not in wanted:
            continue
        t0 = time.monotonic()
        try:
            run()
        except Exception:  # one broken section must not lose the others' measurements
            errors[name] = traceback.format_exc()[-2000:]
        spent[name] = round(time.monotonic() - t0, 2)
        print(json.dumps({"section": name, "wall_s": spent[name], "error": name in errors}), flush=True)
    for name, w in writers.items():
        if name in wanted or (name == "step_ops" and "steps" in wanted):
            w.flush()
    prov.update(sections_wall_s=spent, sections_cut_by_budget=budget.cut, errors=errors, quick=args.quick,
                timing="median of CUDA-event times per launch after a 256 MiB L2-evicting write"
                if dev.type == "cuda" else "median wall clock")
    tmp = args.out / "provenance.json.tmp"
    tmp.write_text(json.dumps(prov, indent=1) + "\n")
    os.replace(tmp, args.out / "provenance.json")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
