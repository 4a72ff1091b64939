"""Metrics of a phase-split run (:mod:`sim.split`), and of the colocated baseline in the same terms.

Per request: TTFT = first token - arrival; TBT = (last - first) / (output - 1) (the mean time between its
tokens; the KV transfer falls in its first gap); E2E = last - arrival. Each at p50/p90/p99, absolute and as
slowdown against the request run alone: its prompt alone (one iteration plus the iteration overhead), its tokens
alone (``StepTimeModel.decode_times`` of one sequence), E2E alone = the sum.

Alone *where* (:class:`SloReference`): Splitwise (Patel et al., ISCA 2024, Sec. on SLOs) states its slowdowns
against the request run alone on a reference machine, the same for every design compared; so by default
(:func:`default_reference`) it is one DGX-A100 at TP8 (one instance per machine, as Splitwise runs Llama-2-70B
and BLOOM-176B) under the run's own engine profile. With ``reference=None`` ("own") each pool's own instance is
the reference (what this module did before): slower hardware then loosens its own SLO, and designs are not
compared like for like.

SLOs (:class:`SloSpec`): limits on the slowdown percentiles (``SPLITWISE_SLO``: TTFT 2/3/6x, TBT and E2E
1.25/1.5/5x at p50/p90/p99) and/or absolute limits in seconds (``ttft_p99=2.0``), all of which must hold.
Cost and power: the machines' catalog figures (:mod:`hwmodels.machines`). Throughput: requests (tokens) over
the arrival window (:func:`measured_window_s`), not over the run's span with its drain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwmodels.engine import EngineProfile, EngineStepTimeModel
from hwmodels.machines import Machine
from hwmodels.step import StepTimeModel
from sim.metrics import request_latencies
from workloads.errors import ConfigError
from workloads.llm_ops import Batch
from workloads.model_spec import ModelSpec

PCTS = (50, 90, 99)
METRICS = ("ttft", "tbt", "e2e")
SPLITWISE_SLO: dict[str, tuple[float, float, float]] = {"ttft": (2.0, 3.0, 6.0), "tbt": (1.25, 1.5, 5.0),
                                                        "e2e": (1.25, 1.5, 5.0)}
SLO_PRESETS = {"splitwise": SPLITWISE_SLO}
DEFAULT_REFERENCE = "dgx-a100"      # Splitwise's reference machine, at TP = its GPUs (8)


@dataclass(frozen=True)
class SloReference:
    """The machine (at a TP degree) a request is run alone on to define its slowdown."""

    machine: Machine
    tp: int

    def __post_init__(self) -> None:
        if self.tp < 1 or self.machine.gpus % self.tp:
            raise ConfigError(f"tp {self.tp} must divide the {self.machine.gpus} GPUs of {self.machine.id}",
                              field="slo-reference", value=self.tp)

    @property
    def label(self) -> str:
        return f"{self.machine.id}/tp{self.tp}"


@dataclass(frozen=True)
class SloSpec:
    """SLOs: ``slowdown[metric]`` = limits at p50/p90/p99 (x the request alone on ``reference``);
    ``absolute[metric][pct]`` = seconds. ``reference`` None: each pool's own instance."""

    slowdown: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    absolute: dict[str, dict[int, float]] = field(default_factory=dict)
    reference: SloReference | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"limits": {k: dict(zip((f"p{p}" for p in PCTS), v)) for k, v in self.slowdown.items()},
                "absolute_s": {k: {f"p{p}": v for p, v in d.items()} for k, d in self.absolute.items()},
                "reference": "own" if self.reference is None else self.reference.label}

    def absolute_limit(self, metric: str, pct: int) -> float | None:
        return self.absolute.get(metric, {}).get(pct)


@functools.cache
def default_reference() -> SloReference:
    from hwmodels.machines import load_machine

    m = load_machine(DEFAULT_REFERENCE)
    return SloReference(m, m.gpus)


def parse_reference(text: str) -> SloReference | None:
    """``own`` -> None; ``<machine>`` (TP = its GPUs) or ``<machine>/tp<N>`` -> a :class:`SloReference`."""
    from hwmodels.machines import load_machine

    text = text.strip()
    if text == "own":
        return None
    name, sep, tp = text.partition("/tp")
    m = load_machine(name)
    if sep and not tp.isdigit():
        raise ConfigError(f"expected <machine>[/tp<N>] or own, got {text!r}", field="slo-reference", value=text)
    return SloReference(m, int(tp) if sep else m.gpus)


def as_slo(slo: SloSpec | dict[str, tuple[float, float, float]] | None) -> SloSpec | None:
    """A plain dict of slowdown limits (``SPLITWISE_SLO``) means them against :func:`default_reference`."""
    if slo is None or isinstance(slo, SloSpec):
        return slo
    return SloSpec(dict(slo), {}, default_reference())


def parse_slo(text: str | None, reference: str = DEFAULT_REFERENCE) -> SloSpec | None:
    """``--slo``: ``none``, a preset (``splitwise``), absolute limits ``ttft_p99=2.0,tbt_p50=0.05,e2e_p90=30``
    (seconds; metrics ttft, tbt, e2e; percentiles 50, 90, 99), or a preset and limits comma-separated.
    ``reference``: :func:`parse_reference`. Malformed: ``ConfigError`` naming the item."""
    if text is None or text.strip() in ("", "none"):
        return None
    slow: dict[str, tuple[float, float, float]] = {}
    absolute: dict[str, dict[int, float]] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item in SLO_PRESETS:
            slow.update(SLO_PRESETS[item])
            continue
        key, eq, val = item.partition("=")
        metric, _, pct = key.strip().partition("_p")
        try:
            sec = float(val)
        except ValueError:
            sec = float("nan")
        if not eq or metric not in METRICS or not pct.isdigit() or int(pct) not in PCTS or not sec > 0 \
                or sec == float("inf"):
            raise ConfigError(f"expected a preset ({', '.join(SLO_PRESETS)}) or <ttft|tbt|e2e>_p<50|90|99>=<seconds>"
                              f" (> 0), got {item!r}", field="slo", value=text)
        absolute.setdefault(metric, {})[int(pct)] = sec
    return SloSpec(slow, absolute, parse_reference(reference))


@functools.lru_cache(maxsize=16)
def reference_step(model: ModelSpec, ref: SloReference, max_kv_len: int,
                   engine: EngineProfile | None) -> StepTimeModel:
    """The step model of one instance of the reference (memoised: its GEMM tables serve every summary)."""
    gpu = ref.machine.effective_gpu
    if engine is None:
        return StepTimeModel(model, gpu, ref.tp, max_kv_len=max_kv_len)
    return EngineStepTimeModel(model, gpu, ref.tp, engine=engine, max_kv_len=max_kv_len)


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
                    output: np.ndarray, alone: dict[str, np.ndarray], slo: SloSpec | None) -> dict[str, Any]:
    ttft, tbt, e2e = request_latencies(arrival_ns, first_ns, last_ns, output)
    got = {"ttft": ttft, "tbt": tbt, "e2e": e2e}
    out: dict[str, Any] = {}
    ok = True
    for k, v in got.items():
        slow = _pcts(v / alone[k])
        out[f"{k}_s"] = _pcts(v)
        out[f"{k}_slowdown"] = slow
        if slo is not None:
            for p, lim in zip(PCTS, slo.slowdown.get(k, ())):
                ok &= bool(slow[f"p{p}"] <= lim)
            for p, sec in slo.absolute.get(k, {}).items():
                ok &= bool(out[f"{k}_s"][f"p{p}"] <= sec)
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
        out["slo"] = {**slo.to_dict(), "met": ok}
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


def _alone(model: ModelSpec, prompt: np.ndarray, output: np.ndarray, slo: SloSpec | None, pre: StepTimeModel,
           dec: StepTimeModel, ovh: float, max_kv_len: int, engine: EngineProfile | None) -> dict[str, np.ndarray]:
    """Each request alone: on the SLO's reference machine, or (no SLO, or reference "own") on its own pools."""
    if slo is not None and slo.reference is not None:
        pre = dec = reference_step(model, slo.reference, max_kv_len, engine)
    return isolated_times(prompt, output, pre, ovh, dec, ovh)


def summarize_split(res: Any, slo: SloSpec | dict[str, tuple[float, float, float]] | None = None) -> dict[str, Any]:
    cfg = res.cfg
    ovh = cfg.iteration_overhead_s
    slo = as_slo(slo)
    alone = _alone(res.model, res.prompt, res.output, slo, res.steps["prefill"], res.steps["decode"], ovh,
                   cfg.serve.max_model_len or res.model.max_position_embeddings, cfg.engine)
    pools = {"prefill": cfg.prefill, "decode": cfg.decode, **({} if cfg.mixed is None else {"mixed": cfg.mixed.pool})}
    out = {"layout": "split", "model": res.model.name, "requests": int(res.ids.size),
           "transfer": cfg.transfer.value, "router": cfg.router.value,
           **{role: {"machine": p.machine.id, "count": p.count, "tp": p.tp, "instances": p.instances}
              for role, p in pools.items()}}
    out.update(latency_summary(res.arrival_ns, res.first_ns, res.last_ns, res.prompt, res.output, alone, slo))
    moved = res.decode_instance >= 0
    if res.mixed_phase is not None:
        moved = moved | (res.mixed_phase == 2)
        out["mixed_pool"] = {"whole_requests": int((res.mixed_phase == 1).sum()),
                             "decode_overflow_requests": int((res.mixed_phase == 2).sum())}
    out["kv_transfer"] = {"requests": int(moved.sum()), "bytes": float(res.kv_bytes.sum()),
                          "exposed_s": _pcts(res.transfer_ns[moved] / 1e9)}
    out["cost_power"] = cost_power({role: (p.machine, p.count) for role, p in pools.items()},
                                   out["throughput"]["requests_per_s"])
    return out


def summarize_colocated(res: Any, machine: Any, count: int,
                        slo: SloSpec | dict[str, tuple[float, float, float]] | None, step: StepTimeModel,
                        engine: EngineProfile | None = None) -> dict[str, Any]:
    """The colocated baseline (:func:`sim.serving.simulate_serving`) in the same terms; ``engine``: the profile
    its ``step`` was built with (the reference machine runs the request alone under the same one)."""
    ovh = res.cfg.iteration_overhead_s
    slo = as_slo(slo)
    alone = _alone(res.model, res.prompt, res.output, slo, step, step, ovh,
                   res.cfg.max_model_len or res.model.max_position_embeddings, engine)
    out: dict[str, Any] = {"layout": "colocated", "model": res.model.name, "requests": int(res.ids.size),
                           "machine": machine.id, "count": count, "tp": res.cfg.tp, "instances": res.cfg.replicas}
    out.update(latency_summary(res.arrival_ns, res.first_ns, res.last_ns, res.prompt, res.output, alone, slo))
    out["cost_power"] = cost_power({"colocated": (machine, count)}, out["throughput"]["requests_per_s"])
    return out
