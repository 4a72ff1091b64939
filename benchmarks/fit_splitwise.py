"""Fit the ``vllm-splitwise`` engine profile to SplitwiseSim's measured perf_model_a100.csv.

The file (Patel et al., Splitwise, ISCA 2024; Mutinifni/splitwise-sim data/perf_model.csv) was measured
with the 2023 vLLM build on DGX-A100: eager PyTorch (no CUDA graphs), Ray tensor-parallel workers. Four
constants are fitted, all of the software, none of the silicon (hwmodels/calibration/ampere.toml is not
touched):

* ``gemm_eff`` of the ``vllm-splitwise`` stack (hwmodels/stacks/vllm-splitwise.toml): the GEMM throughput
  of the prompt phase relative to the Ampere family's tuned-library figure; a grid over 0.40..1.00;
* ``host_op_us``, ``iteration_us`` and ``prefill_host_ns_per_token_sq`` of the engine
  (hwmodels/specs/machines/engines.toml), for each grid value by Nelder-Mead. The last is a host cost per
  iteration quadratic in the iteration's prefill tokens (the whole batch's: the file's 16 x 512-token batches
  take the time of one 8,192-token prompt, at every TP alike).

The engine's ``max_num_batched_tokens`` is not fitted: :data:`MAX_NUM_BATCHED_TOKENS` says why 8,192.
Power (hwmodels/power.py): the Ampere ``[power]`` constants are fitted first, on the file's power columns
only (:func:`fit_ampere_power`), then every grid value's prefill iterations run at the clock the 400 W TDP
allows (the engine's ``power_limit`` = 1).

Objective: the sum of the two columns' WAPE (prompt_time, token_time) over every row the memory model
admits (what ``xpusim validate serve --format splitwise-perf`` scores). Prints one JSON line per grid
value and the chosen constants.

    python benchmarks/fit_splitwise.py [../shared/data/measured/splitwise/perf_model_a100.csv]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from hwmodels.engine import EngineProfile, EngineStepTimeModel, launched_ops, load_engine, prefill_iterations
from hwmodels.gpu import load_gpu
from hwmodels.kernels import load_stack
from hwmodels.memory import memory_breakdown
from hwmodels.power import PowerCalibration
from workloads.catalog import load_model
from workloads.errors import CapacityError
from workloads.llm_ops import Batch
from workloads.measured_splitwise import SplitwiseRow, read_splitwise_perf

H200_IDLE_SHARE = 80.5 / 127.4   # hopper.toml [power]: idle_w / (idle_w + clock_w), our H200 run


def fit_ampere_power(rows: list[SplitwiseRow]) -> tuple[PowerCalibration, dict[str, float]]:
    """Ampere ``[power]`` constants from the file's power columns (normalised to the A100's 400 W TDP).

    1. ``average_power`` of a request is dominated by its decode steps (127 of them, ~45 ms each, against a
       prompt of 0.07-3 s): over the groups whose prompt is under 10 % of the request, it is linear in the
       decode steps' DRAM byte rate (model bytes per step / measured token_time): intercept = the base power
       (idle + the clock domain at 1410 MHz, split as on our H200), slope = joules per byte.
    2. ``peak_power`` of the groups under 0.95 x TDP (not power-limited): base + bytes + e_flop x FLOP rate
       over the prompt's GPU time (measured prompt_time minus the engine's iteration_us), least squares.
    Groups with average_power < 0.3 (the 8192-token prompts read ~70 W on average while running: not a
    GPU's draw) are left out. FLOPs and bytes are the model's op counts per GPU, not fitted."""
    gpu = load_gpu("a100-sxm-80gb")
    it = load_engine("vllm-splitwise").iteration_s
    groups: dict[tuple[str, int, int, int, int], list[SplitwiseRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.tp, r.prompt, r.batch, r.output), []).append(r)
    bare = EngineProfile("fit", "vllm", 0.0, 0.0)
    steps: dict[tuple[str, int], EngineStepTimeModel] = {}
    dec_x, dec_y, pre = [], [], []
    for k, rs in sorted(groups.items()):
        r = rs[0]
        if r.average_power < 0.3 or r.peak_power <= 0:
            continue
        if k[:2] not in steps:
            steps[k[:2]] = EngineStepTimeModel(load_model(k[0]), gpu, k[1], engine=bare)
        s = steps[k[:2]]
        fp, bp = s._work(Batch(prefill=((k[2], k[2]),) * k[3]))
        _, bd = s._work(Batch(decode=(k[2] + k[4] // 2,) * k[3]))
        pt = float(np.mean([x.prompt_s for x in rs]))
        tt = float(np.mean([x.token_s for x in rs]))
        e2e = float(np.mean([x.e2e_s for x in rs]))
        if pt < 0.1 * e2e:
            dec_x.append(bd / tt)
            dec_y.append(r.average_power * gpu.tdp_w)
        if r.peak_power < 0.95:
            pre.append((fp / (pt - it), bp / (pt - it), r.peak_power * gpu.tdp_w))
    slope, base = np.polyfit(np.array(dec_x), np.array(dec_y), 1)
    a = np.array([p[0] for p in pre])
    y = np.array([p[2] - base - slope * p[1] for p in pre])
    e_f = float(a @ y / (a @ a))
    cal = PowerCalibration("ampere", idle_w=float(base) * H200_IDLE_SHARE,
                           clock_w=float(base) * (1 - H200_IDLE_SHARE), tensor_j_per_flop=e_f,
                           dram_j_per_byte=float(slope), v_intercept=0.0, max_clock_ratio=1.0,
                           min_clock_frac=0.2, reference_tdp_w=gpu.tdp_w)
    info = {"base_w": round(float(base), 1), "dram_pj_per_byte": round(float(slope) * 1e12, 1),
            "tensor_pj_per_flop": round(e_f * 1e12, 3), "decode_groups": len(dec_x), "prompt_groups": len(pre),
            "prompt_rms_w": round(float(np.sqrt(((y - e_f * a) ** 2).mean())), 1)}
    return cal, info


# The engine's per-iteration token cap (vLLM's max_num_batched_tokens; no chunked prefill in the 2023 build):
# the file runs single prompts of 8,192 tokens, so the cap is at least that, and its batches of 16,384 and
# 32,768 tokens take 1.6-2.1x and 3.2-3.8x the time of 8,192 (per token they fall back towards the 8,192-token
# batch's rate instead of growing with it): two and four iterations.
MAX_NUM_BATCHED_TOKENS = 8192

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured" / "splitwise" / "perf_model_a100.csv"


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT
    rows = read_splitwise_perf(path)
    gpu = load_gpu("a100-sxm-80gb")
    keys = sorted({(r.model, r.tp, r.prompt, r.batch, r.output) for r in rows})
    fits = {}
    for k in keys:
        m = load_model(k[0])
        try:
            mem = memory_breakdown(m, gpu, tp=k[1], max_num_batched_tokens=k[2] * k[3], max_num_seqs=k[3])
            fits[k] = k[3] * (k[2] + k[4]) <= mem.kv_tokens
        except CapacityError:
            fits[k] = False
    rows = [r for r in rows if fits[(r.model, r.tp, r.prompt, r.batch, r.output)]]
    idx = {k: i for i, k in enumerate(k for k in keys if fits[k])}
    ri = np.array([idx[(r.model, r.tp, r.prompt, r.batch, r.output)] for r in rows])
    mp = np.array([r.prompt_s for r in rows])
    mt = np.array([r.token_s for r in rows])
    cal, info = fit_ampere_power(rows)
    print(json.dumps({"ampere_power": info}))
    bare = EngineProfile("fit", "vllm", 0.0, 0.0, power_limit=1.0)
    base = load_stack("vllm")
    cap = MAX_NUM_BATCHED_TOKENS
    best = None
    for eff in np.round(np.arange(0.40, 1.0001, 0.05), 2):
        stack = dataclasses.replace(base, name="vllm-splitwise", gemm_eff=float(eff))
        steps = {}
        its: list[list[tuple[int, float, int]]] = [[] for _ in idx]   # per key: (iterations, GPU s, tokens)
        dec = np.zeros(len(idx))
        nops = np.zeros(len(idx))
        for k, i in idx.items():
            if k[:2] not in steps:
                steps[k[:2]] = EngineStepTimeModel(load_model(k[0]), gpu, k[1], engine=bare, stack=stack)
            s = steps[k[:2]]
            for count, n in prefill_iterations(k[2], k[3], cap):   # the split EngineStepTimeModel.isolated makes
                its[i].append((count, s.batch_time(((k[2], k[2]),) * n, (), k[2] * n, n), k[2] * n))
            dec[i] = s.decode_times([k[2] + 1] * k[3], k[4] - 1).mean() if k[4] > 1 else 0.0
            nops[i] = launched_ops(s.model, k[1])
        cnt = [np.array([c for c, _, _ in its[j]], dtype=float) for j in range(len(idx))]
        gpu_s = [np.array([g for _, g, _ in its[j]]) for j in range(len(idx))]
        tok2 = [np.array([float(t) ** 2 for _, _, t in its[j]]) for j in range(len(idx))]
        d_, n_ = dec[ri], nops[ri]

        def cols(x: np.ndarray, d_: np.ndarray = d_, n_: np.ndarray = n_, nops: np.ndarray = nops, cnt: list = cnt,
                 gpu_s: list = gpu_s, tok2: list = tok2) -> tuple[float, float]:
            c, it, q = max(x[0], 0.0) * 1e-6, max(x[1], 0.0) * 1e-6, max(x[2], 0.0) * 1e-9
            pk = np.array([float((cnt[j] * (np.maximum(gpu_s[j], nops[j] * c) + it + q * tok2[j])).sum())
                           for j in range(len(idx))])
            sp = pk[ri]
            st = np.maximum(d_, n_ * c) + it
            return float(np.abs(sp - mp).sum() / mp.sum()), float(np.abs(st - mt).sum() / mt.sum())

        r = minimize(lambda x: sum(cols(x)), np.array([30.0, 10000.0, 5.0]), method="Nelder-Mead",
                     options={"xatol": 0.01, "fatol": 1e-7, "maxiter": 8000})
        wp, wt = cols(r.x)
        print(json.dumps({"gemm_eff": float(eff), "host_op_us": round(float(r.x[0]), 2),
                          "iteration_us": round(float(r.x[1]), 1),
                          "prefill_host_ns_per_token_sq": round(float(max(r.x[2], 0.0)), 3),
                          "wape_prompt_time": round(wp, 4), "wape_token_time": round(wt, 4)}))
        if best is None or wp + wt < best[0]:
            best = (wp + wt, float(eff), float(r.x[0]), float(r.x[1]), float(max(r.x[2], 0.0)), wp, wt)
    assert best is not None
    print(json.dumps({"chosen": {"gemm_eff": best[1], "host_op_us": round(best[2], 2),
                                 "iteration_us": round(best[3], 1), "prefill_host_ns_per_token_sq": round(best[4], 3),
                                 "max_num_batched_tokens": cap, "wape_prompt_time": round(best[5], 4),
                                 "wape_token_time": round(best[6], 4), "rows": len(rows)}}))


if __name__ == "__main__":
    main(sys.argv[1:])
