"""GPU specifications: one TOML file per device in ``hwmodels/specs/``, loaded by id or by path.

Schema (units in the key names, converted to SI once, here):

```
[gpu]
name = "NVIDIA H100 SXM5 80GB"
architecture = "hopper"            # ampere | ada | hopper | blackwell
sm_count = 132
bf16_dense_tflops = 989.4          # dense tensor-core TFLOP/s (no sparsity)
fp16_dense_tflops = 989.4
fp8_dense_tflops = 1978.9          # optional
fp32_tflops = 66.9                 # non-tensor FP32
memory_gib = 80
memory_bandwidth_gb_per_s = 3350   # GB/s = 1e9 bytes/s
l2_cache_mib = 50
tdp_w = 700
boost_clock_mhz = 1980             # optional
smem_per_sm_kib = 228              # optional: shared memory per SM (KiB) CTAs can use; default: the family's
[links]
nvlink_gb_per_s = 450              # per direction per GPU; 0 = none
pcie_gb_per_s = 64                 # per direction
```
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from workloads.errors import ConfigError
from workloads.ops import DType
from workloads.specfile import catalog_file, get_number, get_str, read_toml, reject_unknown

GIB = 1024**3
MIB = 1024**2


class Architecture(enum.Enum):
    AMPERE = "ampere"
    ADA = "ada"
    HOPPER = "hopper"
    BLACKWELL = "blackwell"


@dataclass(frozen=True)
class GPUSpec:
    """One GPU, in SI units (FLOP/s, bytes, bytes/s, watts)."""

    id: str
    name: str
    architecture: Architecture
    sm_count: int
    bf16_flops: float
    fp16_flops: float
    fp8_flops: float | None
    fp32_flops: float
    memory_bytes: float
    memory_bandwidth: float
    l2_cache_bytes: float
    tdp_w: float
    nvlink_bandwidth: float
    pcie_bandwidth: float
    boost_clock_hz: float | None = None
    smem_per_sm_bytes: float | None = None  # shared memory per SM usable by CTAs; None: the family's value
    source_file: str = ""

    def peak_flops(self, dtype: DType) -> float:
        """Dense tensor-core peak for ``dtype`` (FP8 falls back to FP16 rate where unsupported)."""
        if dtype is DType.BF16:
            return self.bf16_flops
        if dtype is DType.FP16:
            return self.fp16_flops
        if dtype is DType.FP8:
            return self.fp8_flops if self.fp8_flops else self.fp16_flops
        return self.fp32_flops

    @property
    def interconnect_bandwidth(self) -> float:
        """Per-direction GPU-to-GPU bandwidth inside a node: NVLink if present, else PCIe."""
        return self.nvlink_bandwidth if self.nvlink_bandwidth > 0 else self.pcie_bandwidth


_GPU_KEYS = {"name", "architecture", "sm_count", "bf16_dense_tflops", "fp16_dense_tflops",
             "fp8_dense_tflops", "fp32_tflops", "memory_gib", "memory_bandwidth_gb_per_s",
             "l2_cache_mib", "tdp_w", "boost_clock_mhz", "smem_per_sm_kib"}
_LINK_KEYS = {"nvlink_gb_per_s", "pcie_gb_per_s"}


def _specs_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "specs"))


def list_gpus() -> list[str]:
    """Ids of the built-in GPUs, sorted."""
    return sorted(p.stem for p in _specs_dir().glob("*.toml"))


def parse_gpu(data: dict, *, file: str, gpu_id: str) -> GPUSpec:
    reject_unknown(data, {"gpu", "links"}, file=file)
    for section in ("gpu", "links"):
        if section not in data or not isinstance(data[section], dict):
            raise ConfigError("missing required table", file=file, field=f"[{section}]")
    g, links = data["gpu"], data["links"]
    reject_unknown(g, _GPU_KEYS, file=file, section="gpu")
    reject_unknown(links, _LINK_KEYS, file=file, section="links")

    def num(key: str, **kw):  # type: ignore[no-untyped-def]
        return get_number(g, key, file=file, section="gpu", **kw)

    arch = get_str(g, "architecture", file=file, section="gpu", choices=[a.value for a in Architecture])
    fp8 = num("fp8_dense_tflops", default=None)
    clock = num("boost_clock_mhz", default=None)
    smem = num("smem_per_sm_kib", default=None)
    return GPUSpec(
        id=gpu_id,
        name=get_str(g, "name", file=file, section="gpu"),
        architecture=Architecture(arch),
        sm_count=num("sm_count", integer=True),
        bf16_flops=num("bf16_dense_tflops") * 1e12,
        fp16_flops=num("fp16_dense_tflops") * 1e12,
        fp8_flops=None if fp8 is None else fp8 * 1e12,
        fp32_flops=num("fp32_tflops") * 1e12,
        memory_bytes=num("memory_gib") * GIB,
        memory_bandwidth=num("memory_bandwidth_gb_per_s") * 1e9,
        l2_cache_bytes=num("l2_cache_mib") * MIB,
        tdp_w=num("tdp_w"),
        nvlink_bandwidth=get_number(links, "nvlink_gb_per_s", file=file, section="links", allow_zero=True) * 1e9,
        pcie_bandwidth=get_number(links, "pcie_gb_per_s", file=file, section="links") * 1e9,
        boost_clock_hz=None if clock is None else clock * 1e6,
        smem_per_sm_bytes=None if smem is None else smem * 1024,
        source_file=file,
    )


def load_gpu(name_or_path: str | Path) -> GPUSpec:
    """Load a GPU by catalog id (``h100-sxm-80gb``) or from a TOML file path."""
    path, key = catalog_file(name_or_path, _specs_dir(), list_gpus(), kind="hardware", field="hardware")
    return parse_gpu(read_toml(path), file=str(path), gpu_id=key)
