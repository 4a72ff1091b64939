"""Run the built-in Llama-style module for real and record what it costs: the data of ``validate torch``.

``run_llama`` builds the module (random weights), then for one prefill of ``batch x prompt`` tokens and
``decode`` one-token steps after it:

1. traces every step once (``workloads.pytorch.tracer``; this run is also the warm-up);
2. profiles every step ``profile_repeats`` times (``workloads.pytorch.measure.profile_ops``): per-op
   times, the median per op over those runs;
3. times every step ``repeats`` times; the median per step.

On the CPU the step clock is ``time.thread_time`` with one intra-op thread by default: on a machine
shared with other work a descheduled thread's wait is not the op's cost (wall time is kept beside it).
The profiler's per-op times are wall times; each is scaled by its profiled step's thread-CPU/wall
ratio, so both clocks agree (the raw times stay in the record). On CUDA the clock is wall time with
synchronisation, and per-op times are the profiler's device times.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from workloads.measured_xpusim import RunStep
from workloads.model_spec import ModelSpec


@dataclass
class StepRecord(RunStep):
    """One step as run: a :class:`RunStep` (phase, decode step number (0 for the prefill), KV length after
    the step, trace, per-op measured seconds (None: unmatched), the step's median time) and the raw clocks."""

    op_seconds_raw: list[float | None]
    step_samples: list[float]
    wall_seconds: float


@dataclass
class TorchRun:
    steps: list[StepRecord]
    provenance: dict[str, Any] = field(default_factory=dict)


def _dtype(name: str) -> Any:
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    return table[name]


def run_llama(spec: ModelSpec, *, device: str = "cpu", dtype: str = "fp32", batch: int = 4, prompt: int = 512,
              decode: int = 32, repeats: int = 3, threads: int | None = 1, num_layers: int | None = None,
              seed: int = 0, profile_repeats: int = 3) -> TorchRun:
    import torch

    from workloads.pytorch.llama import build_llama
    from workloads.pytorch.measure import profile_ops, state_probe
    from workloads.pytorch.tracer import trace

    if threads is not None and device == "cpu":
        torch.set_num_threads(threads)
    model = build_llama(spec, dtype=_dtype(dtype), device=device, num_layers=num_layers, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, spec.vocab_size, (batch, prompt + decode), generator=gen).to(device)
    cache = model.new_cache(batch, prompt + decode)

    def step_fn(i: int) -> Any:  # step 0: prefill; step i: decode token prompt + i - 1
        def fn() -> Any:
            if i == 0:
                cache.length = 0
                return model(tokens[:, :prompt], cache)
            cache.length = prompt + i - 1
            return model(tokens[:, prompt + i - 1:prompt + i], cache)
        return fn

    def clock() -> tuple[float, float]:
        if device == "cuda":
            torch.cuda.synchronize()
            t = time.perf_counter()
            return t, t
        return time.thread_time(), time.perf_counter()

    n = decode + 1
    records: list[StepRecord] = []
    probe_before = state_probe(device)
    with torch.no_grad():
        graphs = [trace(step_fn(i), label=f"step {i}", module=model)[0] for i in range(n)]
        for i in range(n):
            graphs[i].device = device
        profiled: list[tuple[list[float | None], float]] = []
        for i in range(n):
            runs, ratios = [], []
            for _ in range(max(1, profile_repeats)):
                c0, w0 = clock()
                runs.append(profile_ops(step_fn(i), graphs[i].ops, device))
                c1, w1 = clock()
                ratios.append((c1 - c0) / (w1 - w0) if device == "cpu" and w1 > w0 else 1.0)
            # per op, the median over the profiled runs (a descheduled moment hits one run, not all)
            raw: list[float | None] = []
            for j in range(len(graphs[i].ops)):
                vals = [r[j] for r in runs]
                ok = [v for v in vals if v is not None]
                raw.append(statistics.median(ok) if len(ok) == len(vals) else None)
            profiled.append((raw, statistics.median(ratios)))
        samples: list[list[float]] = [[] for _ in range(n)]
        walls: list[list[float]] = [[] for _ in range(n)]
        for _ in range(repeats):
            for i in range(n):
                fn = step_fn(i)
                c0, w0 = clock()
                fn()
                c1, w1 = clock()
                samples[i].append(c1 - c0)
                walls[i].append(w1 - w0)
    for i in range(n):
        raw, ratio = profiled[i]
        records.append(StepRecord(
            phase="prefill" if i == 0 else "decode", index=i, context=prompt + i, graph=graphs[i],
            op_seconds=[None if t is None else t * ratio for t in raw], op_seconds_raw=raw,
            step_seconds=statistics.median(samples[i]), step_samples=samples[i],
            wall_seconds=statistics.median(walls[i])))
    prov = provenance(device)
    prov.update(probe_before)
    # the probe again after the steps: how much the host's speed drifted during the run
    prov.update({f"{k}_after": v for k, v in state_probe(device).items()})
    prov.update({"model": spec.name, "layers": num_layers or spec.num_layers, "dtype": dtype, "batch": batch,
                 "prompt": prompt, "decode": decode, "repeats": repeats, "threads": torch.get_num_threads(),
                 "step_clock": "wall (synchronised)" if device == "cuda" else "time.thread_time",
                 "op_clock": ("profiler device time" if device == "cuda"
                              else "profiler CPU time x the step's thread-CPU/wall ratio")})
    return TorchRun(records, prov)


def provenance(device: str) -> dict[str, Any]:
    """Device, driver, torch version, date and host of a measurement."""
    import os

    import torch

    from workloads.pytorch.measure import cpu_name

    out: dict[str, Any] = {
        "device": device, "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cpus_online": os.cpu_count(), "host": platform.node(),
    }
    if hasattr(os, "getloadavg"):
        out["loadavg"] = list(os.getloadavg())
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
        out["cuda"] = torch.version.cuda
        try:
            import subprocess

            out["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out["driver"] = ""
    return out
