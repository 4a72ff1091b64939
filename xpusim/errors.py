"""User-facing exceptions (defined in the lowest layer, re-exported here)."""

from workloads.errors import CapacityError, ConfigError, Infeasible, PlannerError, WorkloadError, XpusimError

__all__ = ["XpusimError", "ConfigError", "WorkloadError", "CapacityError", "PlannerError", "Infeasible"]
