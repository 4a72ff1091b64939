"""GPU board power, and the SM clock a power limit allows over a phase of work.

Board power of a GPU running a phase (a prefill iteration, a long GEMM loop) at SM clock ``f``::

    P(f) = idle_w + clock_w x s(f) + (tensor_pj_per_flop x s(f)/x x FLOPs + dram_pj_per_byte x bytes) / T(f)

    x = f / f_max,  v(x) = V(f)/V(f_max) = v_intercept + (1 - v_intercept) x,  s(f) = x v(x)^2

* ``idle_w``: static board power (memory refresh, leakage, VRM, fans) of the GPU idle;
* ``clock_w``: the SM clock domain running at ``f_max`` with no work (clock tree, leakage at the higher
  voltage); CMOS dynamic power goes as f V^2, hence ``s(f)``;
* per FLOP: dense tensor-core work (operands through L2, shared memory and the register file included),
  energy per operation ~ V^2: ``tensor_pj_per_flop`` is the figure at V(f_max), so a FLOP costs
  ``tensor_pj_per_flop x v(x)^2``;
* per DRAM byte: HBM access and the on-chip path of a streaming kernel, on its own voltage rail (not scaled);
* ``T(f) = t_other + t_compute x f_ref / f`` for f < f_ref: the share of the phase bound by the SM clock
  (tensor work, L2 feeds: the kernel model's compute time) stretches as 1/f, the rest (DRAM-bound kernels,
  links, host gaps) does not. ``f_ref`` is the clock the kernel model's calibration holds at (the spec's
  boost clock, ``GPUSpec.boost_clock_hz``); the model never runs kernels faster than that.

Voltage: V linear in f (``v_intercept`` = V at f = 0 over V(f_max)). ``v_intercept = 0`` is P_dyn ~ f^3, the
rule :mod:`hwmodels.machines` used before; GPUs' DVFS tables are closer to an affine V(f) with a floor
around 0.65-0.75 V against ~1.0-1.1 V at the top, and the fitted intercept on our H200 is what the
``[power]`` tables carry (their sources say how each number was found).

The power controller holds ``P <= limit`` over windows of tens of milliseconds, so over a phase at least
that long the sustained clock is the highest ``f <= f_max`` with ``P(f) <= limit``: :func:`sustained_clock`
(``P`` rises with ``f``: more energy per FLOP and a shorter phase). Short isolated kernels (microsecond
benchmarks such as the Vidur files) run before the controller acts, and the kernel calibrations were fitted on
such data at whatever clock the GPU held: the model is off unless an engine profile or a power-capped machine
asks for it.

A kernel inside a longer phase runs at the phase's clock, not at the one it sustains alone:
:func:`context_scales` gives each kernel's factor on its clock-bound seconds (its clock alone over the
phase's), which :class:`hwmodels.validate_torch.CudaStepCost` applies to eager PyTorch steps on Hopper.

Constants per architecture family: the ``[power]`` table of ``hwmodels/calibration/<family>.toml``, watts
for the family's reference GPU (``reference_tdp_w``; another GPU of the family scales the watts by its TDP
over the reference's, the energies per FLOP and byte are the process's and stay).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import family_file
from workloads.errors import ConfigError
from workloads.specfile import get_number, read_toml, reject_unknown

_KEYS = ("idle_w", "clock_w", "tensor_pj_per_flop", "dram_pj_per_byte", "v_intercept", "max_clock_ratio",
         "min_clock_frac", "reference_tdp_w", "source")


@dataclass(frozen=True)
class PowerCalibration:
    """A family's ``[power]`` table (SI inside: watts, joules)."""

    family: str
    idle_w: float             # static board power, idle
    clock_w: float            # SM clock domain at f_max, no work, beyond idle
    tensor_j_per_flop: float  # at V(f_max)
    dram_j_per_byte: float
    v_intercept: float        # V(0)/V(f_max) of the affine V(f)
    max_clock_ratio: float    # f_max / the spec's boost clock (the clock its peaks assume)
    min_clock_frac: float     # lowest clock the controller goes to, fraction of f_max
    reference_tdp_w: float    # TDP of the GPU the watts were measured on
    source: str = ""

    def scaled(self, gpu: GPUSpec) -> PowerCalibration:
        """Watts of ``gpu`` (TDP ratio to the reference GPU); energies per FLOP / byte unchanged."""
        k = gpu.tdp_w / self.reference_tdp_w
        return dataclasses.replace(self, idle_w=self.idle_w * k, clock_w=self.clock_w * k) if k != 1.0 else self


def parse_power(t: Any, *, file: str, family: str) -> PowerCalibration:
    """The ``[power]`` table of a calibration file; a bad value is a ``ConfigError`` naming file and key."""
    if not isinstance(t, dict):
        raise ConfigError("must be a table", file=file, field="[power]")
    reject_unknown(t, _KEYS, file=file, section="power")

    def num(key: str, *, zero: bool = False) -> float:
        return float(get_number(t, key, file=file, section="power", allow_zero=zero))

    def frac(key: str, lo_open: bool) -> float:
        v = num(key, zero=not lo_open)
        if not (0.0 < v <= 1.0 if lo_open else 0.0 <= v < 1.0):
            raise ConfigError(f"must be in {'(0, 1]' if lo_open else '[0, 1)'}, got {v}", file=file,
                              field=f"power.{key}", value=v)
        return v

    src = t.get("source", "")
    ratio = num("max_clock_ratio")
    if ratio < 1.0:
        raise ConfigError(f"must be >= 1 (the highest clock is at least the spec's), got {ratio}", file=file,
                          field="power.max_clock_ratio", value=ratio)
    return PowerCalibration(
        family=family, idle_w=num("idle_w"), clock_w=num("clock_w", zero=True),
        tensor_j_per_flop=num("tensor_pj_per_flop") * 1e-12, dram_j_per_byte=num("dram_pj_per_byte") * 1e-12,
        v_intercept=frac("v_intercept", lo_open=False), max_clock_ratio=ratio,
        min_clock_frac=frac("min_clock_frac", lo_open=True), reference_tdp_w=num("reference_tdp_w"),
        source=str(src))


@functools.cache
def load_power(family: str) -> PowerCalibration | None:
    """The ``[power]`` table of a family's calibration file, or None where the file has none."""
    path = family_file(family)
    data = read_toml(path)
    if "power" not in data:
        return None
    return parse_power(data["power"], file=str(path), family=family)


def gpu_power(gpu: GPUSpec) -> PowerCalibration:
    """The power constants of ``gpu`` (its family's, scaled to its TDP); ``ConfigError`` where none."""
    cal = load_power(gpu.architecture.value)
    if cal is None:
        raise ConfigError(f"no [power] table for family {gpu.architecture.value!r} ({gpu.id})",
                          file=str(family_file(gpu.architecture.value)), field="[power]")
    return cal.scaled(gpu)


def voltage(cal: PowerCalibration, x: float) -> float:
    """V(f)/V(f_max) at ``x = f / f_max``."""
    return cal.v_intercept + (1.0 - cal.v_intercept) * x


@dataclass(frozen=True)
class Phase:
    """One phase of work on one GPU, priced at the kernel model's reference clock (SI)."""

    flops: float          # tensor / arithmetic FLOPs
    dram_bytes: float     # DRAM traffic
    t_compute: float      # seconds bound by the SM clock (stretch as 1/f below the reference clock)
    t_other: float        # seconds that do not (DRAM-bound kernels, links, host gaps)

    @property
    def time(self) -> float:
        return self.t_compute + self.t_other


def time_at(cal: PowerCalibration, phase: Phase, x: float) -> float:
    """Phase time at ``x = f / f_max``: compute share x (f_ref / f) below the reference clock."""
    r = x * cal.max_clock_ratio          # f / f_ref
    return phase.t_other + phase.t_compute / min(r, 1.0)


def power_at(cal: PowerCalibration, phase: Phase, x: float) -> float:
    """Mean board power (W) of ``phase`` run at ``x = f / f_max`` (module docstring)."""
    v2 = voltage(cal, x) ** 2
    t = time_at(cal, phase, x)
    dyn = (cal.tensor_j_per_flop * v2 * phase.flops + cal.dram_j_per_byte * phase.dram_bytes) / t if t > 0 else 0.0
    return cal.idle_w + cal.clock_w * x * v2 + dyn


@dataclass(frozen=True)
class Sustained:
    clock_frac: float     # f / f_max the limit allows
    clock_hz: float
    time_s: float         # the phase's time at that clock
    power_w: float        # its mean power there
    free_power_w: float   # its power at f_max (what it would draw unlimited)
    slowdown: float       # time_s / the phase's time at the reference clock


def sustained_clock(gpu: GPUSpec, phase: Phase, limit_w: float | None = None, *,
                    cal: PowerCalibration | None = None, tol: float = 1e-6) -> Sustained:
    """The highest clock ``f <= f_max`` at which ``phase`` draws at most ``limit_w`` (default the GPU's
    TDP), by bisection (power rises with the clock). Below ``min_clock_frac`` the controller goes no lower:
    the phase runs there and its power may exceed the limit."""
    c = cal if cal is not None else gpu_power(gpu)
    lim = gpu.tdp_w if limit_w is None else limit_w
    if lim <= 0:
        raise ConfigError(f"power limit must be > 0 W, got {lim}", field="power_limit", value=lim)
    fmax = (gpu.boost_clock_hz or 1.5e9) * c.max_clock_ratio
    free = power_at(c, phase, 1.0)
    if free <= lim:
        x = 1.0
    elif power_at(c, phase, c.min_clock_frac) >= lim:
        x = c.min_clock_frac
    else:
        lo, hi = c.min_clock_frac, 1.0
        while hi - lo > tol:
            mid = 0.5 * (lo + hi)
            if power_at(c, phase, mid) <= lim:
                lo = mid
            else:
                hi = mid
        x = lo
    t = time_at(c, phase, x)
    base = time_at(c, phase, 1.0)
    return Sustained(x, x * fmax, t, power_at(c, phase, x), free, t / base if base > 0 else 1.0)


def clocked_gpu(gpu: GPUSpec, frac: float) -> GPUSpec:
    """``gpu`` with its SM clock domain at ``frac`` of the spec's clock: every compute peak and the clock
    itself (per-clock feeds: L2 -> SM, issue rates) scale; DRAM and link bandwidths do not."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"clock fraction must be in (0, 1], got {frac}")
    if frac == 1.0:
        return gpu
    return dataclasses.replace(
        gpu, bf16_flops=gpu.bf16_flops * frac, fp16_flops=gpu.fp16_flops * frac,
        fp8_flops=None if gpu.fp8_flops is None else gpu.fp8_flops * frac, fp32_flops=gpu.fp32_flops * frac,
        boost_clock_hz=None if gpu.boost_clock_hz is None else gpu.boost_clock_hz * frac)


def dense_phase(gpu: GPUSpec, seconds: float = 1.0) -> Phase:
    """A reference compute-bound phase: dense bf16 GEMMs at the family's sustained GEMM fraction of the
    tensor peak for ``seconds`` (operands from L2; DRAM traffic neglected)."""
    from hwmodels.kernels.calibration import load_calibration

    eff = load_calibration(gpu.architecture.value).gemm_peak_eff
    return Phase(flops=gpu.bf16_flops * eff * seconds, dram_bytes=0.0, t_compute=seconds, t_other=0.0)


def cap_clock_ratio(gpu: GPUSpec, cap: float) -> float:
    """Clock of a compute-bound phase under a cap ``cap`` x TDP over its clock at TDP (:func:`dense_phase`):
    what a power-capped machine's compute peaks are scaled by (:func:`hwmodels.machines.capped_gpu`)."""
    if not 0.0 < cap <= 1.0:
        raise ConfigError(f"power cap must be in (0, 1], got {cap}", field="power_cap", value=cap)
    ph = dense_phase(gpu)
    full = sustained_clock(gpu, ph, gpu.tdp_w)
    capped = sustained_clock(gpu, ph, gpu.tdp_w * cap)
    return capped.clock_frac / full.clock_frac


def context_scales(gpu: GPUSpec, kernels: Sequence[Phase], idle_s: float = 0.0, limit_w: float | None = None, *,
                   cal: PowerCalibration | None = None,
                   alone: Sequence[float] | None = None) -> tuple[list[float], Sustained]:
    """How much the clock-bound seconds of each kernel of a phase stretch (> 1) or shrink (< 1) when the kernel
    runs inside that phase rather than alone, back to back, under the power limit.

    ``kernels``: the phase's kernels, each priced as its own :class:`Phase` by the kernel model; ``idle_s``: the
    GPU's idle seconds between them (host gaps), which draw idle and clock-domain power only. The phase's
    sustained clock ``x_phase`` (:func:`sustained_clock` of the sum) against each kernel's own ``x_k`` (the same
    for the kernel alone: ``alone`` where the caller has them) gives the factor ``x_k / x_phase`` on the kernel's
    ``t_compute``; its ``t_other`` is not clock-bound. A compute-bound kernel measured alone ran at its own
    (lower) clock, which is what a calibration fitted on such measurements holds; between memory-bound kernels
    and host gaps the mean power is lower and the clock higher. The factor is never below
    ``1 / max_clock_ratio``: no kernel runs faster than at ``f_max`` against a calibration at the reference clock.
    Returns the factors and the whole phase's :class:`Sustained`."""
    c = cal if cal is not None else gpu_power(gpu)
    if idle_s < 0:
        raise ValueError(f"idle seconds must be >= 0, got {idle_s}")
    whole = Phase(flops=sum(k.flops for k in kernels), dram_bytes=sum(k.dram_bytes for k in kernels),
                  t_compute=sum(k.t_compute for k in kernels), t_other=sum(k.t_other for k in kernels) + idle_s)
    step = sustained_clock(gpu, whole, limit_w, cal=c)
    xs = list(alone) if alone is not None else [sustained_clock(gpu, k, limit_w, cal=c).clock_frac for k in kernels]
    if len(xs) != len(kernels):
        raise ValueError(f"{len(xs)} clocks alone for {len(kernels)} kernels")
    floor = 1.0 / c.max_clock_ratio
    return [max(floor, x / step.clock_frac) for x in xs], step
