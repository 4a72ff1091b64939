"""Host CPU model: how long one traced aten op takes on a CPU running eager PyTorch.

A CPU is described by one TOML file in ``hwmodels/specs/cpu/`` (units in the keys, SI at load):

```
[cpu]
name = "AMD EPYC (Zen 3), 2 vCPUs under KVM"
cores = 2
simd_width_bits = 256            # AVX2
fma_units_per_core = 2           # FMA pipes per core
clock_ghz = 2.445
memory_bandwidth_gb_per_s = 12.4 # one core streaming from DRAM (measured)
llc_bandwidth_gb_per_s = 30.0    # one core streaming from the last-level cache (measured)
llc_mib = 32
page_fault_gb_per_s = 1.2        # first touch of a freshly mmapped output (measured)
mmap_threshold_mib = 32          # glibc malloc: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
gemm_m_half = 20                 # GEMM efficiency ramp m / (m + 20) (fitted)
[efficiency]                     # fraction of the peak each aten op class reaches (fitted)
gemm_compute = 0.7
...
[overhead_us]                    # per aten op: the framework's dispatch + allocation (fitted)
gemm = 10.0
...
```

Per op (:class:`workloads.pytorch.tracer.TracedOp`), with ``c = min(threads, cores)`` cores:

    time = overhead[class] + max(flops / (peak_flops(c) * eff[class_compute]),
                                 bytes / (bandwidth(bytes, c) * eff[class_memory]))

``peak_flops(c) = c * fma_units * (simd_width / 32) * 2 * clock`` (fp32 lanes: eager PyTorch computes
bf16/fp16 in fp32 registers on CPUs without native bf16 arithmetic); ``bandwidth`` is the LLC's when the
op's bytes fit in half the LLC, else DRAM's, times ``c`` (per-core figures: the fits ran on one core).
GEMM efficiency ramps with the row count, ``m / (m + gemm_m_half)`` (MKL's small-m paths), and a
one-row GEMM is a bandwidth-bound GEMV. Transcendental elementwise ops (silu, exp, cos ...) have their
own efficiency. Outputs of at least ``mmap_threshold`` bytes are fresh ``mmap``s (PyTorch's CPU
allocator does not cache; glibc maps large blocks), and their first touch costs page faults at
``page_fault_gb_per_s``.
Views cost ``overhead.view`` only. What limits it: no cache model beyond that size test (a chain of
ops on L2-resident tensors runs faster than it predicts), no threading model (ops below PyTorch's grain
size run on one thread), one efficiency per class whatever the shape (MKL's small-m GEMM paths differ),
and the constants are this machine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from workloads.errors import ConfigError
from workloads.ops import Gemm
from workloads.pytorch.measure import cpu_name
from workloads.pytorch.tracer import AtenClass, TracedOp
from workloads.specfile import closest, get_number, get_str, normalise_name, read_toml, reject_unknown

MIB = 1024**2
# transcendental elementwise ops (exp inside) run at their own, much lower, element rate
TRANSCENDENTAL = {"silu", "gelu", "sigmoid", "tanh", "exp", "cos", "sin", "erf", "log", "softplus", "rsqrt",
                  "silu_backward", "gelu_backward", "sigmoid_backward", "tanh_backward"}
CLASSES = tuple(c.value for c in AtenClass if c is not AtenClass.VIEW) + ("transcendental",)
_CPU_KEYS = {"name", "cores", "simd_width_bits", "fma_units_per_core", "clock_ghz", "memory_bandwidth_gb_per_s",
             "llc_bandwidth_gb_per_s", "llc_mib", "page_fault_gb_per_s", "mmap_threshold_mib", "gemm_m_half",
             "source"}
_EFF_KEYS = {f"{c}_{w}" for c in CLASSES for w in ("compute", "memory")}
_OVH_KEYS = set(CLASSES) | {"view"}


@dataclass(frozen=True)
class CPUSpec:
    """One host CPU, SI units. ``efficiency`` and ``overhead_s`` are keyed by aten class."""

    id: str
    name: str
    cores: int
    simd_width_bits: int
    fma_units_per_core: int
    clock_hz: float
    memory_bandwidth: float  # bytes/s per core, DRAM
    llc_bandwidth: float  # bytes/s per core, last-level cache
    llc_bytes: float
    page_fault_bandwidth: float  # bytes/s of first-touch page faults on a freshly mmapped output
    mmap_threshold: float  # outputs at least this large are fresh mmaps (glibc's largest dynamic threshold)
    gemm_m_half: float  # GEMM compute efficiency ramps as m / (m + gemm_m_half) (small-m kernel paths)
    efficiency: dict[str, float]
    overhead_s: dict[str, float]
    source_file: str = ""

    def peak_flops(self, cores: int) -> float:
        return cores * self.fma_units_per_core * (self.simd_width_bits / 32) * 2.0 * self.clock_hz


def _specs_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "specs" / "cpu"))


def list_cpus() -> list[str]:
    return sorted(p.stem for p in _specs_dir().glob("*.toml"))


def parse_cpu(data: dict, *, file: str, cpu_id: str) -> CPUSpec:
    reject_unknown(data, {"cpu", "efficiency", "overhead_us"}, file=file)
    for section in ("cpu", "efficiency", "overhead_us"):
        if not isinstance(data.get(section), dict):
            raise ConfigError("missing required table", file=file, field=f"[{section}]")
    c, eff, ovh = data["cpu"], data["efficiency"], data["overhead_us"]
    reject_unknown(c, _CPU_KEYS, file=file, section="cpu")
    reject_unknown(eff, _EFF_KEYS, file=file, section="efficiency")
    reject_unknown(ovh, _OVH_KEYS, file=file, section="overhead_us")

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
    return CPUSpec(
        id=cpu_id, name=get_str(c, "name", file=file, section="cpu"),
        cores=num("cores", integer=True), simd_width_bits=num("simd_width_bits", integer=True),
        fma_units_per_core=num("fma_units_per_core", integer=True), clock_hz=num("clock_ghz") * 1e9,
        memory_bandwidth=num("memory_bandwidth_gb_per_s") * 1e9,
        llc_bandwidth=num("llc_bandwidth_gb_per_s") * 1e9, llc_bytes=num("llc_mib") * MIB,
        page_fault_bandwidth=num("page_fault_gb_per_s") * 1e9, mmap_threshold=num("mmap_threshold_mib") * MIB,
        gemm_m_half=num("gemm_m_half", allow_zero=True),
        efficiency=efficiency, overhead_s=overhead, source_file=file)


def load_cpu(name_or_path: str | Path) -> CPUSpec:
    """Load a CPU by catalog id (``epyc-zen3-2c-kvm``) or from a TOML file path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError("file not found", file=str(p))
        return parse_cpu(read_toml(p), file=str(p), cpu_id=p.stem)
    key = normalise_name(str(name_or_path))
    path = _specs_dir() / f"{key}.toml"
    if not path.exists():
        known = list_cpus()
        hint = closest(key, known)
        msg = f"unknown CPU {str(name_or_path)!r}; known: {', '.join(known)}"
        if hint:
            msg += f". Did you mean '{hint}'?"
        raise ConfigError(msg, field="cpu", value=name_or_path)
    return parse_cpu(read_toml(path), file=str(path), cpu_id=key)


def host_cpu_name() -> str:
    """The host's CPU model name, for provenance."""
    return cpu_name()


class CPUModel:
    """``cost(op) -> (seconds, breakdown)`` of traced aten ops on one CPU with ``threads`` threads."""

    def __init__(self, cpu: CPUSpec, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigError(f"must be >= 1, got {threads}", field="threads", value=threads)
        self.cpu = cpu
        self.cores = min(threads, cpu.cores)

    def cost(self, op: TracedOp) -> tuple[float, dict[str, float]]:
        cls = op.aclass.value
        if op.aclass is AtenClass.VIEW:
            v = self.cpu.overhead_s["view"]
            return v, {"overhead": v}
        if op.aten.split("::")[-1] in TRANSCENDENTAL:
            cls = "transcendental"
        c = self.cpu
        ovh = c.overhead_s[cls]
        eff = c.efficiency[f"{cls}_compute"]
        m = 0
        if isinstance(op.op, Gemm):
            m = op.op.m
            eff *= m / (m + c.gemm_m_half)
        compute = op.flops / (c.peak_flops(self.cores) * eff)
        if m == 1:  # a GEMV: MKL's bandwidth-bound path
            compute = 0.0
        bw = c.llc_bandwidth if op.bytes <= c.llc_bytes / 2 else c.memory_bandwidth
        memory = op.bytes / (bw * self.cores * c.efficiency[f"{cls}_memory"])
        fresh = sum(r.bytes for r in op.outputs if r.bytes >= c.mmap_threshold)
        if op.aten.endswith("_"):  # in-place and out= ops write into memory that exists
            fresh = 0
        faults = fresh / c.page_fault_bandwidth
        return ovh + max(compute, memory) + faults, {"overhead": ovh, "compute": compute, "memory": memory,
                                                     "page_faults": faults}

    def time(self, op: TracedOp) -> float:
        return self.cost(op)[0]
