"""Routers: which replica an arriving request goes to. Same signature: ``route(req, replicas, now_ns)``;
``reads_state``: whether the choice reads the replicas' state (if not, the serving simulation routes
every request in advance and the replicas take them in without an event per arrival)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sim.config import RouterKind
from sim.registry import Registry


class _Replica(Protocol):
    def outstanding_tokens(self, now_ns: int) -> int: ...


ROUTERS: Registry[type] = Registry("router")


@ROUTERS.register(RouterKind.ROUND_ROBIN)
class RoundRobinRouter:
    """Replica i, i+1, ... in turn."""

    reads_state = False   # the choice depends on the order of arrivals only

    def __init__(self) -> None:
        self._next = 0

    def route(self, prompt: int, output: int, replicas: Sequence[_Replica], now_ns: int) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


@ROUTERS.register(RouterKind.LEAST_OUTSTANDING_TOKENS)
class LeastOutstandingTokensRouter:
    """The replica with the fewest tokens still to process (prompt tokens not yet in its KV cache
    plus output tokens not yet generated, over its waiting and running requests); ties go to the
    lowest index."""

    reads_state = True

    def route(self, prompt: int, output: int, replicas: Sequence[_Replica], now_ns: int) -> int:
        best, best_v = 0, None
        for i, r in enumerate(replicas):
            v = r.outstanding_tokens(now_ns)
            if best_v is None or v < best_v:
                best, best_v = i, v
        return best
