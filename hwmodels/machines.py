"""Machines: a server of N GPUs with its price and power, the unit phase-split clusters are sized in.

``hwmodels/specs/machines/machines.toml`` holds the catalog (DGX-A100, DGX-H100, DGX-H100 power-capped at
70 %) with sources; any catalog GPU also makes a machine as ``<gpu>x<count>`` (``h100-sxm-80gb x4`` spelled
``h100-sxm-80gbx4``), priced from ``[gpu_cost_per_hour_usd]`` when listed and drawing count x the GPU's TDP.

Power cap (``power_cap`` < 1, a fraction of the GPU's TDP). :func:`capped_gpu` runs the GPU's SM clock
domain at the clock :mod:`hwmodels.power` finds for a compute-bound phase (dense GEMMs at the family's
sustained GEMM efficiency) under ``cap x TDP``, relative to the clock the same phase sustains at TDP
(:func:`hwmodels.power.cap_clock_ratio`: 0.871 at 70 % on H100/H200, from our H200 power run; the former rule
P ~ f^3 gave c^(1/3) = 0.888). Relative, because the Hopper kernel calibration was fitted on GEMMs that
already ran power-capped at TDP. Compute peaks and the clock scale by it (:func:`hwmodels.power.clocked_gpu`:
per-clock feeds slow too), memory and link bandwidths do not: a 4096-token Llama-2-70B prefill on H100 TP8
slows 1.09x (bound 1/0.871 = 1.15x) and a decode step 0.8 %, as Splitwise measured on H100 (the prompt
phase, compute-bound at TDP, slows under a 70 % cap; the token phase, memory-bound and well under it, barely
does). A family without a ``[power]`` table keeps c^(1/3). The id stays the GPU's: the TP all-reduce is
priced on the node type found by GPU id.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hwmodels.gpu import GPUSpec, list_gpus, load_gpu
from hwmodels.network.nics import node_catalog
from hwmodels.power import cap_clock_ratio, clocked_gpu, load_power
from workloads.errors import ConfigError
from workloads.specfile import closest, get_number, get_str, read_toml, reject_unknown

_KEYS = ("name", "gpu", "gpus", "node", "power_kw", "cost_per_hour_usd", "power_cap", "source")


@dataclass(frozen=True)
class Machine:
    """One server (SI inside: watts, $ per second is not used; cost stays per hour)."""

    id: str
    name: str
    gpu: GPUSpec
    gpus: int
    node: str | None          # network node type id, None: none known
    power_w: float
    cost_per_hour: float | None
    power_cap: float = 1.0
    source: str = ""

    @property
    def effective_gpu(self) -> GPUSpec:
        """The GPU as it runs in this machine (clock reduced under a power cap)."""
        return capped_gpu(self.gpu, self.power_cap)


def capped_gpu(gpu: GPUSpec, cap: float) -> GPUSpec:
    """``gpu`` under a power cap ``cap`` (fraction of TDP): SM clock and compute peaks x the sustained clock
    ratio of :func:`hwmodels.power.cap_clock_ratio` (module docstring)."""
    if not 0.0 < cap <= 1.0:
        raise ConfigError(f"power cap must be in (0, 1], got {cap}", field="power_cap", value=cap)
    if cap == 1.0:
        return gpu
    f = cap_clock_ratio(gpu, cap) if load_power(gpu.architecture.value) is not None else cap ** (1.0 / 3.0)
    return dataclasses.replace(clocked_gpu(gpu, f), name=f"{gpu.name} at {cap:.0%} power", tdp_w=gpu.tdp_w * cap)


def machines_file() -> Path:
    return Path(str(resources.files("hwmodels") / "specs" / "machines" / "machines.toml"))


def parse_machines(data: dict[str, Any], *, file: str) -> tuple[dict[str, Machine], dict[str, float]]:
    prices = data.get("gpu_cost_per_hour_usd", {})
    if not isinstance(prices, dict):
        raise ConfigError("must be a table", file=file, field="[gpu_cost_per_hour_usd]")
    gpu_prices = {k: float(get_number(prices, k, file=file, section="gpu_cost_per_hour_usd")) for k in prices}
    out: dict[str, Machine] = {}
    for mid, t in data.items():
        if mid == "gpu_cost_per_hour_usd":
            continue
        if not isinstance(t, dict):
            raise ConfigError("must be a table", file=file, field=f"[{mid}]")
        reject_unknown(t, _KEYS, file=file, section=mid)
        gname = get_str(t, "gpu", file=file, section=mid)
        try:
            gpu = load_gpu(gname)
        except ConfigError as exc:
            raise ConfigError(str(exc), file=file, field=f"{mid}.gpu", value=gname) from None
        cap = float(get_number(t, "power_cap", file=file, section=mid, default=1.0))
        if cap > 1.0:
            raise ConfigError(f"must be in (0, 1], got {cap}", file=file, field=f"{mid}.power_cap", value=cap)
        out[mid] = Machine(mid, get_str(t, "name", file=file, section=mid), gpu,
                           int(get_number(t, "gpus", file=file, section=mid, integer=True)),
                           get_str(t, "node", file=file, section=mid, default=None),
                           float(get_number(t, "power_kw", file=file, section=mid)) * 1e3,
                           float(get_number(t, "cost_per_hour_usd", file=file, section=mid)), cap,
                           get_str(t, "source", file=file, section=mid, default="") or "")
    return out, gpu_prices


@functools.cache
def _catalog() -> tuple[dict[str, Machine], dict[str, float]]:
    p = machines_file()
    return parse_machines(read_toml(p), file=str(p))


def list_machines() -> list[str]:
    return sorted(_catalog()[0])


_GPU_X = re.compile(r"^(?P<gpu>.+)x(?P<n>[0-9]+)$")


def _node_of_gpu(gpu_id: str) -> str | None:
    """The first node type of the network catalog (``hwmodels/network/specs/nodes.toml``) built of this GPU."""
    return next((nid for nid, node in node_catalog().items() if node.gpu == gpu_id), None)


def load_machine(name: str) -> Machine:
    """A catalog machine by id, or ``<gpu id>x<count>`` of a catalog GPU. Unknown: ``ConfigError``."""
    cat, prices = _catalog()
    if name in cat:
        return cat[name]
    m = _GPU_X.match(name)
    if m and m.group("gpu") in list_gpus():
        n = int(m.group("n"))
        if n < 1:
            raise ConfigError(f"GPU count must be >= 1, got {n}", field="machine", value=name)
        gpu = load_gpu(m.group("gpu"))
        price = prices.get(gpu.id)
        return Machine(name, f"{n}x {gpu.name}", gpu, n, _node_of_gpu(gpu.id), n * gpu.tdp_w,
                       None if price is None else n * price, 1.0, "GPU catalog; power = GPUs' TDP")
    known = list_machines()
    hint = closest(name, known)
    raise ConfigError(f"unknown machine {name!r}; known: {', '.join(known)}, or <gpu>x<count> of a catalog GPU"
                      + (f". Did you mean '{hint}'?" if hint else ""), field="machine", value=name)
