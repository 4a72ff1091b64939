"""Tensor-parallel all-reduce: the network fabric's closed form on the GPU's own node type.

The GPU's node type is the one in ``hwmodels/network/specs/nodes.toml`` built around it (A100 ->
DGX A100, H100 -> DGX H100 with NVLink SHARP, RTX 4090 -> the PCIe workstation, ...); a GPU no node
type names gets a generic node from its spec (NVSwitch-like over its NVLink, else host-staged PCIe).
A TP group larger than a node spans nodes over the node type's NICs. NCCL's algorithm and protocol
are chosen as its tuner would (:func:`hwmodels.network.collectives.collective_time`), so small
all-reduces are latency-bound as measured. ``Calibration.comm_eff`` / ``comm_step_s`` are no longer
used here; the constants are the network's (``hwmodels/network/specs/collectives.toml``).
"""

from __future__ import annotations

import functools
import math

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from hwmodels.network.collectives import CollectiveOp, Geometry, collective_time, intra_ring_link
from hwmodels.network.nics import IntraFabric, NicAttach, NodeSpec, load_nic, node_catalog
from workloads.ops import AllReduce


def node_type_for(gpu: GPUSpec) -> NodeSpec:
    """The catalog node type built around ``gpu`` (by GPU id), else a generic one from its links."""
    for spec in node_catalog().values():
        if spec.gpu == gpu.id:
            return spec
    nvlink = gpu.nvlink_bandwidth > 0
    return NodeSpec(id=f"generic-{gpu.id}", name=f"generic 8x {gpu.name}", gpu=gpu.id, gpus=8,
                    fabric=IntraFabric.NVSWITCH if nvlink else IntraFabric.PCIE,
                    gpu_link=gpu.nvlink_bandwidth if nvlink else gpu.pcie_bandwidth,
                    gpu_link_latency_s=0.35e-6 if nvlink else 1.0e-6, nvls=False, pcie=gpu.pcie_bandwidth,
                    pcie_latency_s=0.5e-6, pcie_switches=0, nics=1, nic="eth-100g-tcp", nic_attach=NicAttach.CPU,
                    xgmi_link=0.0, xgmi_links=())


@functools.cache
def tp_geometry(gpu: GPUSpec, group: int) -> Geometry:
    """A TP group of ``group`` GPUs packed onto nodes of ``gpu``'s node type."""
    spec = node_type_for(gpu)
    nodes = math.ceil(group / spec.gpus)
    per_node = min(group, spec.gpus)
    nic = load_nic(spec.nic)
    return Geometry(n=group, nodes=nodes, per_node=per_node, fabric=spec.fabric, nvls=spec.nvls,
                    intra_link=intra_ring_link(spec, per_node, None),
                    p2p_link=spec.gpu_link if spec.fabric is not IntraFabric.XGMI else intra_ring_link(spec, 2, None),
                    nics_per_node=max(1, math.ceil(per_node / spec.gpus_per_nic)), nic=nic, oversubscription=1.0,
                    inter_site_rate=None, net_latency_s=2 * nic.latency_s if nodes > 1 else 0.0)


@functools.lru_cache(maxsize=8192)
def p2p_time(nbytes: float, gpu: GPUSpec) -> float:
    """One point-to-point send of ``nbytes`` between two GPUs of ``gpu``'s node type (a pipeline-stage
    boundary): the fabric's send/recv closed form, NCCL's per-message latency included."""
    if nbytes <= 0:
        return 0.0
    return collective_time(None, CollectiveOp.SEND_RECV, nbytes, geo=tp_geometry(gpu, 2)).time_s


def all_reduce_cost(op: AllReduce, gpu: GPUSpec, cal: Calibration) -> tuple[float, dict[str, float]]:
    n = op.group
    if n <= 1 or op.bytes <= 0:
        return 0.0, {}
    res = collective_time(None, CollectiveOp.ALL_REDUCE, op.bytes, geo=tp_geometry(gpu, n))
    latency = res.breakdown.get("latency_s", 0.0)
    return res.time_s, {"comm_s": res.time_s - latency, "latency_s": latency}
