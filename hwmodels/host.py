"""The host side of eager PyTorch on a GPU: CPU-GPU co-execution of a step's aten ops.

Eager PyTorch issues one aten op at a time from Python: each op costs the host its Python code, the
dispatcher, the caching allocator and, for a kernel-launching op, ``cudaLaunchKernel``; a view or
metadata op (``view``, ``transpose``, ``slice``, ``t`` ...) costs the host less and the GPU nothing.
The GPU runs the launched kernels in order on one stream. So kernel ``i`` is issued at
``issue_i = issue_{i-1} + host_i`` and runs from ``start_i = max(issue_i, end_{i-1} + gap)`` to
``end_i = start_i + device_i``, where ``gap`` is the GPU's idle time between two queued back-to-back
kernels; the step (timed around a ``synchronize``) ends at ``max(issue_last, end_last)``. A step whose
kernels are short (a decode of a small batch) is then as long as its host's issue time; a large prefill
is as long as its kernels plus the gaps.

The host constants (:class:`HostDispatch`) are a property of the host CPU, Python and the PyTorch build,
not of the GPU: ``hwmodels/specs/host/<id>.toml``, each with what it was fitted on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from workloads.errors import ConfigError
from workloads.specfile import catalog_file, get_number, get_str, read_toml, reject_unknown


@dataclass(frozen=True)
class HostDispatch:
    """Per-op host cost of eager PyTorch on one host (SI inside)."""

    id: str
    launch_s: float  # host time of one kernel-launching aten op (Python, dispatch, allocator, launch)
    view_s: float  # host time of one view / metadata aten op (no kernel)
    kernel_gap_s: float  # GPU idle time between two back-to-back queued kernels
    description: str = ""
    source: str = ""


def _specs_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "specs" / "host"))


def list_hosts() -> list[str]:
    return sorted(p.stem for p in _specs_dir().glob("*.toml"))


def parse_host(data: dict[str, object], *, file: str, name: str) -> HostDispatch:
    reject_unknown(data, {"id", "description", "source", "dispatch"}, file=file)
    d = data.get("dispatch")
    if not isinstance(d, dict):
        raise ConfigError("missing required table", file=file, field="[dispatch]")
    keys = ("launch_us", "view_us", "kernel_gap_us")
    reject_unknown(d, keys, file=file, section="dispatch")
    vals = {k: float(get_number(d, k, file=file, section="dispatch", allow_zero=True)) * 1e-6 for k in keys}
    src = data.get("source", {})
    source = str(src.get("fitted_on", "")) if isinstance(src, dict) else ""
    return HostDispatch(get_str(data, "id", file=file, default=name) or name, vals["launch_us"], vals["view_us"],
                        vals["kernel_gap_us"], get_str(data, "description", file=file, default="") or "", source)


@functools.cache
def load_host(name: str) -> HostDispatch:
    """A host dispatch profile by id (``hwmodels/specs/host/<id>.toml``) or TOML path."""
    path, key = catalog_file(name, _specs_dir(), list_hosts(), kind="host dispatch profile", field="host")
    return parse_host(read_toml(path), file=str(path), name=key)


def co_execute(ops: Iterable[tuple[float, float]], gap_s: float) -> tuple[float, float, float]:
    """``(step, host, device)`` seconds of ops given as ``(host_s, device_s)`` in issue order (``device_s``
    0: no kernel): the step's end (module docstring), the host's issue time, the GPU's busy time."""
    issue = busy = 0.0
    end = -gap_s  # no gap before the first kernel
    for host_s, device_s in ops:
        issue += host_s
        if device_s > 0:
            end = max(issue, end + gap_s) + device_s
            busy += device_s
    return max(issue, end), issue, busy


def step_time(host: HostDispatch, launches: Sequence[bool], device_s: Sequence[float]) -> float:
    """Seconds of one eager step: op ``i`` launches a kernel of ``device_s[i]`` seconds where
    ``launches[i]``, else it is a view / metadata op."""
    return co_execute(((host.launch_s if k else host.view_s, d if k else 0.0) for k, d in zip(launches, device_s)),
                      host.kernel_gap_s)[0]


def fit_scale(target_s: float, time_at: Callable[[float], float], lo: float = 0.0, hi: float = 1e-3) -> float:
    """The value ``x`` in ``[lo, hi]`` at which the non-decreasing ``time_at(x)`` equals ``target_s``
    (bisection to 1 ns); ``lo`` or ``hi`` where the target lies outside."""
    if time_at(lo) >= target_s:
        return lo
    if time_at(hi) <= target_s:
        return hi
    while hi - lo > 1e-9:
        mid = 0.5 * (lo + hi)
        if time_at(mid) < target_s:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
