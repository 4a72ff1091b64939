"""Flows: the unit a collective is decomposed into for flow-level simulation.

A collective (or a KV-cache transfer, or a pipeline send) becomes a :class:`FlowSchedule`: a list
of steps, each a list of :class:`Flow` objects that start together; step ``i + 1`` of a schedule
starts when every flow of step ``i`` has finished (a ring's steps, a tree's levels). Several
schedules given to the simulator at once progress independently and contend for the links they
share (concurrent TP groups, several jobs on one fabric).

A flow carries its own route: the directed edges of the topology graph it crosses, in order.
Each edge of the graph has ``capacity`` (bytes/s) and ``latency`` (s) attributes. A flow's time
is its route's summed latency plus its bytes over the bandwidth it receives under max-min fair
sharing; ``overhead_s`` adds per-message software latency (kernel launch, NCCL protocol).
Units are SI throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Edge = tuple[str, str]


@dataclass(frozen=True)
class Flow:
    src: str
    dst: str
    nbytes: float
    route: tuple[Edge, ...]
    overhead_s: float = 0.0
    # the most bandwidth the endpoint can drive (bytes/s), e.g. a NIC's efficiency cap or a
    # copy-engine limit; None = only the links limit it
    rate_cap: float | None = None


@dataclass(frozen=True)
class FlowSchedule:
    """Steps of flows run one after another; ``name`` labels the schedule in results."""

    steps: tuple[Sequence[Flow], ...]   # a step: a tuple of flows, or any sequence (decompose.FlowBatch)
    name: str = ""
    start_s: float = 0.0
    meta: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
