"""Tensor-parallel all-reduce inside a node: ring over NVLink (or PCIe when there is none).

Ring all-reduce moves 2 (n - 1) / n of the buffer over each GPU's link in 2 (n - 1) steps; each step
pays a fixed latency. ``comm_eff`` is the bus bandwidth NCCL reaches as a fraction of the link's
per-direction bandwidth. A simple alpha-beta model; the network model replaces it for multi-node.
"""

from __future__ import annotations

from hwmodels.gpu import GPUSpec
from hwmodels.kernels.calibration import Calibration
from workloads.ops import AllReduce


def all_reduce_cost(op: AllReduce, gpu: GPUSpec, cal: Calibration) -> tuple[float, dict[str, float]]:
    n = op.group
    if n <= 1 or op.bytes <= 0:
        return 0.0, {}
    bw = gpu.interconnect_bandwidth * cal.comm_eff
    steps = 2 * (n - 1)
    latency = steps * cal.comm_step_s
    transfer = 2.0 * (n - 1) / n * op.bytes / bw
    t = cal.launch_s + latency + transfer
    return t, {"comm_s": transfer, "latency_s": latency, "launch_s": cal.launch_s}
