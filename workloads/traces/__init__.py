"""Request workloads for serving simulation: trace readers, fitted synthetic generators, ``--trace``.

- :func:`read_azure_csv`, :func:`read_vllm_bench`: trace files -> requests (malformed rows raise
  ``WorkloadError`` naming file, line and column).
- :func:`synthetic`: ``'azure-code'`` / ``'azure-conv'`` requests at a given rate, Gamma (fitted cv) or
  Poisson arrivals, lengths from quantile tables fitted to the Azure 2023 traces (:mod:`.profiles`).
- :func:`load_workload`: resolve a ``--trace`` argument (a profile name or a file path).
"""

from workloads.traces.fit import QUANTILE_PROBS, Profile, fit_profile, inter_arrival_cv
from workloads.traces.load import load_workload, rescale_rate, trace_choices
from workloads.traces.profiles import PROFILES, register_profile
from workloads.traces.readers import MeasuredRequest, read_azure_csv, read_vllm_bench
from workloads.traces.synthetic import Arrival, arrival_times, get_profile, sample_lengths, synthetic

__all__ = [
    "PROFILES",
    "QUANTILE_PROBS",
    "Arrival",
    "MeasuredRequest",
    "Profile",
    "arrival_times",
    "fit_profile",
    "get_profile",
    "inter_arrival_cv",
    "load_workload",
    "read_azure_csv",
    "read_vllm_bench",
    "register_profile",
    "rescale_rate",
    "sample_lengths",
    "synthetic",
    "trace_choices",
]
