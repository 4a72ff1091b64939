"""The one exception hierarchy of xpusim.

It lives in the lowest layer (``workloads`` imports nothing of ours) so that every layer can raise
these; ``xpusim.errors`` re-exports them for users. The CLI turns any ``XpusimError`` into a one-line
message and exit code 2.
"""

from __future__ import annotations

from typing import Any


class XpusimError(Exception):
    """A user-facing error: bad input, an impossible request. Never a bug in xpusim."""


class ConfigError(XpusimError):
    """A spec, config or argument is wrong. Names the file, the field and the bad value."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 value: Any = None) -> None:
        self.file = file
        self.field = field
        self.value = value
        parts = []
        if file:
            parts.append(str(file))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class WorkloadError(XpusimError):
    """A workload (trace, request, model input) is malformed. Names the file, line and column."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.file, self.line, self.column = file, line, column
        loc = []
        if file:
            loc.append(str(file))
        if line is not None:
            loc.append(f"line {line}")
        if column:
            loc.append(f"column '{column}'")
        prefix = ", ".join(loc)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class CapacityError(XpusimError):
    """A model (or its KV cache) does not fit in device memory. Carries the memory breakdown in bytes."""

    def __init__(self, message: str, *, breakdown: dict[str, float] | None = None) -> None:
        self.breakdown = dict(breakdown or {})
        if self.breakdown:
            gib = 1024**3
            detail = ", ".join(f"{k} {v / gib:.2f} GiB" for k, v in self.breakdown.items())
            message = f"{message} ({detail})"
        super().__init__(message)


class PlannerError(XpusimError):
    """A planner could not produce a plan."""


class Infeasible(PlannerError):
    """No configuration satisfies the constraints."""
