"""Measure a GPU's board power and SM clock under sustained load (for hwmodels/power.py's constants).

Each workload runs back to back for ``--seconds`` (default 4 s: long enough for the power controller to
settle, which acts over tens of milliseconds); NVML (or nvidia-smi) is sampled every ~50 ms from a thread,
and the samples after the first second are averaged. Workloads: idle; bf16 GEMMs of Llama-3.1-8B weight
shapes (the kernel_times.csv ones) and a square one; a device-to-device copy (DRAM-bound, few FLOPs).
Nothing about the GPU's settings is changed (no clock locks, no power limit). One JSON line per workload:

    python benchmarks/collect_power.py OUT_DIR [--seconds 4]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path


def _sampler():  # type: ignore[no-untyped-def]
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)

        def read() -> tuple[float, float, float, int]:
            return (float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
                    pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                    float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
                    int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)))
        read()
        return read, "nvml"
    except Exception:  # noqa: BLE001 - fall back to the CLI
        def read_smi() -> tuple[float, float, float, int]:
            q = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu,"
                                "clocks_event_reasons.active", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, check=True).stdout.strip().split(",")
            return float(q[0]), float(q[1]), float(q[2]), int(q[3].strip(), 16)
        return read_smi, "nvidia-smi"


def run(name: str, step, seconds: float, read, flops: float = 0.0, nbytes: float = 0.0):  # type: ignore[no-untyped-def]
    import torch

    samples: list[tuple[float, float, float, float, int]] = []
    stop = threading.Event()

    start = time.perf_counter()

    def loop() -> None:
        while not stop.is_set():
            c, p, tc, r = read()
            samples.append((time.perf_counter() - start, c, p, tc, r))
            time.sleep(0.05)

    th = threading.Thread(target=loop)
    dt = None
    th.start()
    t0 = time.perf_counter()
    if step is None:
        time.sleep(seconds)
    else:
        while time.perf_counter() - t0 < 1.0:     # settle: the samples before 1 s are dropped too
            for _ in range(16):
                step()
            torch.cuda.synchronize()
        ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ev0.record()
        calls = 0
        while time.perf_counter() - t0 < seconds:
            for _ in range(16):
                step()
            calls += 16
            torch.cuda.synchronize()
        ev1.record()
        torch.cuda.synchronize()
        dt = ev0.elapsed_time(ev1) * 1e-3 / calls
    stop.set()
    th.join()
    steady = [s for s in samples if s[0] > 1.0] or samples
    n = len(steady)
    out = {"workload": name, "samples": n,
           "sm_clock_mhz_mean": round(sum(s[1] for s in steady) / n, 1),
           "sm_clock_mhz_min": min(s[1] for s in steady), "sm_clock_mhz_max": max(s[1] for s in steady),
           "power_w_mean": round(sum(s[2] for s in steady) / n, 2), "power_w_max": max(s[2] for s in steady),
           "temp_c_end": steady[-1][3], "clock_event_reasons": sorted({s[4] for s in steady})}
    if dt:
        out["s_per_call"] = dt
        if flops:
            out["tflops"] = round(flops / dt / 1e12, 2)
        if nbytes:
            out["gbps"] = round(nbytes / dt / 1e9, 1)
    return out


def main(argv: list[str]) -> None:
    import torch

    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 4.0
    read, how = _sampler()
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.memory,"
                          "power.limit,power.default_limit,pstate", "--format=csv"], capture_output=True,
                         text=True).stdout
    prov = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0), "sampler": how, "nvidia_smi": smi, "seconds": seconds}
    (outdir / "provenance_power.json").write_text(json.dumps(prov, indent=1) + "\n")
    res = []
    res.append(run("idle", None, seconds, read))
    d = torch.device("cuda")
    for label, (m, n, k) in [("llama-3.1-8b.gate_up m=8192", (8192, 28672, 4096)),
                             ("llama-3.1-8b.gate_up m=2048", (2048, 28672, 4096)),
                             ("llama-3.1-8b.down m=8192", (8192, 4096, 14336)),
                             ("llama-3.1-8b.qkv m=2048", (2048, 6144, 4096)),
                             ("llama-3.1-8b.o m=512", (512, 4096, 4096)),
                             ("square 16384", (16384, 16384, 16384))]:
        a = torch.randn(m, k, device=d, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=d, dtype=torch.bfloat16)
        c = torch.empty(m, n, device=d, dtype=torch.bfloat16)
        r = run(f"gemm {label} (m={m} n={n} k={k})", lambda a=a, b=b, c=c: torch.mm(a, b, out=c), seconds, read,
                flops=2.0 * m * n * k, nbytes=2.0 * (m * k + k * n + m * n))
        r.update(kind="gemm", m=m, n=n, k=k)
        res.append(r)
        print(json.dumps(r), flush=True)
        del a, b, c
    nb = 2 << 30
    src = torch.empty(nb // 2, device=d, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    r = run("copy 2 GiB d2d", lambda: dst.copy_(src), seconds, read, nbytes=2.0 * nb)
    r.update(kind="copy", bytes=2 * nb)
    res.append(r)
    res.append(run("idle after", None, seconds, read))
    with open(outdir / "power.jsonl", "w") as f:
        for r in res:
            f.write(json.dumps(r) + "\n")
    for r in res:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
