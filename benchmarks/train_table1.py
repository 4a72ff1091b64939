"""Held-out check: Narayanan et al. 2021 (arXiv:2104.04473) Table 1, achieved TFLOP/s per GPU (with
recompute) simulated vs published, one JSON line per row. The rows, their sources and the settings the
table does not state (set once for all rows) are in ``sim.training_validation.table1_2021``; nothing is
fitted to them. Usage: python benchmarks/train_table1.py
"""

from __future__ import annotations

import json
import time

from sim.training_validation import TABLE1_2021, table1_2021


def main() -> None:
    for name, row in TABLE1_2021.items():
        t0 = time.perf_counter()
        sim, paper = table1_2021(name)
        a, h, layers, tp, pp, gpus, gb, _ = row
        print(json.dumps({"benchmark": "train_narayanan2021_table1", "model": name, "gpus": gpus, "tp": tp, "pp": pp,
                          "dp": gpus // (tp * pp), "global_batch": gb, "published_tflops_per_gpu": paper,
                          "simulated_tflops_per_gpu": round(sim, 1), "error": round(sim / paper - 1, 4),
                          "within_10pct": abs(sim / paper - 1) <= 0.10, "wall_s": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main()
