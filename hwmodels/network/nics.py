"""NIC types and node types of the network fabric: the two catalogs a cluster spec refers to.

``specs/nics.toml`` holds one table per NIC type (``[hdr-ib]``, ``[ndr-ib]``, ...), and
``specs/nodes.toml`` one table per server type (``[dgx-a100]``, ``[frontier-mi250x]``, ...). A cluster
file (``specs/clusters/<name>.toml``, see :mod:`hwmodels.network.topology`) names them, or defines
its own in ``[nic_types.<id>]`` / ``[node_types.<id>]`` tables of the same schema. Units are in the
keys and converted to SI here, once: bytes/s, seconds.

NIC type (``line_rate_gbit_per_s`` is the signalling rate of one port per direction):

```
[hdr-ib]
name = "InfiniBand HDR 200G (ConnectX-6), GPUDirect RDMA"
transport = "infiniband"            # infiniband | roce | tcp | slingshot
line_rate_gbit_per_s = 200          # Gb/s = 1e9 bit/s, per direction
efficiency = 0.86                   # fraction of the line rate NCCL's transfers reach (0 < e <= 1)
latency_us = 0.6                    # one-way NIC + cable latency, per NIC crossed
stream_gb_per_s = 0                 # optional: most one GPU's connections through this NIC move, GB/s
                                    # (a CPU-bound transport such as TCP sockets); 0 = no cap
duplex_efficiency = 1.0             # optional: fraction of the rate (of the stream, when capped) left per
                                    # direction when it sends and receives at once (1 = full duplex)
source = "..."
```

Node type (a server):

```
[dgx-a100]
name = "NVIDIA DGX A100"
gpu = "a100-sxm-80gb"               # GPU catalog id (hwmodels/specs) or "" when there is none
gpus = 8                            # GPUs (or GCDs) per node
fabric = "nvswitch"                 # nvswitch | pcie | xgmi: how GPUs of the node reach each other
gpu_link_gb_per_s = 300             # per GPU per direction into the fabric (NVLink total; PCIe x16; 0 for xgmi)
gpu_link_latency_us = 0.7           # one GPU -> fabric hop
nvls = false                        # NVLink SHARP (in-switch reduction): Hopper and later NVSwitch
pcie_gb_per_s = 31.5                # per direction: GPU / NIC <-> PCIe switch or host
pcie_latency_us = 0.5
pcie_switches = 4                   # PCIe switches shared by GPU and NIC groups; 0 = GPUs on the CPU
nics = 8                            # NICs of the compute fabric
nic = "hdr-ib"                      # NIC type id
nic_attach = "pcie_switch"          # pcie_switch | cpu | gpu: where each NIC hangs
xgmi_link_gb_per_s = 50             # xgmi fabrics only: one Infinity Fabric link, per direction
xgmi_links = [[0, 1, 4], ...]       # xgmi fabrics only: [gcd a, gcd b, number of links]
source = "..."
```
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.errors import ConfigError
from workloads.specfile import get_number, get_str, read_toml, reject_unknown, unknown_name


class Transport(enum.Enum):
    INFINIBAND = "infiniband"
    ROCE = "roce"
    TCP = "tcp"
    SLINGSHOT = "slingshot"


class IntraFabric(enum.Enum):
    NVSWITCH = "nvswitch"   # every GPU on one non-blocking NVSwitch crossbar
    PCIE = "pcie"           # GPU-to-GPU through PCIe switches / the host bridge
    XGMI = "xgmi"           # direct GPU-GPU (GCD-GCD) Infinity Fabric links


class NicAttach(enum.Enum):
    PCIE_SWITCH = "pcie_switch"
    CPU = "cpu"
    GPU = "gpu"


@dataclass(frozen=True)
class NICSpec:
    """One NIC type, SI units."""

    id: str
    name: str
    transport: Transport
    line_rate: float            # bytes/s per direction
    efficiency: float           # fraction of line_rate NCCL's transfers reach
    latency_s: float            # one-way, per NIC crossed
    stream_rate: float | None   # bytes/s one GPU's connections through the NIC move at most; None = no cap
    duplex_efficiency: float    # per-direction share when sending and receiving at once
    source: str = ""

    @property
    def rate(self) -> float:
        """Bytes/s a NIC moves in one direction when it only sends (or only receives)."""
        return self.line_rate * self.efficiency


@dataclass(frozen=True)
class NodeSpec:
    """One server type, SI units."""

    id: str
    name: str
    gpu: str
    gpus: int
    fabric: IntraFabric
    gpu_link: float             # bytes/s per GPU per direction into the fabric
    gpu_link_latency_s: float
    nvls: bool
    pcie: float                 # bytes/s per direction
    pcie_latency_s: float
    pcie_switches: int
    nics: int
    nic: str
    nic_attach: NicAttach
    xgmi_link: float            # bytes/s per Infinity Fabric link per direction (xgmi fabrics)
    xgmi_links: tuple[tuple[int, int, int], ...]
    source: str = ""

    @property
    def gpus_per_nic(self) -> int:
        return self.gpus // self.nics

    def nic_index(self, local_gpu: int) -> int:
        """The NIC (rail) GPU ``local_gpu`` sends through: GPU i uses NIC i (one NIC per GPU), or the
        NIC of its group of ``gpus_per_nic`` neighbours."""
        return local_gpu // self.gpus_per_nic

    def with_nics(self, nics: int, nic: str) -> NodeSpec:
        from dataclasses import replace

        return replace(self, nics=nics, nic=nic)


_NIC_KEYS = {"name", "transport", "line_rate_gbit_per_s", "efficiency", "latency_us", "stream_gb_per_s",
             "duplex_efficiency", "source"}
_NODE_KEYS = {"name", "gpu", "gpus", "fabric", "gpu_link_gb_per_s", "gpu_link_latency_us", "nvls",
              "pcie_gb_per_s", "pcie_latency_us", "pcie_switches", "nics", "nic", "nic_attach",
              "xgmi_link_gb_per_s", "xgmi_links", "source"}


def specs_dir() -> Path:
    return Path(str(resources.files("hwmodels") / "network" / "specs"))


def _fraction(table: dict[str, Any], key: str, *, file: str, section: str, default: Any = None) -> float:
    kw: dict[str, Any] = {} if default is None else {"default": default}
    v = float(get_number(table, key, file=file, section=section, **kw))
    if v > 1:
        raise ConfigError(f"must be a fraction in (0, 1], got {v!r}", file=file, field=f"{section}.{key}", value=v)
    return v


def parse_nic(t: Any, *, file: str, nic_id: str, section: str | None = None) -> NICSpec:
    section = section or nic_id
    if not isinstance(t, dict):
        raise ConfigError("must be a table", file=file, field=section)
    reject_unknown(t, _NIC_KEYS, file=file, section=section)
    stream = get_number(t, "stream_gb_per_s", file=file, section=section, default=0, allow_zero=True)
    return NICSpec(
        id=nic_id,
        name=get_str(t, "name", file=file, section=section),
        transport=Transport(get_str(t, "transport", file=file, section=section, choices=[x.value for x in Transport])),
        line_rate=get_number(t, "line_rate_gbit_per_s", file=file, section=section) * 1e9 / 8,
        efficiency=_fraction(t, "efficiency", file=file, section=section),
        latency_s=get_number(t, "latency_us", file=file, section=section, allow_zero=True) * 1e-6,
        stream_rate=stream * 1e9 if stream else None,
        duplex_efficiency=_fraction(t, "duplex_efficiency", file=file, section=section, default=1.0),
        source=get_str(t, "source", file=file, section=section, default=""),
    )


def parse_node(t: Any, *, file: str, node_id: str, section: str | None = None) -> NodeSpec:
    section = section or node_id
    if not isinstance(t, dict):
        raise ConfigError("must be a table", file=file, field=section)
    reject_unknown(t, _NODE_KEYS, file=file, section=section)

    def num(key: str, **kw: Any) -> Any:
        return get_number(t, key, file=file, section=section, **kw)

    fabric = IntraFabric(get_str(t, "fabric", file=file, section=section, choices=[x.value for x in IntraFabric]))
    gpus = num("gpus", integer=True)
    nics = num("nics", integer=True)
    if gpus % nics:
        raise ConfigError(f"{gpus} GPUs do not share {nics} NICs evenly", file=file, field=f"{section}.nics",
                          value=nics)
    nvls = t.get("nvls", False)
    if not isinstance(nvls, bool):
        raise ConfigError(f"must be true or false, got {nvls!r}", file=file, field=f"{section}.nvls", value=nvls)
    links: list[tuple[int, int, int]] = []
    xgmi_link = 0.0
    if fabric is IntraFabric.XGMI:
        xgmi_link = num("xgmi_link_gb_per_s") * 1e9
        raw = t.get("xgmi_links")
        if not isinstance(raw, list) or not raw:
            raise ConfigError("an xgmi node needs a list of [gcd, gcd, links]", file=file,
                              field=f"{section}.xgmi_links", value=raw)
        for item in raw:
            ok = (isinstance(item, list) and len(item) == 3 and all(isinstance(x, int) for x in item)
                  and 0 <= item[0] < gpus and 0 <= item[1] < gpus and item[0] != item[1] and item[2] > 0)
            if not ok:
                raise ConfigError(f"bad link {item!r}: need [gcd a, gcd b, links > 0] with GCDs below {gpus}",
                                  file=file, field=f"{section}.xgmi_links", value=item)
            links.append((item[0], item[1], item[2]))
    else:
        for key in ("xgmi_link_gb_per_s", "xgmi_links"):
            if key in t:
                raise ConfigError(f"only for fabric = 'xgmi' (this node is {fabric.value!r})", file=file,
                                  field=f"{section}.{key}")
    gpu_link = num("gpu_link_gb_per_s", allow_zero=fabric is IntraFabric.XGMI) * 1e9
    pcie_switches = num("pcie_switches", integer=True, allow_zero=True)
    attach = NicAttach(get_str(t, "nic_attach", file=file, section=section, choices=[x.value for x in NicAttach]))
    if attach is NicAttach.PCIE_SWITCH and (pcie_switches == 0 or gpus % pcie_switches
                                            or (nics % pcie_switches and pcie_switches % nics)):
        raise ConfigError(f"NICs on PCIe switches need pcie_switches > 0 dividing gpus ({gpus}), and nics ({nics}) "
                          "a multiple or a divisor of it",
                          file=file, field=f"{section}.pcie_switches", value=pcie_switches)
    return NodeSpec(
        id=node_id,
        name=get_str(t, "name", file=file, section=section),
        gpu=get_str(t, "gpu", file=file, section=section, default=""),
        gpus=gpus,
        fabric=fabric,
        gpu_link=gpu_link,
        gpu_link_latency_s=num("gpu_link_latency_us", allow_zero=True) * 1e-6,
        nvls=nvls,
        pcie=num("pcie_gb_per_s") * 1e9,
        pcie_latency_s=num("pcie_latency_us", allow_zero=True) * 1e-6,
        pcie_switches=pcie_switches,
        nics=nics,
        nic=get_str(t, "nic", file=file, section=section),
        nic_attach=attach,
        xgmi_link=xgmi_link,
        xgmi_links=tuple(links),
        source=get_str(t, "source", file=file, section=section, default=""),
    )


@functools.cache
def nic_catalog() -> dict[str, NICSpec]:
    path = specs_dir() / "nics.toml"
    data = read_toml(path)
    return {k: parse_nic(v, file=str(path), nic_id=k) for k, v in data.items()}


@functools.cache
def node_catalog() -> dict[str, NodeSpec]:
    path = specs_dir() / "nodes.toml"
    data = read_toml(path)
    return {k: parse_node(v, file=str(path), node_id=k) for k, v in data.items()}


def _lookup(kind: str, key: str, table: dict[str, Any], *, file: str | None, field: str) -> Any:
    if key in table:
        return table[key]
    raise unknown_name(kind, key, table, field=field, file=file)


def load_nic(nic_id: str, *, extra: dict[str, NICSpec] | None = None, file: str | None = None,
             field: str = "nic") -> NICSpec:
    """A NIC type by id: ``extra`` (a cluster file's own types) first, then the catalog."""
    return _lookup("NIC type", nic_id, {**nic_catalog(), **(extra or {})}, file=file, field=field)  # type: ignore[no-any-return]


def load_node(node_id: str, *, extra: dict[str, NodeSpec] | None = None, file: str | None = None,
              field: str = "node") -> NodeSpec:
    """A node type by id: ``extra`` (a cluster file's own types) first, then the catalog."""
    return _lookup("node type", node_id, {**node_catalog(), **(extra or {})}, file=file, field=field)  # type: ignore[no-any-return]
