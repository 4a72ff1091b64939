"""Attention constants of one architecture family: the ``[attention]`` table of
``hwmodels/calibration/<family>.toml``.

They describe the silicon running a FlashAttention-style kernel, not one GPU's measured times: the
fraction of the per-SM tensor peak a tile sustains, fixed latencies per CTA and per KV tile, the
DRAM fraction an attention kernel streams at, and the L2 a benchmark loop keeps resident. Every GPU
of the family gets its own SM count, peaks, bandwidth and L2 from its spec. ``fitted_on`` says where
the numbers come from (``benchmarks/fit_attention.py`` for the families with shared measurements,
published figures for the others).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from hwmodels.kernels.calibration import family_file
from workloads.errors import ConfigError
from workloads.specfile import get_number, get_str, read_toml


class AttnKernel(enum.Enum):
    """Which fused attention kernel runs: a FlashAttention generation (vLLM's FlashAttention backend,
    PyTorch's SDPA flash backend) or cuDNN's fused flash-attention (PyTorch's SDPA cuDNN backend)."""

    FA2 = "fa2"  # Ampere/Ada: mma.sync tiles, one query tile per CTA, split-KV kernel for paged KV
    FA3 = "fa3"  # Hopper and later: warpgroup MMA, bigger tiles, its own split heuristic
    CUDNN = "cudnn"  # cuDNN's SDPA (fprop) kernels: what PyTorch >= 2.5 dispatches to first on Hopper


@dataclass(frozen=True)
class AttentionCalibration:
    """Per-family attention constants (SI inside)."""

    family: str
    kernel: AttnKernel
    tile_eff: float      # fraction of the per-SM dense tensor peak on a tile's padded FLOPs
    cta_s: float         # fixed time of a live CTA (load Q, init, rescale and write O)
    block_s: float       # per-KV-tile time not hidden behind the MMAs (page gather, barriers)
    empty_cta_s: float   # a varlen-grid CTA with no query rows: launch and exit
    launch_s: float      # device time of the launch beyond the CTAs' work
    combine_s: float     # the split-KV combine kernel (its launch and reduction)
    dram_eff: float      # fraction of spec DRAM bandwidth the K/V stream reaches
    l2_reuse: float      # a re-read working set hits L2 by 1 - set / (l2_reuse x L2) (0 when negative)
    l2_bw_mult: float    # L2-resident traffic rate as a multiple of the DRAM rate
    overlap_p: float     # tile work and memory time combine as a p-norm: 1 adds them, large takes the max
    prefill_extra_s: float = 0.0  # a prefill call's further fixed device time (cuDNN: a Memset before the fprop)
    decode_cta_bw: float = 0.0  # bytes/s one decode CTA streams its K/V tiles at (its loads in flight); 0: no bound
    source: str = ""


_NUM_KEYS = ("tile_eff", "cta_s", "block_s", "empty_cta_s", "launch_s", "combine_s", "dram_eff",
             "l2_reuse", "l2_bw_mult", "overlap_p")
_OPTIONAL_NUM_KEYS = ("prefill_extra_s", "decode_cta_bw")   # 0 when absent
KEYS = frozenset(_NUM_KEYS) | frozenset(_OPTIONAL_NUM_KEYS) | {"kernel", "fitted_on"}


class CalibrationValues(TypedDict, total=False):
    """Some of the numeric constants of :class:`AttentionCalibration` (keyword arguments of :func:`with_values`)."""

    tile_eff: float
    cta_s: float
    block_s: float
    empty_cta_s: float
    launch_s: float
    combine_s: float
    dram_eff: float
    l2_reuse: float
    l2_bw_mult: float
    overlap_p: float
    prefill_extra_s: float
    decode_cta_bw: float


def parse_attention(data: dict[str, Any], *, file: str, family: str, table: str = "attention") -> AttentionCalibration:
    t = data.get(table)
    if not isinstance(t, dict):
        raise ConfigError("missing required table", file=file, field=f"[{table}]")
    from workloads.specfile import reject_unknown
    reject_unknown(t, KEYS, file=file, section=table)
    kern = get_str(t, "kernel", file=file, section=table, choices=[k.value for k in AttnKernel])
    vals = {k: float(get_number(t, k, file=file, section=table, allow_zero=True)) for k in _NUM_KEYS}
    vals.update({k: float(get_number(t, k, file=file, section=table, allow_zero=True, default=0.0))
                 for k in _OPTIONAL_NUM_KEYS})
    if vals["overlap_p"] < 1.0:
        raise ConfigError("must be >= 1 (1: memory and tile work add)", file=file, field=f"{table}.overlap_p",
                          value=vals["overlap_p"])
    for k in ("tile_eff", "dram_eff"):
        if vals[k] > 1.0:
            raise ConfigError("must be a fraction <= 1", file=file, field=f"{table}.{k}", value=vals[k])
    return AttentionCalibration(family=family, kernel=AttnKernel(kern),
                                source=str(t.get("fitted_on", "")), **vals)


KERNEL_TABLES = tuple(f"attention_{k.value}" for k in AttnKernel)  # another generation's constants


@functools.cache
def load_attention_calibration(family: str, kernel: str | None = None) -> AttentionCalibration:
    """The ``[attention]`` constants of an architecture family: those of the kernel generation its
    default software runs (``[attention] kernel``), or, when a software stack selects another
    generation (``kernel``, e.g. PyTorch's SDPA flash backend runs FlashAttention-2 on Hopper), the
    family's ``[attention_<kernel>]`` table."""
    path = family_file(family)
    data = read_toml(path)
    default = parse_attention(data, file=str(path), family=family)
    if kernel is None or kernel == default.kernel.value:
        return default
    table = f"attention_{kernel}"
    if table not in KERNEL_TABLES:
        raise ConfigError(f"unknown attention kernel {kernel!r}; known: {', '.join(k.value for k in AttnKernel)}",
                          field="attention_kernel", value=kernel)
    if table not in data:
        raise ConfigError(f"family {family!r} has no constants for {kernel} attention kernels",
                          file=str(path), field=f"[{table}]")
    a = parse_attention(data, file=str(path), family=family, table=table)
    if a.kernel.value != kernel:
        raise ConfigError(f"must be {kernel!r} in [{table}]", file=str(path), field=f"{table}.kernel",
                          value=a.kernel.value)
    return a


def with_values(cal: AttentionCalibration, **values: Unpack[CalibrationValues]) -> AttentionCalibration:
    """A copy with some constants replaced (the fit script's trial points)."""
    return dataclasses.replace(cal, **values)
