"""Memory per GPU of a training step: weights, gradients, optimizer states, activations.

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv:2205.05198), Table 2, bytes per transformer layer for one micro-batch (16-bit
activations, 1-byte dropout masks; s sequence, b micro-batch, h hidden, a heads, t TP degree):

====================================================  =============================
no parallelism                                        s b h (34 + 5 a s / h)
tensor parallel (baseline)                            s b h (10 + 24/t + 5 a s / (h t))
tensor + sequence parallel                            s b h (34/t + 5 a s / (h t))
tensor parallel + selective recompute                 s b h (10 + 24/t)
tensor + sequence parallel + selective recompute      s b h 34/t
full recompute                                        2 s b h   (the layer's input only)
====================================================  =============================

Pipeline parallelism (Sec. 4.2.3): with 1F1B the first stage holds ``p`` micro-batches in flight, each
of its ``L/p`` layers, so ``L`` layers' worth; the interleaved schedule multiplies that by
``1 + (p - 1) / (p m)`` for ``m`` model chunks per stage; GPipe keeps every micro-batch of the step
(``n_micro x L/p`` layers). Stage ``i`` of 1F1B holds ``min(p - i, n_micro)`` micro-batches.
With those, Figure 1 of the paper is reproduced to its 0.1 GiB (tests/test_train_memory.py).

Beyond the paper's per-layer figure, the report adds (separate entries, never mixed into
``activations``): full recompute's working buffer (one layer's activations rebuilt for its backward,
the no-recompute figure of one layer and micro-batch); the embedding/LM-head activations of the
first/last stage are not counted (Korthikanti Sec. 4.3 shows them small, and Fig. 1 leaves them out).

Model states (mixed-precision Adam; Rajbhandari et al. 2020, ZeRO, Sec. 3.1): 16-bit weights (2 B/param),
gradients (Megatron-LM accumulates them in fp32 ``main_grad``: 4 B/param; the ZeRO paper counts 16-bit
ones, 2 B), fp32 master weights, momentum and variance (12 B/param). Megatron's 18 B/param reproduces
Figure 1's "weights+grads+optimizer" (e.g. 175B: 12 h^2 x 12 layers / 8 x 18 B = 45.6 GiB).
ZeRO shards over the DP degree ``d``: stage 1 the optimizer states, stage 2 also the gradients,
stage 3 also the weights.

Context parallelism (``cp`` ranks share each sequence; :func:`train_memory`): each GPU holds the
activations of its ``s/cp`` tokens, Table 2 with ``s -> s/cp``. Ring attention keeps that form (its
score blocks are ``(s/cp)``-sized); Ulysses' core holds full-``s`` tensors of ``a/(t cp)`` heads: Q, K, V
and the output are the same size as their ``s/cp``-token, ``a/t``-head form (so the 34 coefficient
stays), and the unfused scores term becomes ``5 a s^2 b / (t cp)`` per layer (Table 2's term with
``s -> s/cp`` and ``a -> a cp``). Weights are replicated over CP; ZeRO shards over the combined
data-and-context-parallel group (``dp x cp`` ranks), as Megatron-Core's distributed optimizer does
(``get_data_parallel_group(with_context_parallel=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from workloads.errors import CapacityError
from workloads.model_spec import ModelSpec
from workloads.train_ops import CPImpl, Recompute, Schedule, TrainLayout

GIB = 1024**3
OPTIMIZER_BYTES_PER_PARAM = 12  # fp32 master weights + Adam momentum + variance


def activation_bytes_per_layer(s: int, b: int, h: int, a: int, t: int = 1, *, sequence_parallel: bool = False,
                               recompute: Recompute = Recompute.NONE) -> float:
    """Korthikanti et al. 2022, Table 2: bytes of one layer's stored activations for one micro-batch."""
    sbh = float(s) * b * h
    attn = 5.0 * a * s / (h * t)   # the s x s scores, softmax output and dropout mask
    if recompute is Recompute.FULL:
        return 2.0 * sbh
    if sequence_parallel:
        base = 34.0 / t
    else:
        base = 10.0 + 24.0 / t
    if recompute is Recompute.SELECTIVE:
        return sbh * base
    return sbh * (base + attn)


def in_flight_factor(layout: TrainLayout, num_layers: int, stage: int = 0) -> float:
    """Layers' worth of one micro-batch's activations held by pipeline ``stage`` at its peak
    (Korthikanti Sec. 4.2.3; the first stage is the largest)."""
    p, n = layout.pp, layout.num_micro_batches
    per_stage = num_layers / p
    if p == 1:
        return per_stage   # one micro-batch at a time (gradient accumulation frees each)
    if layout.schedule is Schedule.GPIPE:
        return per_stage * n
    held = min(p - stage, n)
    if layout.schedule is Schedule.INTERLEAVED and layout.virtual_stages > 1:
        m = layout.virtual_stages
        return per_stage * held * (1.0 + (p - 1) / (p * m))
    return per_stage * held


@dataclass(frozen=True)
class TrainMemory:
    """Bytes per GPU on the most loaded pipeline stage (the first one)."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    recompute_buffer: float
    params_per_gpu: float

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.recompute_buffer

    def breakdown(self) -> dict[str, float]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                "activations": self.activations, "recompute_buffer": self.recompute_buffer}

    def to_gib(self) -> dict[str, float]:
        return {**{k: v / GIB for k, v in self.breakdown().items()}, "total": self.total / GIB}


def stage_params(model: ModelSpec, layout: TrainLayout, stage: int = 0) -> float:
    """Parameters one GPU of pipeline ``stage`` holds: its layers' share over TP, plus the embedding
    (first stage) and the LM head (last stage; tied embeddings keep a copy there as Megatron does),
    each split over TP (vocab-parallel). Norm weights and biases replicated over TP are counted split
    (their share is ~1e-4 of a layer)."""
    p, t = layout.pp, layout.tp
    layers = model.num_layers / p
    n = layers * model.layer_params()
    if stage == 0:
        n += model.embedding_params()
    if stage == p - 1:
        n += model.vocab_size * model.hidden_size if model.tied_embeddings and p > 1 else model.lm_head_params()
    return n / t


def train_memory(model: ModelSpec, layout: TrainLayout, *, grad_bytes: int = 4, stage: int = 0,
                 layers_only: bool = False) -> TrainMemory:
    """Memory of one GPU of pipeline ``stage`` (default the first, the most loaded under 1F1B).

    ``grad_bytes``: 4 (Megatron's fp32 gradient accumulation, the default) or 2 (16-bit gradients, the
    ZeRO paper's 16 B/param). ``layers_only``: count the transformer layers' parameters only (as the
    paper's Figure 1 does)."""
    if layers_only:
        params = model.num_layers / layout.pp * model.layer_params() / layout.tp
    else:
        params = stage_params(model, layout, stage)
    d, z = layout.dp * layout.cp, layout.zero   # ZeRO shards over DP x CP (Megatron-Core)
    wb = layout.act_dtype.bytes      # 16-bit weights (fp8 training keeps bf16 weights: TrainLayout.act_dtype)
    weights = params * wb / (d if z >= 3 else 1)
    grads = params * grad_bytes / (d if z >= 2 else 1)
    optim = params * OPTIMIZER_BYTES_PER_PARAM / (d if z >= 1 else 1)
    s, b, h, a, t = layout.seq // layout.cp, layout.micro_batch, model.hidden_size, model.num_heads, layout.tp
    if layout.cp > 1 and layout.cp_impl is CPImpl.ULYSSES:
        a *= layout.cp   # the scores term of the full sequence's s x s over a/(t cp) heads (module docstring)
    sp = layout.sequence_parallel and t > 1
    per_layer = activation_bytes_per_layer(s, b, h, a, t, sequence_parallel=sp, recompute=layout.recompute)
    acts = per_layer * in_flight_factor(layout, model.num_layers, stage)
    buf = 0.0
    if layout.recompute is Recompute.FULL:
        buf = activation_bytes_per_layer(s, b, h, a, t, sequence_parallel=sp, recompute=Recompute.NONE)
    return TrainMemory(weights, grads, optim, acts, buf, params)


def check_fits(mem: TrainMemory, capacity_bytes: float, what: str) -> None:
    """:class:`CapacityError` with the breakdown when ``mem`` exceeds the GPU's memory."""
    if mem.total > capacity_bytes:
        raise CapacityError(f"{what} needs {mem.total / GIB:.1f} GiB per GPU, the GPU has "
                            f"{capacity_bytes / GIB:.1f} GiB", breakdown=mem.breakdown())
