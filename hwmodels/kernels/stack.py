"""Software stack profiles: how one framework implements each op kind, separate from the silicon.

The same GPU runs the same layer at different speeds under different software: a tuned
``torch.matmul`` reaches ~82 % of the A100's tensor peak where the Vidur profiler's linear layers reach
~72 %; vLLM's RMSNorm kernel of the Vidur era moves ~640 GB/s where a torch residual add moves
~1.8 TB/s; eager HuggingFace runs a norm as 7 kernels. The architecture family's constants
(``hwmodels/calibration/<family>.toml``) describe the silicon and a tuned library on it; a stack
profile (``hwmodels/stacks/<stack>.toml``) describes the software relative to those, so a profile
fitted on one GPU carries to another through that GPU's spec and family constants.

A stack file holds ``[source]`` (what it was fitted on), ``[stack]`` (GEMM efficiency relative to
the family's tuned-library figure, bandwidth of GEMM operand streaming relative to the family's
streaming figure, host overhead of a wall-clock-timed call, the embedding gather, and optionally
``attention_kernel``: the fused attention kernel the stack runs where it is not the one the family's
``[attention]`` table describes, either one name for every family (``"fa2"``) or a table per family
(``{ hopper = "cudnn" }``: PyTorch's default SDPA dispatch differs between GPU generations; a family not
named runs its own) and one table
per memory-bound op kind (``[norm]``, ``[rope]``, ``[activation]``, ``[add]``, ``[elementwise]``)
with the kernel's launch geometry:

``geometry = "row"``   one CTA per token (vLLM/Vidur norm, rope, activation kernels): the CTA has
                       ``min(width / vec, block_threads)`` threads that loop over the row, so a few
                       tokens take ``passes x ceil(width / (threads x vec))`` dependent memory
                       latencies; many tokens run in rounds of co-resident CTAs, each round paying
                       those latencies plus its bytes through the SM's bandwidth share.
``geometry = "grid"``  a grid-stride vectorised kernel (torch elementwise): one latency, then bandwidth.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.errors import ConfigError
from workloads.ops import OpKind
from workloads.specfile import get_number, get_str, read_toml, reject_unknown


class Geometry(enum.Enum):
    ROW = "row"
    GRID = "grid"


@dataclass(frozen=True)
class KernelImpl:
    """How a stack implements one memory-bound op kind."""

    geometry: Geometry = Geometry.GRID
    kernels: int = 1          # launches per op
    block_threads: int = 1024  # most threads of a per-row CTA
    vec: int = 1              # elements per thread access
    passes: float = 1.0       # dependent memory latencies per loop iteration (a norm's two passes: ~2)
    bw_eff: float = 1.0       # fraction of the family's streaming bandwidth reached with the GPU full
    # bytes each SM's loads and stores move per clock when the kernel is bound by its own issue rate (strided,
    # unvectorised eager kernels), not by DRAM: its rate is then min(bw_eff x the DRAM rate, SMs x clock x
    # this), the same on GPUs of one SM design whatever their memory (0: DRAM-bound, bw_eff alone)
    sm_bytes_per_clk: float = 0.0


@dataclass(frozen=True)
class Stack:
    """A software stack's profile (SI inside)."""

    name: str
    gemm_eff: float = 1.0        # GEMM tensor throughput relative to the family's tuned library
    gemm_bw_eff: float = 1.0     # GEMM operand streaming relative to the family's streaming bandwidth
    host_overhead_s: float = 0.0  # per call, when timed by host wall clock around a synchronised call
    gather_small_max: int = 16   # index_select: at most this many indices take the serial small-index kernel
    gather_index_latencies: float = 2.0  # small-index kernel: memory latencies per index (serial loop)
    gather_elems_per_sm_cycle: float = 1.0  # large-index kernel: elements per SM per clock cycle
    # CUDA-event time of one isolated SDPA call beyond its kernels' device time (the attention constants
    # are kernel device time, as the profiler measures it): added for a stack whose files time each call
    # between two CUDA events; attention_gap_s more when the call launches a second kernel (split-KV combine)
    attention_event_s: float = 0.0
    attention_gap_s: float = 0.0
    # memory-bound kernels read a working set that fits in L2 at the family's l2_bw_mult x the DRAM rate;
    # False: at the DRAM rate wherever their bytes sit (eager kernels whose rate the kernel sets, not the data)
    l2_credit: bool = True
    attention_kernel: str | None = None  # attention kernel the stack runs on every family (None: the family's own)
    # per family, where it differs by GPU generation: ((family, kernel), ...); wins over attention_kernel
    attention_kernel_by_family: tuple[tuple[str, str], ...] = ()
    ops: dict[OpKind, KernelImpl] = field(default_factory=dict)
    source: str = ""

    def impl(self, kind: OpKind) -> KernelImpl:
        return self.ops.get(kind, self.ops.get(OpKind.ELEMENTWISE, KernelImpl()))

    def attention_kernel_for(self, family: str) -> str | None:
        """The attention kernel this stack runs on an architecture family (None: the family's own)."""
        return dict(self.attention_kernel_by_family).get(family, self.attention_kernel)


STACK_KEYS = ("gemm_eff", "gemm_bw_eff", "host_overhead_s", "gather_small_max", "gather_index_latencies",
              "gather_elems_per_sm_cycle")
# [stack] keys a base stack may leave out (their default)
OPTIONAL_KEYS = {"attention_event_s": 0.0, "attention_gap_s": 0.0}
OP_TABLES = {"norm": OpKind.NORM, "rope": OpKind.ROPE, "activation": OpKind.ACTIVATION, "add": OpKind.ADD,
             "elementwise": OpKind.ELEMENTWISE}
ATTENTION_KERNELS = ("fa2", "fa3", "cudnn")  # attention_calibration.AttnKernel's values (a test checks)
IMPL_KEYS = ("geometry", "kernels", "block_threads", "vec", "passes", "bw_eff", "sm_bytes_per_clk")
OPTIONAL_IMPL_KEYS = {"sm_bytes_per_clk": 0.0}
_INT_KEYS = {"gather_small_max", "kernels", "block_threads", "vec"}


def _stacks_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "stacks"))


def list_stacks() -> list[str]:
    return sorted(p.stem for p in _stacks_dir().glob("*.toml"))


def _parse_impls(data: dict[str, Any], file: str) -> dict[OpKind, KernelImpl]:
    ops: dict[OpKind, KernelImpl] = {}
    for table, kind in OP_TABLES.items():
        t = data.get(table)
        if t is None:
            continue
        if not isinstance(t, dict):
            raise ConfigError("must be a table", file=file, field=f"[{table}]")
        reject_unknown(t, IMPL_KEYS, file=file, section=table)
        geo = get_str(t, "geometry", file=file, section=table)
        try:
            geometry = Geometry(geo)
        except ValueError:
            raise ConfigError(f"unknown geometry {geo!r}; known: row, grid", file=file,
                              field=f"{table}.geometry", value=geo) from None
        vals = {k: get_number(t, k, file=file, section=table, integer=k in _INT_KEYS)
                for k in IMPL_KEYS if k != "geometry" and k not in OPTIONAL_IMPL_KEYS}
        vals.update({k: get_number(t, k, file=file, section=table, default=d)
                     for k, d in OPTIONAL_IMPL_KEYS.items() if k in t})
        ops[kind] = KernelImpl(geometry, **vals)
    return ops


def _attention_kernel(s: dict[str, Any], file: str) -> dict[str, Any]:
    """``attention_kernel`` = a kernel name, or a table {family: kernel name}."""
    v = s.get("attention_kernel")
    if isinstance(v, dict):
        by_family = tuple((fam, str(get_str(v, fam, file=file, section="stack.attention_kernel",
                                            choices=ATTENTION_KERNELS))) for fam in sorted(v))
        return {"attention_kernel": None, "attention_kernel_by_family": by_family}
    return {"attention_kernel": get_str(s, "attention_kernel", file=file, section="stack", default=None,
                                        choices=ATTENTION_KERNELS), "attention_kernel_by_family": ()}


def parse_stack(data: dict[str, Any], *, file: str, name: str) -> Stack:
    """A stack from its TOML. ``extends = "<stack>"`` starts from that stack: the file then gives only
    what differs (any ``[stack]`` key, any op table)."""
    reject_unknown(data, {"source", "stack", "extends", *OP_TABLES}, file=file)
    parent = get_str(data, "extends", file=file, default=None)
    s = data.get("stack", {} if parent is not None else None)
    if not isinstance(s, dict):
        raise ConfigError("missing required table", file=file, field="[stack]")
    reject_unknown(s, (*STACK_KEYS, *OPTIONAL_KEYS, "attention_kernel", "l2_credit"), file=file, section="stack")
    vals: dict[str, Any] = {k: get_number(s, k, file=file, section="stack", allow_zero=True,
                                          integer=k in _INT_KEYS) for k in STACK_KEYS
                            if parent is None or k in s}
    vals.update({k: float(get_number(s, k, file=file, section="stack", allow_zero=True, default=d))
                 for k, d in OPTIONAL_KEYS.items() if parent is None or k in s})
    if parent is None or "attention_kernel" in s:
        vals.update(_attention_kernel(s, file))
    if "l2_credit" in s:
        if not isinstance(s["l2_credit"], bool):
            raise ConfigError("must be true or false", file=file, field="stack.l2_credit", value=s["l2_credit"])
        vals["l2_credit"] = s["l2_credit"]
    ops = _parse_impls(data, file)
    src = data.get("source", {})
    source = str(src.get("fitted_on", "")) if isinstance(src, dict) else ""
    if parent is not None:
        if parent == name:
            raise ConfigError("a stack cannot extend itself", file=file, field="extends", value=parent)
        base = load_stack(parent)
        return dataclasses.replace(base, name=name, ops={**base.ops, **ops}, source=source, **vals)
    return Stack(name=name, ops=ops, source=source, **vals)


@functools.cache
def load_stack(name: str) -> Stack:
    """A stack profile by name (``vllm``, ``vidur``, ``hf-eager``, ``cublas``) or TOML path."""
    path = Path(name) if name.endswith(".toml") else _stacks_dir() / f"{name}.toml"
    if not path.exists():
        raise ConfigError(f"no software stack profile {name!r}; known: {', '.join(list_stacks())}",
                          field="stack", value=name)
    return parse_stack(read_toml(path), file=str(path), name=path.stem)
