"""Fit the ``vllm-splitwise`` engine profile to SplitwiseSim's measured perf_model_a100.csv.

The file (Patel et al., Splitwise, ISCA 2024; Mutinifni/splitwise-sim data/perf_model.csv) was measured
with the 2023 vLLM build on DGX-A100: eager PyTorch (no CUDA graphs), Ray tensor-parallel workers. Three
constants are fitted, all of the software, none of the silicon (hwmodels/calibration/ampere.toml is not
touched):

* ``gemm_eff`` of the ``vllm-splitwise`` stack (hwmodels/stacks/vllm-splitwise.toml): the GEMM throughput
  of the prompt phase relative to the Ampere family's tuned-library figure; a grid over 0.40..1.00;
* ``host_op_us`` and ``iteration_us`` of the engine (hwmodels/specs/machines/engines.toml), for each grid
  value by Nelder-Mead.

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

from hwmodels.engine import EngineProfile, EngineStepTimeModel, launched_ops
from hwmodels.gpu import load_gpu
from hwmodels.kernels import load_stack
from hwmodels.memory import memory_breakdown
from workloads.catalog import load_model
from workloads.errors import CapacityError
from workloads.measured_splitwise import read_splitwise_perf

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
    bare = EngineProfile("fit", "vllm", 0.0, 0.0)
    base = load_stack("vllm")
    best = None
    for eff in np.round(np.arange(0.40, 1.0001, 0.05), 2):
        stack = dataclasses.replace(base, name="vllm-splitwise", gemm_eff=float(eff))
        steps = {}
        pre = np.zeros(len(idx))
        dec = np.zeros(len(idx))
        nops = np.zeros(len(idx))
        for k, i in idx.items():
            if k[:2] not in steps:
                steps[k[:2]] = EngineStepTimeModel(load_model(k[0]), gpu, k[1], engine=bare, stack=stack)
            s = steps[k[:2]]
            pre[i], dec[i] = s.isolated(k[2], k[3], k[4])
            nops[i] = launched_ops(s.model, k[1])
        p_, d_, n_ = pre[ri], dec[ri], nops[ri]

        def cols(x: np.ndarray, p_: np.ndarray = p_, d_: np.ndarray = d_, n_: np.ndarray = n_) -> tuple[float, float]:
            c, it = max(x[0], 0.0) * 1e-6, max(x[1], 0.0) * 1e-6
            sp = np.maximum(p_, n_ * c) + it
            st = np.maximum(d_, n_ * c) + it
            return float(np.abs(sp - mp).sum() / mp.sum()), float(np.abs(st - mt).sum() / mt.sum())

        r = minimize(lambda x: sum(cols(x)), np.array([30.0, 10000.0]), method="Nelder-Mead",
                     options={"xatol": 0.01, "fatol": 1e-7, "maxiter": 4000})
        wp, wt = cols(r.x)
        print(json.dumps({"gemm_eff": float(eff), "host_op_us": round(float(r.x[0]), 2),
                          "iteration_us": round(float(r.x[1]), 1), "wape_prompt_time": round(wp, 4),
                          "wape_token_time": round(wt, 4)}))
        if best is None or wp + wt < best[0]:
            best = (wp + wt, float(eff), float(r.x[0]), float(r.x[1]), wp, wt)
    assert best is not None
    print(json.dumps({"chosen": {"gemm_eff": best[1], "host_op_us": round(best[2], 2),
                                 "iteration_us": round(best[3], 1), "wape_prompt_time": round(best[4], 4),
                                 "wape_token_time": round(best[5], 4), "rows": len(rows)}}))


if __name__ == "__main__":
    main(sys.argv[1:])
