"""KV-cache transfer between two model instances over the fabric (prefill -> decode machine).

A model instance at tensor parallelism ``tp`` holds 1/tp of every layer's KV heads on each of its GPUs.
Moving a request's KV cache (``nbytes`` in all) from a source instance of ``len(src)`` GPUs to a
destination of ``len(dst)`` GPUs is ``L = max(len(src), len(dst))`` point-to-point messages of
``nbytes / L``: message k goes from ``src[k * len(src) // L]`` to ``dst[k * len(dst) // L]`` (the head
shards line up; the GPU holding more heads sends or receives several messages). Splitwise and
DistServe move KV this way, GPU to GPU with NCCL/UCX send/recv.

:func:`kv_transfer_time` is the closed form (the fabric's send/recv per source GPU, its messages
back to back; the sources in parallel, each on its own rail); :func:`kv_transfer_schedules` gives
the same messages as concurrent flow schedules for :mod:`sim.fabric`, where transfers that share links
(several at once, an oversubscribed spine) contend. Without contention both agree (tests show it).
Layer-wise overlap with the prefill is the caller's: send one layer's share ``nbytes / layers``
as that layer finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hwmodels.network.collectives import CollectiveOp, collective_time
from hwmodels.network.decompose import decompose
from hwmodels.network.flows import FlowSchedule
from hwmodels.network.topology import Cluster
from workloads.errors import ConfigError


def kv_transfer_messages(src: Sequence[str], dst: Sequence[str], nbytes: float) -> list[tuple[str, str, float]]:
    """The (source GPU, destination GPU, bytes) messages that move ``nbytes`` of KV from ``src`` to ``dst``."""
    if not src or not dst:
        raise ConfigError("a KV transfer needs at least one source and one destination GPU", field="gpus",
                          value=(len(src), len(dst)))
    if set(src) & set(dst):
        raise ConfigError(f"KV transfer source and destination share GPUs {sorted(set(src) & set(dst))}",
                          field="gpus", value=sorted(set(src) & set(dst)))
    if not nbytes >= 0:
        raise ConfigError(f"KV bytes must be >= 0, got {nbytes!r}", field="nbytes", value=nbytes)
    n = max(len(src), len(dst))
    return [(src[k * len(src) // n], dst[k * len(dst) // n], nbytes / n) for k in range(n)]


def kv_transfer_time(cluster: Cluster, src: Sequence[str], dst: Sequence[str], nbytes: float) -> float:
    """Closed-form seconds to move ``nbytes`` of KV cache from the GPUs ``src`` to the GPUs ``dst``."""
    per_src: dict[str, tuple[str, float]] = {}
    for s, d, b in kv_transfer_messages(src, dst, nbytes):
        first, total = per_src.get(s, (d, 0.0))
        per_src[s] = (first, total + b)
    if nbytes == 0:
        return 0.0
    return max(collective_time(cluster, CollectiveOp.SEND_RECV, b, gpus=[s, d]).time_s
               for s, (d, b) in per_src.items())


def kv_transfer_schedules(cluster: Cluster, src: Sequence[str], dst: Sequence[str], nbytes: float, *,
                          name: str = "kv_transfer", start_s: float = 0.0) -> list[FlowSchedule]:
    """The transfer's messages as concurrent send/recv schedules (each the fabric's send/recv
    decomposition) for :func:`sim.fabric.simulate_collectives`; messages of one GPU share its links."""
    out = []
    for k, (s, d, b) in enumerate(kv_transfer_messages(src, dst, nbytes)):
        sched = decompose(cluster, CollectiveOp.SEND_RECV, b, group=[s, d], name=f"{name}.{k}")
        out.append(replace(sched, start_s=start_s))
    return out
