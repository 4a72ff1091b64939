"""Efficiency constants of the kernel model, one TOML file per GPU architecture family.

``hwmodels/calibration/<family>.toml`` holds a ``[source]`` table (what data the constants were
fitted on, and how) and a ``[kernels]`` table with the keys of :class:`Calibration`, units in the
names. The constants are fractions of a spec's peaks, fixed latencies and tile shapes: a family's
file carries the model to every GPU of that family through the GPU's own spec (SM count, peaks,
bandwidth, L2 size), never through a table of measured times.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.errors import ConfigError
from workloads.specfile import get_number, read_toml, reject_unknown


@dataclass(frozen=True)
class Calibration:
    """Per-family constants (SI inside: seconds, fractions)."""

    family: str
    # launches
    launch_s: float            # device time of one kernel beyond its work (launch, ramp, tail), CUDA-event timed
    mem_latency_s: float       # one dependent global-memory access of a thread (a serial loop's step)
    threads_per_sm: int        # resident threads per SM (GA100/GH100/GB100 2048; GA10x/AD10x 1536)
    # GEMM
    gemm_peak_eff: float       # fraction of dense tensor peak a large tile sustains
    gemm_l2_bytes_per_clk_sm: float  # operand bandwidth L2 -> one SM (bytes per SM clock)
    gemm_tile_s: float         # fixed latency per CTA round (pipeline fill, epilogue), beyond their bytes
    smem_per_sm_kib: float     # shared memory per SM usable by CTAs (GA100 164, GA10x/AD10x 100, GH100/GB100 228)
    gemm_overlap_loss: float   # share of the shorter of compute and memory a GEMM mainloop fails to hide
    # memory
    mem_eff: float             # fraction of DRAM bandwidth a streaming kernel sustains
    sm_bw_share: float         # one busy SM draws at most this multiple of bandwidth / sm_count
    l2_bw_mult: float          # bandwidth of L2-resident traffic as a multiple of DRAM bandwidth
    # attention
    attn_peak_eff: float       # fraction of the per-SM tensor peak a FlashAttention tile sustains
    attn_cta_s: float          # fixed time of one live attention CTA (load Q, write O, latency chain)
    attn_empty_cta_s: float    # time of a CTA of a varlen grid that has no rows and exits
    attn_block_m: int          # FlashAttention query tile (rows)
    attn_block_n: int          # FlashAttention key tile
    # communication
    comm_eff: float            # fraction of the link bandwidth a ring all-reduce reaches (bus bandwidth)
    comm_step_s: float         # latency of one ring step
    source: str = ""
    gemm_stream_k: bool = False  # GEMM work spread evenly over the SMs (persistent stream-K kernels: no partial waves)


_KEYS = {f.name for f in dataclasses.fields(Calibration)} - {"family", "source", "gemm_stream_k"}
_INT_KEYS = {"attn_block_m", "attn_block_n", "threads_per_sm"}


def _calibration_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "calibration"))


def parse_calibration(data: dict[str, Any], *, file: str, family: str) -> Calibration:
    # [attention] and [attention_<kernel>]: attention_calibration.py (imported here, not at the top: it
    # imports this module)
    from hwmodels.kernels.attention_calibration import KERNEL_TABLES

    # [power]: hwmodels/power.py (its own parser; optional)
    reject_unknown(data, {"source", "kernels", "attention", "power", *KERNEL_TABLES}, file=file)
    k = data.get("kernels")
    if not isinstance(k, dict):
        raise ConfigError("missing required table", file=file, field="[kernels]")
    reject_unknown(k, {*_KEYS, "gemm_stream_k"}, file=file, section="kernels")
    src = data.get("source", {})
    values: dict[str, Any] = {}
    for key in sorted(_KEYS):
        values[key] = get_number(k, key, file=file, section="kernels", allow_zero=True,
                                 integer=key in _INT_KEYS)
    stream_k = k.get("gemm_stream_k", False)
    if not isinstance(stream_k, bool):
        raise ConfigError("must be true or false", file=file, field="kernels.gemm_stream_k", value=stream_k)
    return Calibration(family=family, source=str(src.get("fitted_on", "")) if isinstance(src, dict) else "",
                       gemm_stream_k=stream_k, **values)


def family_file(family: str) -> Path:
    """``hwmodels/calibration/<family>.toml``; an unknown family is a ``ConfigError`` naming the known ones."""
    path = _calibration_dir() / f"{family}.toml"
    if not path.exists():
        known = sorted(p.stem for p in _calibration_dir().glob("*.toml"))
        raise ConfigError(f"no kernel calibration for family {family!r}; known: {', '.join(known)}",
                          field="architecture", value=family)
    return path


@functools.cache
def load_calibration(family: str) -> Calibration:
    """The calibration of an architecture family (``ampere``, ``ada``, ``hopper``, ``blackwell``)."""
    path = family_file(family)
    return parse_calibration(read_toml(path), file=str(path), family=family)
