"""The Hopper ``[power]`` constants from our H200 power run, and the held-out check on the H100's clocks.

Fitted on ``validation/measured/h200/power/power.jsonl`` (``benchmarks/collect_power.py``: each workload run
back to back for 4 s, NVML sampled every ~50 ms, the first second dropped):

* ``idle_w``: the ``idle`` workload (CUDA context up, no kernels; the GPU rests at its lowest clock);
* ``clock_w``: ``idle after`` (no kernels, the SM clock still at its 1980 MHz maximum) minus ``idle_w``;
* ``dram_pj_per_byte``: the 2 GiB device-to-device copy (clock at maximum, not power-limited, ~no FLOPs):
  (power - idle_w - clock_w) / (bytes read + written per second);
* ``tensor_pj_per_flop``: least squares over the GEMMs whose operands exceed 4x the L2 (so their DRAM
  traffic is the operand bytes; all four ran at the 700 W limit): ``P - idle_w - clock_w s(x) - e_byte B =
  e_flop v(x)^2 R`` with x the mean sampled clock / 1980 MHz, R the achieved FLOP rate;
* ``v_intercept``: not identifiable from these rows (the clocks span 0.73-0.75 of the maximum; the rms
  residual moves 21 -> 10 W, against a kernel-to-kernel spread of +-3 % of 690 W, as it goes 0 -> 0.9), so
  0 (V proportional to f: P_dyn ~ f^3, the rule hwmodels/machines.py used) is kept and the sensitivity is
  printed.

Check (held out): the H100's kernel_times.csv records nvidia-smi's SM clock under the 8B gate_up GEMM at
m = 2048 and 8192; the model's sustained clock for each (the GEMM's time and compute share from the kernel
model at the spec's clock, its FLOPs and operand bytes) is printed next to it.

    python benchmarks/fit_power.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from hwmodels.gpu import load_gpu
from hwmodels.kernels import GPUKernelModel
from hwmodels.power import Phase, clocked_gpu, gpu_power, sustained_clock
from workloads.ops import Gemm

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "validation" / "measured" / "h200" / "power" / "power.jsonl"
H100_KT = ROOT / "validation" / "measured" / "h100" / "kernel_times.csv"
FMAX_MHZ = 1980.0   # nvidia-smi clocks.max.sm of both Hopper GPUs (provenance files)


def fit_hopper(v0: float = 0.0) -> dict[str, float]:
    rows = [json.loads(ln) for ln in H200.read_text().splitlines() if ln.strip()]
    by = {r["workload"]: r for r in rows}
    idle = by["idle"]["power_w_mean"]
    clock_w = by["idle after"]["power_w_mean"] - idle
    cp = by["copy 2 GiB d2d"]
    e_b = (cp["power_w_mean"] - idle - clock_w) / (cp["gbps"] * 1e9)
    l2 = load_gpu("h200-sxm-141gb").l2_cache_bytes
    a, y = [], []
    for r in rows:
        if r.get("kind") != "gemm" or 2 * (r["m"] * r["k"] + r["k"] * r["n"] + r["m"] * r["n"]) <= 4 * l2:
            continue
        x = r["sm_clock_mhz_mean"] / FMAX_MHZ
        v = v0 + (1 - v0) * x
        y.append(r["power_w_mean"] - idle - clock_w * x * v * v - e_b * r["gbps"] * 1e9)
        a.append(v * v * r["tflops"] * 1e12)
    av, yv = np.array(a), np.array(y)
    e_f = float(av @ yv / (av @ av))
    rms = float(np.sqrt(((yv - e_f * av) ** 2).mean()))
    return {"v_intercept": v0, "idle_w": round(idle, 1), "clock_w": round(clock_w, 1),
            "dram_pj_per_byte": round(e_b * 1e12, 1), "tensor_pj_per_flop": round(e_f * 1e12, 3),
            "rms_w": round(rms, 1), "gemm_rows": len(y)}


def h100_check() -> list[dict[str, object]]:
    gpu = load_gpu("h100-sxm-80gb")
    km, slow = GPUKernelModel(gpu), GPUKernelModel(clocked_gpu(gpu, 0.5))
    out: list[dict[str, object]] = []
    with H100_KT.open() as f:
        for r in csv.DictReader(f):
            if not r["label"].endswith("gate_up") or "8b" not in r["label"] or not r["sm_clock_mhz_power_w"]:
                continue
            dims = dict(kv.split("=") for kv in r["shape"].split(";"))
            op = Gemm("gate_up", int(dims["m"]), int(dims["n"]), int(dims["k"]))
            t, t_half = km.time(op), slow.time(op)
            tc = min(max(0.0, t_half - t), t)
            s = sustained_clock(gpu, Phase(op.flops, op.bytes, tc, t - tc))
            clk, pw = (float(v) for v in r["sm_clock_mhz_power_w"].split())
            out.append({"gemm": f"llama-3.1-8b.gate_up m={op.m}", "model_clock_mhz": round(s.clock_hz / 1e6),
                        "measured_clock_mhz": clk, "model_power_w_at_1980": round(s.free_power_w, 1),
                        "measured_power_w": pw, "model_time_s": t, "measured_kernel_s": float(r["kernel_s"]),
                        "clock_err": round(s.clock_hz / 1e6 / clk - 1, 3)})
    return out


def main() -> None:
    for v0 in (0.0, 0.3, 0.6, 0.9):
        print(json.dumps({"hopper_fit": fit_hopper(v0)}))
    cal = gpu_power(load_gpu("h200-sxm-141gb"))
    print(json.dumps({"hopper_in_toml": {"idle_w": cal.idle_w, "clock_w": cal.clock_w,
                                         "dram_pj_per_byte": cal.dram_j_per_byte * 1e12,
                                         "tensor_pj_per_flop": cal.tensor_j_per_flop * 1e12,
                                         "v_intercept": cal.v_intercept}}))
    for row in h100_check():
        print(json.dumps({"h100_clock_check": row}))


if __name__ == "__main__":
    main()
