"""What the clock measurement scripts share (``collect_step_clock.py``, ``collect_clock_transient.py``; CUDA).

* :func:`llama_bench`: the built-in model (random bf16 weights) with its KV cache and one batch of prompt
  tokens, and its gate_up GEMM (m = batch x prompt, n = 2 x intermediate, k = hidden) on its own operands:
  a prefill step, a decode step (one token after the prompt) and the GEMM as argument-less callables;
* :func:`warm_up`: three rounds of prefill + GEMM (cuBLAS heuristics, the allocator), then a sync;
* :func:`cuda_kernels`: the profiler's device events of ``reps`` calls of a callable, in start order.

torch is imported inside the functions, so the scripts parse their arguments (and ``--help``) without it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@dataclass(frozen=True)
class LlamaBench:
    """A model's prefill and decode steps and its gate_up GEMM, ready to call (see :func:`llama_bench`)."""

    spec: Any  # workloads.model_spec.ModelSpec
    prefill: Callable[[], None]
    decode: Callable[[], None]
    gemm: Callable[[], None]
    mnk: tuple[int, int, int]  # the GEMM's m, n, k


def llama_bench(model: str, batch: int, prompt: int, device: str = "cuda") -> LlamaBench:
    """The built-in ``model`` in bf16 on ``device`` with a cache of ``prompt + 1`` tokens for ``batch``
    sequences; ``prefill`` runs the ``batch x prompt`` tokens from an empty cache, ``decode`` the last
    token after a full prompt; ``gemm`` is ``torch.mm`` of the step's gate_up shape into a preallocated
    output (operands drawn after the tokens, in the order a, b)."""
    import torch

    from workloads.catalog import load_model
    from workloads.pytorch.llama import build_llama

    spec = load_model(model)
    net = build_llama(spec, dtype=torch.bfloat16, device=device)
    tokens = torch.randint(0, spec.vocab_size, (batch, prompt), device=device)
    cache = net.new_cache(batch, prompt + 1)

    def prefill() -> None:
        cache.length = 0
        net(tokens, cache)

    def decode() -> None:
        cache.length = prompt
        net(tokens[:, -1:], cache)

    m, n, k = batch * prompt, 2 * spec.intermediate_size, spec.hidden_size
    wa = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    wb = torch.randn(k, n, device=device, dtype=torch.bfloat16)
    wc = torch.empty(m, n, device=device, dtype=torch.bfloat16)

    def gemm() -> None:
        torch.mm(wa, wb, out=wc)

    return LlamaBench(spec, prefill, decode, gemm, (m, n, k))


def warm_up(b: LlamaBench, rounds: int = 3) -> None:
    """``rounds`` x (prefill, GEMM), then a device sync (call under ``torch.no_grad()``)."""
    import torch

    for _ in range(rounds):
        b.prefill()
        b.gemm()
    torch.cuda.synchronize()


def cuda_kernels(fn: Callable[[], None], reps: int = 1) -> list[tuple[Any, Any]]:
    """``(start, end)`` (us, the profiler's own numbers) of every device event of ``reps`` calls of ``fn``
    under the profiler, in start order."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    ev = sorted((e for e in prof.events() if "CUDA" in str(getattr(e, "device_type", ""))),
                key=lambda e: e.time_range.start)
    return [(e.time_range.start, e.time_range.end) for e in ev]
