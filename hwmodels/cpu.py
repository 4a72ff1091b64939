"""Host CPU model: how long one traced aten op takes on a CPU running eager PyTorch, alone or in a step.

A CPU is described by one TOML file in ``hwmodels/specs/cpu/`` (units in the keys, SI at load):

```
[cpu]
name = "AMD EPYC (Zen 3), 2 vCPUs under KVM"
cores = 2
simd_width_bits = 256            # AVX2
fma_units_per_core = 2           # FMA pipes per core
clock_ghz = 2.445
memory_bandwidth_gb_per_s = 10.6 # one core streaming from DRAM (measured)
llc_bandwidth_gb_per_s = 38.8    # one core streaming from the last-level cache (measured)
llc_mib = 32
l2_kib = 512                     # per core: code older than this much traffic is cold
page_fault_gb_per_s = 1.2        # first touch of a freshly mmapped output (measured)
mmap_threshold_mib = 32          # glibc malloc: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
gemm_m_half = 37                 # GEMM efficiency ramp m / (m + 37) (fitted) ...
gemm_min_ramp = 0.09             # ... never below this
gemm_gemv_max_m = 4              # MKL runs a GEMM of at most this many rows as one GEMV per row
flush_overhead_us = 21           # the op after one that moved more than half the LLC (fitted in a model)
[efficiency]                     # fraction of the peak each aten op class reaches (fitted, hot loops)
gemm_compute = 0.76
...
[overhead_us]                    # per aten op in a hot loop: dispatch + allocation (fitted)
gemm = 0.05
...
[cold_overhead_us]               # per aten op whose code is cold (fitted in a model)
reduction = 84
...
[in_model_overhead_us]           # per (aten op, [op kind,] code state), in place of the two above (fitted in a model)
"aten::cat cold" = 37.8
"aten::mul rope cold" = 7.2      # an op kind's entry wins over its aten op's
...
```

Per op (:class:`workloads.pytorch.tracer.TracedOp`), with ``c = min(threads, cores)`` cores:

    time = overhead[class] + cold + max(flops / (peak_flops(c) * eff[class_compute]), memory) + faults

``peak_flops(c) = c * fma_units * (simd_width / 32) * 2 * clock`` (fp32 lanes: eager PyTorch computes
bf16/fp16 in fp32 registers on CPUs without native bf16 arithmetic). GEMM efficiency ramps with the row
count, ``max(m / (m + gemm_m_half), gemm_min_ramp)``; a GEMM of at most ``gemm_gemv_max_m`` rows is
one memory-bound GEMV per row instead, each streaming the weight again (MKL sgemm on this VM: m = 1, 2, 4
take 1 : 2.1 : 4.0 the time of m = 1 over the same 128 MiB weight, m = 8 barely more than m = 4), from
the LLC if the weight fits in half of it, else from DRAM. Transcendental elementwise ops (silu, exp, cos ...)
are bound by their element rate wherever their data are. Outputs of at least ``mmap_threshold`` bytes
are fresh ``mmap``s (PyTorch's CPU allocator does not cache; glibc maps large blocks), and their first
touch costs page faults at ``page_fault_gb_per_s``. Views cost ``overhead.view`` only.

Where the data and the code are (:class:`Reuse`, :func:`step_reuse`) decides ``memory`` and ``cold``:

- ``cost(op)`` alone is the op in a hot loop, how the per-class constants were measured: its bytes at
  the LLC's rate if they fit in half the LLC, else at DRAM's, and no cold term;
- in a step (``step_costs(ops)``, the step run in a loop), an input last touched more than half the LLC
  of traffic ago is read at DRAM's rate (weights and the KV cache always are on a model larger than
  the LLC: they were last touched a step ago), every written byte is written back to DRAM (the
  weights' stream evicts it before its next use), an op whose aten code last ran more than the L2's
  size of traffic ago pays ``cold_overhead[class]``, and the op after one that moved more than half
  the LLC pays ``flush_overhead`` (the dispatcher's and allocator's code and data, shared by all ops,
  were evicted); where ``in_model_overhead`` has the op's (aten op, op kind, :func:`code_state`) or
  (aten op, state) figure (:meth:`CPUSpec.in_model`), that replaces both (the ops of a class differ: a cold
  ``cat`` 38 us, a cold ``copy_`` 12; one aten op in different roles too: a cold ``mul`` 4 us in the norm,
  11 in the MLP).

What limits it: one overhead per (aten op, op kind, state) whatever the op's size, the
measurements' noise on a shared machine (the same op's in-model time moves by 20-50 % between runs),
no model of strided inputs or of glibc's heap trimming, one thread, and the constants are this
machine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.errors import ConfigError
from workloads.ops import Gemm, OpKind
from workloads.pytorch.tracer import AtenClass, TracedOp
from workloads.specfile import catalog_file, get_number, get_str, read_toml, reject_unknown

MIB = 1024**2
# transcendental elementwise ops (exp inside) run at their own, much lower, element rate
TRANSCENDENTAL = {"silu", "gelu", "sigmoid", "tanh", "exp", "cos", "sin", "erf", "log", "softplus", "rsqrt",
                  "silu_backward", "gelu_backward", "sigmoid_backward", "tanh_backward"}
CLASSES = tuple(c.value for c in AtenClass if c is not AtenClass.VIEW) + ("transcendental",)
_CPU_KEYS = {"name", "cores", "simd_width_bits", "fma_units_per_core", "clock_ghz", "memory_bandwidth_gb_per_s",
             "llc_bandwidth_gb_per_s", "llc_mib", "l2_kib", "page_fault_gb_per_s", "mmap_threshold_mib",
             "gemm_m_half", "gemm_min_ramp", "gemm_gemv_max_m", "flush_overhead_us", "source"}
_EFF_KEYS = {f"{c}_{w}" for c in CLASSES for w in ("compute", "memory")}
_OVH_KEYS = set(CLASSES) | {"view"}
_COLD_KEYS = set(CLASSES)
OP_KINDS = {k.value for k in OpKind}  # the op kinds an in-model overhead may be keyed by


@dataclass(frozen=True)
class CPUSpec:
    """One host CPU, SI units. ``efficiency``, ``overhead_s`` and ``cold_overhead_s`` are keyed by aten class."""

    id: str
    name: str
    cores: int
    simd_width_bits: int
    fma_units_per_core: int
    clock_hz: float
    memory_bandwidth: float  # bytes/s per core, DRAM (the fastest one-thread stream measured)
    llc_bandwidth: float  # bytes/s per core, last-level cache
    llc_bytes: float
    page_fault_bandwidth: float  # bytes/s of first-touch page faults on a freshly mmapped output
    mmap_threshold: float  # outputs at least this large are fresh mmaps (glibc's largest dynamic threshold)
    gemm_m_half: float  # GEMM compute efficiency ramps as m / (m + gemm_m_half) (small-m kernel paths)
    efficiency: dict[str, float]
    overhead_s: dict[str, float]
    l2_bytes: float = 0.0  # per-core L2: an op whose code ran more than this many bytes ago runs cold
    gemm_min_ramp: float = 0.0  # floor of the GEMM ramp (MKL's GEMV-like small-m kernels)
    gemv_max_m: int = 0  # GEMMs of at most this many rows run as one GEMV per row (0: none)
    cold_overhead_s: dict[str, float] = field(default_factory=dict)  # extra per op when its code is cold
    flush_overhead_s: float = 0.0  # extra for the op after one that moved more than half the LLC
    # in a step, per (aten op, code state) or (aten op, op kind, code state): what the op takes beyond its
    # hot-loop cost, in place of the class's cold and flush overheads (state: "hot", "cold", "flush" or
    # "cold+flush"; fitted in a model). The op kind's entry, where there is one, wins (:meth:`in_model`).
    in_model_overhead_s: dict[tuple[str, ...], float] = field(default_factory=dict)
    source_file: str = ""

    def peak_flops(self, cores: int) -> float:
        return cores * self.fma_units_per_core * (self.simd_width_bits / 32) * 2.0 * self.clock_hz

    def in_model(self, op: TracedOp, state: str) -> float | None:
        """The in-model overhead of ``op`` in code ``state``: its (aten op, op kind) entry, else its aten
        op's, else None (the class's cold and flush overheads apply)."""
        if op.kind is not None:
            own = self.in_model_overhead_s.get((op.aten, op.kind.value, state))
            if own is not None:
                return own
        return self.in_model_overhead_s.get((op.aten, state))

    def code_flags(self, reuse: Reuse) -> tuple[bool, bool]:
        """(code cold, after a flush) of an op placed by ``reuse``: its aten code last ran more than the L2's
        size of traffic ago; the op before it moved more than half the LLC."""
        return self.l2_bytes > 0 and reuse.code > self.l2_bytes, reuse.after > self.llc_bytes / 2


def _specs_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "specs" / "cpu"))


def list_cpus() -> list[str]:
    return sorted(p.stem for p in _specs_dir().glob("*.toml"))


def parse_cpu(data: dict, *, file: str, cpu_id: str) -> CPUSpec:
    reject_unknown(data, {"cpu", "efficiency", "overhead_us", "cold_overhead_us", "in_model_overhead_us"}, file=file)
    for section in ("cpu", "efficiency", "overhead_us"):
        if not isinstance(data.get(section), dict):
            raise ConfigError("missing required table", file=file, field=f"[{section}]")
    c, eff, ovh = data["cpu"], data["efficiency"], data["overhead_us"]
    reject_unknown(c, _CPU_KEYS, file=file, section="cpu")
    reject_unknown(eff, _EFF_KEYS, file=file, section="efficiency")
    reject_unknown(ovh, _OVH_KEYS, file=file, section="overhead_us")
    cold = data.get("cold_overhead_us", {})
    if not isinstance(cold, dict):
        raise ConfigError("must be a table", file=file, field="[cold_overhead_us]")
    reject_unknown(cold, _COLD_KEYS, file=file, section="cold_overhead_us")

    in_model = data.get("in_model_overhead_us", {})
    if not isinstance(in_model, dict):
        raise ConfigError("must be a table", file=file, field="[in_model_overhead_us]")
    in_model_s: dict[tuple[str, ...], float] = {}
    for key in in_model:
        parts = str(key).split(" ")
        ok = (len(parts) in (2, 3) and parts[0].startswith("aten::") and parts[-1] in CODE_STATES
              and (len(parts) == 2 or parts[1] in OP_KINDS))
        if not ok:
            raise ConfigError(f"keys are '<aten op> [<op kind>] <state>', state one of {', '.join(CODE_STATES)}, "
                              f"op kind one of {', '.join(sorted(OP_KINDS))}, e.g. 'aten::mul cold' or "
                              f"'aten::mul rope cold'; got {key!r}", file=file, field=f"in_model_overhead_us.{key}",
                              value=key)
        in_model_s[tuple(parts)] = get_number(in_model, key, file=file, section="in_model_overhead_us",
                                              allow_zero=True) * 1e-6

    def num(key: str, **kw):  # type: ignore[no-untyped-def]
        return get_number(c, key, file=file, section="cpu", **kw)

    efficiency = {}
    for key in sorted(_EFF_KEYS):
        v = get_number(eff, key, file=file, section="efficiency", default=1.0)
        if v > 1.0:
            raise ConfigError(f"an efficiency is a fraction of the peak, got {v}", file=file,
                              field=f"efficiency.{key}", value=v)
        efficiency[key] = v
    overhead = {k: get_number(ovh, k, file=file, section="overhead_us", default=0.0, allow_zero=True) * 1e-6
                for k in sorted(_OVH_KEYS)}
    cold_s = {k: get_number(cold, k, file=file, section="cold_overhead_us", default=0.0, allow_zero=True) * 1e-6
              for k in sorted(_COLD_KEYS)}
    return CPUSpec(
        id=cpu_id, name=get_str(c, "name", file=file, section="cpu"),
        cores=num("cores", integer=True), simd_width_bits=num("simd_width_bits", integer=True),
        fma_units_per_core=num("fma_units_per_core", integer=True), clock_hz=num("clock_ghz") * 1e9,
        memory_bandwidth=num("memory_bandwidth_gb_per_s") * 1e9,
        llc_bandwidth=num("llc_bandwidth_gb_per_s") * 1e9, llc_bytes=num("llc_mib") * MIB,
        page_fault_bandwidth=num("page_fault_gb_per_s") * 1e9, mmap_threshold=num("mmap_threshold_mib") * MIB,
        gemm_m_half=num("gemm_m_half", allow_zero=True), l2_bytes=num("l2_kib", default=0, allow_zero=True) * 1024,
        gemm_min_ramp=num("gemm_min_ramp", default=0, allow_zero=True),
        gemv_max_m=num("gemm_gemv_max_m", default=0, allow_zero=True, integer=True),
        flush_overhead_s=num("flush_overhead_us", default=0, allow_zero=True) * 1e-6,
        efficiency=efficiency, overhead_s=overhead, cold_overhead_s=cold_s, in_model_overhead_s=in_model_s,
        source_file=file)


def spec_mismatch(spec: CPUSpec, facts: dict[str, Any]) -> list[str]:
    """How a host (``facts``: :func:`workloads.pytorch.measure.host_cpu_facts`) differs from the machine
    ``spec`` describes, in its silicon fields: one ``"field: host X, spec Y"`` per difference (none when
    the host could be the spec's machine). The measured constants are the spec's machine's; on another
    host they are not this host's."""
    fields = {"cores": spec.cores, "simd_width_bits": spec.simd_width_bits, "llc_mib": spec.llc_bytes / MIB,
              "l2_kib": spec.l2_bytes / 1024}
    out = []
    for key, want in fields.items():
        got = facts.get(key)
        if got is not None and want and abs(float(got) - float(want)) > 1e-6 * abs(float(want)):
            out.append(f"{key}: host {got:g}, spec {want:g}")
    return out


def spec_toml(spec: CPUSpec, comment: str = "", source: str = "") -> str:
    """``spec`` as the TOML text :func:`parse_cpu` reads back to an equal spec (the inverse of loading, for a
    spec measured on a new host: ``benchmarks/fit_cpu.py --spec-out``). ``comment`` lines head the file."""
    import json

    def num(v: float) -> str:  # ten significant digits: reads back within 1e-10, relatively
        return f"{float(v):.10g}"

    def key(k: str) -> str:
        return json.dumps(k) if not k.replace("_", "").isalnum() else k

    lines = [f"# {ln}" if ln else "#" for ln in comment.splitlines()]
    lines.append("[cpu]")
    cpu = {"name": json.dumps(spec.name), "cores": str(spec.cores), "simd_width_bits": str(spec.simd_width_bits),
           "fma_units_per_core": str(spec.fma_units_per_core), "clock_ghz": num(spec.clock_hz / 1e9),
           "memory_bandwidth_gb_per_s": num(spec.memory_bandwidth / 1e9),
           "llc_bandwidth_gb_per_s": num(spec.llc_bandwidth / 1e9), "llc_mib": num(spec.llc_bytes / MIB),
           "l2_kib": num(spec.l2_bytes / 1024), "page_fault_gb_per_s": num(spec.page_fault_bandwidth / 1e9),
           "mmap_threshold_mib": num(spec.mmap_threshold / MIB), "gemm_m_half": num(spec.gemm_m_half),
           "gemm_min_ramp": num(spec.gemm_min_ramp), "gemm_gemv_max_m": str(spec.gemv_max_m),
           "flush_overhead_us": num(spec.flush_overhead_s * 1e6)}
    if source:
        cpu["source"] = json.dumps(source)
    lines += [f"{k} = {v}" for k, v in cpu.items()]
    lines.append("[efficiency]")
    lines += [f"{k} = {num(v)}" for k, v in sorted(spec.efficiency.items())]
    lines.append("[overhead_us]")
    lines += [f"{k} = {num(v * 1e6)}" for k, v in sorted(spec.overhead_s.items())]
    lines.append("[cold_overhead_us]")
    lines += [f"{k} = {num(v * 1e6)}" for k, v in sorted(spec.cold_overhead_s.items())]
    lines.append("[in_model_overhead_us]")
    lines += [f"{key(' '.join(k))} = {num(v * 1e6)}" for k, v in sorted(spec.in_model_overhead_s.items())]
    return "\n".join(lines) + "\n"


def load_cpu(name_or_path: str | Path) -> CPUSpec:
    """Load a CPU by catalog id (``epyc-zen3-2c-kvm``) or from a TOML file path."""
    path, key = catalog_file(name_or_path, _specs_dir(), list_cpus(), kind="CPU", field="cpu")
    return parse_cpu(read_toml(path), file=str(path), cpu_id=key)


@dataclass(frozen=True)
class Reuse:
    """Where an op's data and code are when it starts, as reuse distances: the bytes other ops touched
    since each input was last touched (``inputs``, one per ``op.inputs``), since the same aten op last
    ran (``code``), and what the op just before it moved (``after``). ``None`` (the default of
    :meth:`CPUModel.cost`) is a hot loop of the op alone: its inputs were touched ``op.bytes`` ago and
    its code just ran."""

    inputs: tuple[float, ...]
    code: float
    after: float = 0.0


def step_reuse(ops: Sequence[TracedOp]) -> list[Reuse]:
    """Reuse distances of every op of a step that repeats (a decode loop, timed repeats).

    Bytes are counted in execution order; an op touches what it reads and writes, on average at its
    midpoint (a GEMM that streams 128 MiB of weights writes its first output rows 64 MiB, on average,
    before it ends). An input never written in the step (a weight, the KV cache of earlier tokens, the
    token ids) was last touched one step ago: at the step's total bytes; so was an input more than twice as
    large as what was touched of it since its last write (a KV cache read whole after this step wrote one
    token into it: the other tokens' lines were last touched a step ago). An op's code last ran at its previous
    occurrence, the first occurrence's at the last one of the previous step (the step wraps)."""
    costed = [o for o in ops if o.costs]
    total = float(sum(o.bytes for o in costed))
    last_pos: dict[str, float] = {}
    pos = 0.0
    for o in costed:
        pos += o.bytes
        last_pos[o.aten] = pos
    touched: dict[int, float] = {}
    span: dict[int, int] = {}   # bytes of that storage version touched since it was written
    code_at: dict[str, float] = {a: p - total for a, p in last_pos.items()}
    out: list[Reuse] = []
    pos = 0.0
    prev = float(costed[-1].bytes) if costed else 0.0
    for o in ops:
        if not o.costs:
            out.append(Reuse(tuple(0.0 for _ in o.inputs), 0.0, 0.0))
            continue
        ins = tuple(pos - touched[r.value] if r.value in touched and 2 * span[r.value] >= r.bytes else total
                    for r in o.inputs)
        out.append(Reuse(ins, pos - code_at[o.aten], prev))
        pos += o.bytes
        prev = float(o.bytes)
        code_at[o.aten] = pos
        # -1 is every tensor never written in the trace (weights, inputs): not one storage. A write starts
        # a storage version with the region it wrote; reads widen what is known to be fresh
        for r in o.inputs:
            if r.value >= 0:
                touched[r.value] = pos - o.bytes / 2
                span[r.value] = max(span.get(r.value, 0), r.bytes)
        for r in o.outputs:
            if r.value >= 0:
                touched[r.value] = pos - o.bytes / 2
                span[r.value] = r.bytes
    return out


class CPUModel:
    """``cost(op) -> (seconds, breakdown)`` of traced aten ops on one CPU with ``threads`` threads.

    ``cost(op)`` is the op in a hot loop (how the per-class constants were measured); ``cost(op, reuse)``
    and :meth:`step_costs` place it in a program (:func:`step_reuse`): inputs last touched more than
    half the LLC ago come from DRAM; an op whose code ran more than the L2's size ago pays its class's
    ``cold_overhead``, and the op after one that moved more than half the LLC pays ``flush_overhead``
    (the dispatcher's and allocator's code and data, shared by every op, are gone from the caches)."""

    def __init__(self, cpu: CPUSpec, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigError(f"must be >= 1, got {threads}", field="threads", value=threads)
        self.cpu = cpu
        self.cores = min(threads, cpu.cores)

    def cost(self, op: TracedOp, reuse: Reuse | None = None) -> tuple[float, dict[str, float]]:
        c = self.cpu
        cls = op_class(op)
        if cls == "view":
            v = c.overhead_s["view"]
            return v, {"overhead": v}
        ovh = c.overhead_s[cls]
        cold = 0.0
        if reuse is not None:
            is_cold, flushed = c.code_flags(reuse)
            own = c.in_model(op, code_state(is_cold, flushed))
            if own is not None:
                cold = own
            else:
                cold = (c.cold_overhead_s.get(cls, 0.0) if is_cold else 0.0) + (c.flush_overhead_s if flushed else 0.0)
        eff = c.efficiency[f"{cls}_compute"]
        memory = self._memory(op, cls, reuse)
        if isinstance(op.op, Gemm) and 0 < op.op.m <= c.gemv_max_m:
            # one GEMV per row: each row after the first streams the weight again (LLC-resident if it fits)
            weight = float(op.op.k * op.op.n * op.op.dtype.bytes)
            again = c.llc_bandwidth if weight <= c.llc_bytes / 2 else c.memory_bandwidth
            memory += (op.op.m - 1) * weight / (again * self.cores * c.efficiency[f"{cls}_memory"])
            compute = 0.0
        else:
            if isinstance(op.op, Gemm):
                m = op.op.m
                eff *= max(m / (m + c.gemm_m_half), c.gemm_min_ramp)
            compute = op.flops / (c.peak_flops(self.cores) * eff)
        fresh = sum(r.bytes for r in op.outputs if r.bytes >= c.mmap_threshold)
        if op.aten.endswith("_"):  # in-place and out= ops write into memory that exists
            fresh = 0
        faults = fresh / c.page_fault_bandwidth
        return ovh + cold + max(compute, memory) + faults, {
            "overhead": ovh, "cold": cold, "compute": compute, "memory": memory, "page_faults": faults}

    def _memory(self, op: TracedOp, cls: str, reuse: Reuse | None) -> float:
        """Seconds to move the op's bytes: each input at the LLC's or DRAM's rate by where it was left
        (all of them at DRAM's when the op's own bytes exceed half the LLC), the output likewise."""
        c = self.cpu
        half = c.llc_bytes / 2
        big = op.bytes > half
        dists = reuse.inputs if reuse is not None else tuple(float(op.bytes) for _ in op.inputs)
        in_bytes = [float(r.bytes) for r in op.inputs]
        tot = sum(in_bytes)
        if tot > 0:
            read_dram = op.bytes_read * sum(b for b, d in zip(in_bytes, dists) if big or d > half) / tot
        else:
            read_dram = op.bytes_read if big else 0.0
        # in a hot loop the dirty lines of a cache-sized output are overwritten in the cache; in a step
        # every written line is written back to DRAM before its next use (the weights' stream evicts it)
        write_bw = c.memory_bandwidth if (big or reuse is not None) else c.llc_bandwidth
        sec = (read_dram / c.memory_bandwidth + (op.bytes_read - read_dram) / c.llc_bandwidth
               + op.bytes_written / write_bw)
        if cls == "transcendental":  # element-rate bound wherever the data are: the exp, not the bytes
            return max(sec / c.efficiency["elementwise_memory"],
                       op.bytes / (c.llc_bandwidth * c.efficiency["transcendental_memory"])) / self.cores
        return sec / (self.cores * c.efficiency[f"{cls}_memory"])

    def time(self, op: TracedOp) -> float:
        return self.cost(op)[0]

    def step_costs(self, ops: Sequence[TracedOp]) -> list[float]:
        """Seconds of each op of a step run in a loop, each placed by :func:`step_reuse`."""
        return [self.cost(o, r)[0] for o, r in zip(ops, step_reuse(ops))]


CODE_STATES = ("hot", "cold", "flush", "cold+flush")


def code_state(cold: bool, flushed: bool) -> str:
    """The key of ``in_model_overhead`` for an op whose code is (not) cold and that does (not) follow a
    flush of the LLC."""
    return CODE_STATES[int(cold) + 2 * int(flushed)]


def op_class(op: TracedOp) -> str:
    """The constants' key of an op: its aten class, or ``transcendental`` for exp-like elementwise ops."""
    if op.aclass is not AtenClass.VIEW and op.aten.split("::")[-1] in TRANSCENDENTAL:
        return "transcendental"
    return op.aclass.value
