"""Serving metrics from a ``ServeResult``: latency percentiles, throughput, goodput, KV use, MFU/MBU.

Definitions (vLLM benchmark conventions): TTFT = first token - arrival; TPOT = (last token -
first token) / (output tokens - 1) over requests with more than one output token; ITL = time
between consecutive tokens of a request, over all such gaps; latency = last token - arrival.
Goodput: requests per second that meet every SLO given. MFU / MBU: FLOPs and bytes moved over
the makespan, against the peak of all GPUs of all replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.serving import ServeResult
from workloads.ops import DType

PCTS = (50, 90, 99)


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None = None
    tpot_s: float | None = None
    latency_s: float | None = None


def stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"mean": float("nan"), **{f"p{p}": float("nan") for p in PCTS}}
    out = {"mean": float(np.mean(x))}
    for p, v in zip(PCTS, np.percentile(x, PCTS)):
        out[f"p{p}"] = float(v)
    return out


def weighted_stats(x: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Mean and percentiles of samples ``x`` each counted ``w`` times (the 'lower' percentile: the
    smallest sample whose cumulative weight reaches ``p %`` of the total)."""
    if x.size == 0:
        return stats(x)
    fast = _bucketed_stats(x, w)
    if fast is not None:
        return fast
    xs, ws = _sorted_pairs(x, w)   # any order of equal samples gives the same mean and percentiles
    cum = np.cumsum(ws)
    total = cum[-1]
    out = {"mean": float(np.sum(xs * ws) / total)}
    for p in PCTS:
        idx = int(np.searchsorted(cum, p / 100.0 * total, "left"))
        out[f"p{p}"] = float(xs[min(idx, xs.size - 1)])
    return out


BUCKET_BITS = 16   # _bucketed_stats: at most 2**16 buckets of equal width over the samples' range


def _bucketed_stats(x: np.ndarray, w: np.ndarray) -> dict[str, float] | None:
    """``weighted_stats`` of non-negative integer samples and weights without sorting them all: the
    weights summed per bucket of the high bits of the sample (one ``bincount``) locate the bucket that
    holds each percentile, and only that bucket's samples are sorted. The same values as the full sort
    (the mean is the same exact integer sum over the same total; each percentile is the same smallest
    sample whose cumulative weight reaches the target). None where it does not apply."""
    if x.dtype.kind not in "iu" or w.dtype.kind not in "iu" or x.dtype.itemsize > 8 or w.dtype.itemsize > 8:
        return None
    x = x.astype(np.int64, copy=False)
    w = w.astype(np.int64, copy=False)
    top = int(x.max())
    total = w.sum()
    # bucket sums are float64: exact below 2**53
    if int(x.min()) < 0 or int(w.min()) < 0 or not 0 < int(total) < (1 << 53):
        return None
    out = {"mean": float(np.dot(x, w) / total)}   # as np.sum(xs * ws) / total: the same int64 sum
    b = x >> max(0, top.bit_length() - BUCKET_BITS)
    cum_b = np.cumsum(np.bincount(b, weights=w))
    for p in PCTS:
        target = p / 100.0 * total
        j = int(np.searchsorted(cum_b, target, "left"))
        if j >= cum_b.size:   # past the total (cannot happen below p = 100): the largest, as the full sort
            out[f"p{p}"] = float(top)
            continue
        inside = b == j
        xs, ws = _sorted_pairs(x[inside], w[inside])
        cum = np.cumsum(ws) + (int(cum_b[j - 1]) if j else 0)
        idx = int(np.searchsorted(cum, target, "left"))
        out[f"p{p}"] = float(xs[min(idx, xs.size - 1)])
    return out


def _sorted_pairs(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` sorted and ``w`` along with it (equal samples in any order). Non-negative integers are
    packed into one int64 key (sample high, weight low) and sorted in place: much faster than an
    argsort and two gathers over the ~1e6 ITL samples of a long trace."""
    if x.dtype.kind in "iu" and w.dtype.kind in "iu" and x.dtype.itemsize <= 8 and w.dtype.itemsize <= 8:
        bits = max(1, int(w.max()).bit_length())
        if int(x.min()) >= 0 and int(w.min()) >= 0 and int(x.max()) < (1 << (62 - bits)):
            key = (x.astype(np.int64) << bits) | w.astype(np.int64)
            key.sort()
            return key >> bits, key & ((1 << bits) - 1)
    order = np.argsort(x)
    return x[order], w[order]


def request_latencies(arrival_ns: np.ndarray, first_ns: np.ndarray, last_ns: np.ndarray,
                      output: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request (seconds): TTFT, TPOT (NaN where only one output token) and end-to-end latency.
    Shared by the colocated metrics here and the phase-split ones (:mod:`sim.split_metrics`)."""
    ttft = (first_ns - arrival_ns) / 1e9
    lat = (last_ns - arrival_ns) / 1e9
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (last_ns - first_ns) / 1e9 / np.maximum(output - 1, 1), np.nan)
    return ttft, tpot, lat


def per_request(res: ServeResult) -> dict[str, np.ndarray]:
    ttft, tpot, lat = request_latencies(res.arrival_ns, res.first_ns, res.last_ns, res.output)
    return {"ttft_s": ttft, "tpot_s": tpot, "latency_s": lat,
            "queue_s": (res.admitted_ns - res.arrival_ns) / 1e9}


def summarize(res: ServeResult, slo: SLO | None = None) -> dict:
    pr = per_request(res)
    tpot = pr["tpot_s"][~np.isnan(pr["tpot_s"])]
    start = int(res.arrival_ns.min()) if res.arrival_ns.size else 0
    end = int(res.last_ns.max()) if res.last_ns.size else 0
    span = max(1e-9, (end - start) / 1e9)
    n = int(res.ids.size)
    out_tok = int(res.output.sum())
    in_tok = int(res.prompt.sum())
    ok = np.ones(n, bool)
    slo = slo or SLO()
    if slo.ttft_s is not None:
        ok &= pr["ttft_s"] <= slo.ttft_s
    if slo.tpot_s is not None:
        ok &= ~(pr["tpot_s"] > slo.tpot_s)
    if slo.latency_s is not None:
        ok &= pr["latency_s"] <= slo.latency_s
    cfg = res.cfg
    gpus = cfg.tp * cfg.pp * cfg.replicas
    peak_flops = res.gpu.peak_flops(DType.BF16) * gpus
    peak_bw = res.gpu.memory_bandwidth * gpus
    kv_util = _kv_utilisation(res)
    return {
        "requests": n,
        "model": res.model.name,
        "hardware": res.gpu.id,
        "tp": cfg.tp, "pp": cfg.pp, "replicas": cfg.replicas, "router": cfg.router.value,
        "max_num_seqs": cfg.max_num_seqs, "max_num_batched_tokens": cfg.max_num_batched_tokens,
        "duration_s": span,
        "ttft_s": stats(pr["ttft_s"]),
        "tpot_s": stats(tpot),
        "itl_s": {k: v / 1e9 for k, v in weighted_stats(res.itl_ns, res.itl_weight).items()},
        "latency_s": stats(pr["latency_s"]),
        "throughput": {"requests_per_s": n / span, "output_tokens_per_s": out_tok / span,
                       "total_tokens_per_s": (in_tok + out_tok) / span},
        "goodput": {"slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "latency_s": slo.latency_s},
                    "requests_per_s": float(ok.sum()) / span, "fraction": float(ok.mean()) if n else 0.0},
        "kv_cache": {"blocks_per_replica": res.memory.num_blocks, "block_size": res.memory.block_size,
                     "mean_utilisation": kv_util, "preemptions": int(res.preemptions.sum())},
        "memory_per_gpu_bytes": {"weights": res.memory.weights_bytes, "activation": res.memory.activation_bytes,
                                 "non_torch": res.memory.non_torch_bytes, "kv_cache": res.memory.kv_cache_bytes},
        "mfu": res.flops / (peak_flops * span),
        "mbu": res.bytes / (peak_bw * span),
        "busy_fraction": float(np.mean(res.busy_ns)) / 1e9 / span,
        "iterations": res.iterations,
        "events": res.events,
    }


def _kv_utilisation(res: ServeResult) -> float:
    """Time-weighted mean fraction of KV blocks in use, over replicas (sampled at each event)."""
    fr = []
    for t, u in zip(res.kv_t, res.kv_used):
        if t.size < 2:
            continue
        dt = np.diff(t)
        if dt.sum() > 0:
            fr.append(float(np.sum(u[:-1] * dt) / dt.sum()) / res.memory.num_blocks)
    return float(np.mean(fr)) if fr else 0.0


def kv_timeline(res: ServeResult) -> list[dict]:
    """KV blocks in use per replica over time (seconds, fraction)."""
    return [{"replica": i, "t_s": (t / 1e9).tolist(), "used_fraction": (u / res.memory.num_blocks).tolist()}
            for i, (t, u) in enumerate(zip(res.kv_t, res.kv_used))]
