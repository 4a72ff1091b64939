"""Inference requests: what a serving simulation replays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One request: arrives at ``arrival_s`` (seconds from the start of the trace) with a prompt of
    ``prompt_tokens`` and asks for ``output_tokens`` generated tokens (>= 1)."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
