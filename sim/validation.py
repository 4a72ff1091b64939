"""Replay a measured vLLM serving run and compare TTFT, TPOT and latency with the simulation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwmodels.gpu import GPUSpec
from sim.config import ServeConfig
from sim.metrics import PCTS, per_request
from sim.serving import ServeResult, simulate_serving
from workloads.errors import ConfigError
from workloads.requests import Request

# vLLM's defaults for a setting a run's meta.json leaves out
VLLM_DEFAULTS = {"max_num_seqs": 256, "max_num_batched_tokens": 2048, "gpu_memory_utilization": 0.9,
                 "block_size": 16, "tensor_parallel_size": 1, "pipeline_parallel_size": 1}


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """Engine settings of a vLLM bench run (``meta.json``), vLLM's defaults where absent."""
    p = Path(run_dir) / "meta.json"
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}", file=str(p)) from None
    eng = meta.get("engine_kwargs", {}) or {}
    kv = meta.get("kv_cache", {}) or {}
    hw = meta.get("hardware", {}) or {}
    model = eng.get("model") or meta.get("model")
    if not model:
        raise ConfigError("no model named", file=str(p), field="model")

    def pick(key: str, *sources: dict) -> Any:
        for s in sources:
            if s.get(key) is not None:
                return s[key]
        return VLLM_DEFAULTS[key]

    return {"model": model,
            "tp": int(pick("tensor_parallel_size", eng)), "pp": int(pick("pipeline_parallel_size", eng)),
            "max_num_seqs": int(pick("max_num_seqs", eng)),
            "max_num_batched_tokens": int(pick("max_num_batched_tokens", eng)),
            "gpu_memory_utilization": float(pick("gpu_memory_utilization", kv, eng)),
            "block_size": int(pick("block_size", kv, eng)),
            "max_model_len": eng.get("max_model_len"),
            "device_memory_bytes": hw.get("device_total_memory_bytes"),
            "measured_num_gpu_blocks": kv.get("num_gpu_blocks")}


def config_from_meta(meta: dict[str, Any], **overrides: Any) -> ServeConfig:
    kw = dict(tp=meta["tp"], pp=meta["pp"], max_num_seqs=meta["max_num_seqs"],
              max_num_batched_tokens=meta["max_num_batched_tokens"],
              gpu_memory_utilization=meta["gpu_memory_utilization"], block_size=meta["block_size"],
              max_model_len=meta["max_model_len"], device_memory_bytes=meta["device_memory_bytes"])
    kw.update(overrides)
    return ServeConfig(**kw)


def measured_metrics(reqs: Sequence[Any]) -> dict[str, np.ndarray]:
    """TTFT = first_token_ts - queued_ts; TPOT = (last - first) / (output - 1); latency = last - queued."""
    ok = [r for r in reqs if r.first_token_ts is not None and r.last_token_ts is not None]
    ttft = np.array([r.first_token_ts - r.queued_ts for r in ok])
    lat = np.array([r.last_token_ts - r.queued_ts for r in ok])
    tpot = np.array([(r.last_token_ts - r.first_token_ts) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1])
    return {"ttft": ttft, "tpot": tpot, "latency": lat}


def compare(measured: dict[str, np.ndarray], res: ServeResult) -> dict[str, dict[str, float]]:
    pr = per_request(res)
    sim = {"ttft": pr["ttft_s"], "tpot": pr["tpot_s"][~np.isnan(pr["tpot_s"])], "latency": pr["latency_s"]}
    out: dict[str, dict[str, float]] = {}
    for name in ("ttft", "tpot", "latency"):
        m, s = measured[name], sim[name]
        pairs = [("mean", float(np.mean(m)), float(np.mean(s)))]
        for p in PCTS:
            pairs.append((f"p{p}", float(np.percentile(m, p)), float(np.percentile(s, p))))
        for stat, mv, sv in pairs:
            out[f"{name}_{stat}_s"] = {"measured": mv, "simulated": sv, "rel_err": (sv - mv) / mv}
    return out


def validate_run(requests: Sequence[Request], meta: dict[str, Any], model: Any, gpu: GPUSpec,
                 **overrides: Any) -> tuple[dict[str, dict[str, float]], ServeResult]:
    cfg = config_from_meta(meta, **overrides)
    res = simulate_serving(model, gpu, requests, cfg)
    return compare(measured_metrics(requests), res), res
