"""Metrics of a phase-split run (:mod:`sim.split`), and of the colocated baseline in the same terms.

Per request: TTFT = first token - arrival; TBT = (last - first) / (output - 1) (the mean time between its
tokens; the KV transfer falls in its first gap); E2E = last - arrival. Each at p50/p90/p99, absolute and as
slowdown against the request run alone: its prompt alone on a prefill instance (one iteration plus the
iteration overhead), its tokens alone on a decode instance (``StepTimeModel.decode_times`` of one sequence),
E2E alone = the sum. SLOs: limits on the slowdown percentiles; ``SPLITWISE_SLO`` is Splitwise's (Patel et al.,
ISCA 2024, Table of SLOs: TTFT 2/3/6x, TBT and E2E 1.25/1.5/5x at p50/p90/p99). Cost and power: the machines'
catalog figures (:mod:`hwmodels.machines`). Throughput: requests (tokens) over the arrival window
(:func:`measured_window_s`), not over the run's span with its drain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmodels.step import StepTimeModel
from sim.metrics import request_latencies
from workloads.llm_ops import Batch

PCTS = (50, 90, 99)
SPLITWISE_SLO: dict[str, tuple[float, float, float]] = {"ttft": (2.0, 3.0, 6.0), "tbt": (1.25, 1.5, 5.0),
                                                        "e2e": (1.25, 1.5, 5.0)}
SLO_PRESETS = {"splitwise": SPLITWISE_SLO}


def isolated_times(prompt: np.ndarray, output: np.ndarray, pre: StepTimeModel, pre_overhead_s: float,
                   dec: StepTimeModel, dec_overhead_s: float) -> dict[str, np.ndarray]:
    """Per request: TTFT, TBT and E2E alone (seconds)."""
    ttft = np.empty(prompt.size)
    tbt = np.full(prompt.size, np.nan)
    pmemo: dict[int, float] = {}
    dmemo: dict[tuple[int, int], float] = {}
    for i, (p, o) in enumerate(zip(prompt.tolist(), output.tolist())):
        if p not in pmemo:
            pmemo[p] = pre.iteration_time(Batch(prefill=((p, p),))) + pre_overhead_s
        ttft[i] = pmemo[p]
        if o > 1:
            if (p, o) not in dmemo:
                dmemo[(p, o)] = float(dec.decode_times([p + 1], o - 1).mean()) + dec_overhead_s
            tbt[i] = dmemo[(p, o)]
    e2e = ttft + np.where(output > 1, (output - 1) * np.nan_to_num(tbt), 0.0)
    return {"ttft": ttft, "tbt": tbt, "e2e": e2e}


def _pcts(x: np.ndarray) -> dict[str, float]:
    x = x[~np.isnan(x)]
    if x.size == 0:
        return {f"p{p}": float("nan") for p in PCTS}
    return {f"p{p}": float(v) for p, v in zip(PCTS, np.percentile(x, PCTS))}


def measured_window_s(arrival_ns: np.ndarray, last_ns: np.ndarray) -> float:
    """The window throughput is measured over: the arrival window, ``n / (n - 1)`` x (last arrival - first
    arrival) for n requests (the span of n arrivals plus one mean gap, so n / window = (n - 1) / span, the
    usual estimate of an arrival rate). Not the run's span: that includes the drain after the last arrival, which
    grows with the requests in flight (on 30 s of arrivals it can read half the rate a cluster keeps up with) and says
    nothing about the rate sustained. A cluster that keeps up completes at the arrival rate; one that falls behind
    shows it in the latency percentiles and the SLOs, and in ``drain_s``. One request (or arrivals at one instant):
    the run's span, drain included."""
    n = arrival_ns.size
    if n == 0:
        return 1e-9
    lo, hi = int(arrival_ns.min()), int(arrival_ns.max())
    if n < 2 or hi <= lo:
        return max(1e-9, (int(last_ns.max()) - lo) / 1e9)
    return (hi - lo) / 1e9 * n / (n - 1)


def latency_summary(arrival_ns: np.ndarray, first_ns: np.ndarray, last_ns: np.ndarray, prompt: np.ndarray,
                    output: np.ndarray, alone: dict[str, np.ndarray],
                    slo: dict[str, tuple[float, float, float]] | None) -> dict[str, Any]:
    ttft, tbt, e2e = request_latencies(arrival_ns, first_ns, last_ns, output)
    got = {"ttft": ttft, "tbt": tbt, "e2e": e2e}
    out: dict[str, Any] = {}
    ok = True
    for k, v in got.items():
        slow = _pcts(v / alone[k])
        out[f"{k}_s"] = _pcts(v)
        out[f"{k}_slowdown"] = slow
        if slo is not None:
            for p, lim in zip(PCTS, slo[k]):
                ok &= bool(slow[f"p{p}"] <= lim)
    n = arrival_ns.size
    span = max(1e-9, (int(last_ns.max()) - int(arrival_ns.min())) / 1e9) if n else 1e-9
    window = measured_window_s(arrival_ns, last_ns)
    out["throughput"] = {"requests_per_s": n / window,
                         "output_tokens_per_s": float(output.sum()) / window,
                         "total_tokens_per_s": float(prompt.sum() + output.sum()) / window,
                         "window_s": window,
                         "requests_per_s_with_drain": n / span}
    out["duration_s"] = span
    out["drain_s"] = max(0.0, (int(last_ns.max()) - int(arrival_ns.max())) / 1e9) if n else 0.0
    if slo is not None:
        out["slo"] = {"limits": {k: dict(zip((f"p{p}" for p in PCTS), v)) for k, v in slo.items()},
                      "met": ok}
    return out


def cost_power(pools: dict[str, Any], throughput_rps: float) -> dict[str, Any]:
    """``pools``: name -> (machine, count). $/hour, kW, and requests/s per $/hour and per kW."""
    cost: float | None = 0.0
    power = 0.0
    machines = {}
    for name, (m, n) in pools.items():
        machines[name] = {"machine": m.id, "count": n, "gpus": n * m.gpus}
        cost = None if cost is None or m.cost_per_hour is None else cost + n * m.cost_per_hour
        power += n * m.power_w
    return {"machines": machines, "cost_per_hour_usd": cost, "power_kw": power / 1e3,
            "requests_per_s_per_usd_hour": None if not cost else throughput_rps / cost,
            "requests_per_s_per_kw": throughput_rps / (power / 1e3) if power else None}


def summarize_split(res: Any, slo: dict[str, tuple[float, float, float]] | None = None) -> dict[str, Any]:
    cfg = res.cfg
    ovh = cfg.iteration_overhead_s
    alone = isolated_times(res.prompt, res.output, res.steps["prefill"], ovh, res.steps["decode"], ovh)
    pools = {"prefill": cfg.prefill, "decode": cfg.decode}
    out = {"layout": "split", "model": res.model.name, "requests": int(res.ids.size),
           "transfer": cfg.transfer.value, "router": cfg.router.value,
           **{role: {"machine": p.machine.id, "count": p.count, "tp": p.tp, "instances": p.instances}
              for role, p in pools.items()}}
    out.update(latency_summary(res.arrival_ns, res.first_ns, res.last_ns, res.prompt, res.output, alone, slo))
    moved = res.decode_instance >= 0
    out["kv_transfer"] = {"requests": int(moved.sum()), "bytes": float(res.kv_bytes.sum()),
                          "exposed_s": _pcts(res.transfer_ns[moved] / 1e9)}
    out["cost_power"] = cost_power({role: (p.machine, p.count) for role, p in pools.items()},
                                   out["throughput"]["requests_per_s"])
    return out


def summarize_colocated(res: Any, machine: Any, count: int, slo: dict[str, tuple[float, float, float]] | None,
                        step: StepTimeModel) -> dict[str, Any]:
    """The colocated baseline (:func:`sim.serving.simulate_serving`) in the same terms."""
    ovh = res.cfg.iteration_overhead_s
    alone = isolated_times(res.prompt, res.output, step, ovh, step, ovh)
    out: dict[str, Any] = {"layout": "colocated", "model": res.model.name, "requests": int(res.ids.size),
                           "machine": machine.id, "count": count, "tp": res.cfg.tp, "instances": res.cfg.replicas}
    out.update(latency_summary(res.arrival_ns, res.first_ns, res.last_ns, res.prompt, res.output, alone, slo))
    out["cost_power"] = cost_power({"colocated": (machine, count)}, out["throughput"]["requests_per_s"])
    return out
