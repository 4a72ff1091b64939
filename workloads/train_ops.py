"""The training workload: a Megatron-LM GPT/Llama training step's layout and the ops of one layer.

What is run, per GPU, under Megatron's tensor parallelism (Shoeybi et al. 2019: QKV and FC1 split by
columns, O and FC2 by rows) with optional sequence parallelism (Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models", Section 4.2.2: layer norms and dropouts split
along the sequence; the all-reduce ``g`` becomes a reduce-scatter and the identity ``f`` an all-gather).

Per layer and micro-batch of ``b`` sequences of ``s`` tokens (``h`` hidden, ``a`` heads, TP ``t``):

forward: LN -> [all-gather (SP)] -> QKV GEMM (sb x 3h/t x h) -> attention core -> O GEMM (sb x h x h/t)
-> [all-reduce | reduce-scatter (SP)] -> bias-dropout-add -> LN -> [all-gather (SP)] -> FC1 (sb x 4h/t
x h) -> GeLU -> FC2 (sb x h x 4h/t) -> [all-reduce | reduce-scatter] -> bias-dropout-add.

backward: each GEMM's data gradient (same FLOPs) and weight gradient (same FLOPs); memory-bound ops
read the incoming gradient and their saved input and write a gradient; each collective's conjugate
(all-reduce <-> all-reduce at the other position; all-gather <-> reduce-scatter, Korthikanti Fig. 5).
Megatron's sequence-parallel backward all-gathers the input again for the weight gradient and
overlaps it with the data-gradient GEMM (Korthikanti Sec. 4.2.2); that copy is hidden and not costed.

Attention core, two implementations (:class:`AttentionImpl`):
- ``unfused`` (Megatron-LM of the 2022 paper): QK^T batched GEMM (b a/t batches of s x s x d), fused
  scale-mask-softmax, dropout, PV batched GEMM; the s x s scores are stored, which is the 5as/h term
  of the activation memory. A batched GEMM is costed as one GEMM with the batches stacked along m
  (same tiles and FLOPs; the per-batch B operand re-read is not counted).
- ``flash`` (FlashAttention, Dao et al. 2022): one fused forward kernel; its backward runs 5 matmuls
  against the forward's 2 (Dao 2023, FlashAttention-2 Sec. 3.1.2), so it is costed as 2.5x the forward.

Recompute (:class:`Recompute`): ``full`` re-runs the layer's forward (collectives included) before its
backward; ``selective`` re-runs the attention core's QK^T, softmax, dropout and PV (unfused; FlashAttention
recomputes those inside its own backward already, so nothing more).

Precision (``TrainLayout.dtype``): ``bf16`` / ``fp16`` everywhere; ``fp8`` is Transformer Engine's fp8
training (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", arXiv:2209.05433; TE's
``fp8_autocast`` with the ``DelayedScaling`` HYBRID recipe as Megatron-LM's ``--fp8-format hybrid``
runs it on ``--bf16``): the inputs of the linear layers' GEMMs (QKV, O, FC1, FC2, forward and both
gradients) are cast to fp8 (E4M3 forward, E5M2 gradients), so those GEMMs run at the fp8 tensor-core
rate with 1-byte operands; everything else stays bf16 (``TrainLayout.act_dtype``): activations and their
memory, the TP / CP / pipeline / DP communication, the memory-bound ops, the attention core (TE's fp8
attention is off by default), the LM head and the embedding; the weights are bf16 and the optimizer
keeps fp32 master weights and states (mixed precision as with bf16). Not modelled: the fp8 casts and
amax reductions TE adds per GEMM (small memory-bound passes), TE's fp8 copies of the GEMM inputs it
saves for backward (activation memory is counted at 2 bytes) and its cached fp8 weight copy; the
kernel model counts an fp8 GEMM's output at 1 byte (TE writes bf16), a GEMM-bound layer's small error.

Errors are :class:`~workloads.errors.ConfigError` naming the numbers.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Literal

from workloads.errors import ConfigError
from workloads.model_spec import Activation, ModelSpec, Norm, Position
from workloads.ops import DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention


class Recompute(enum.Enum):
    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


class Schedule(enum.Enum):
    GPIPE = "gpipe"
    ONE_F_ONE_B = "1f1b"
    INTERLEAVED = "interleaved"


class AttentionImpl(enum.Enum):
    UNFUSED = "unfused"
    FLASH = "flash"


class CPImpl(enum.Enum):
    """Context parallelism's attention: DeepSpeed-Ulysses all-to-alls, or Megatron-Core's ring attention."""

    ULYSSES = "ulysses"
    RING = "ring"


CommKind = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all"]


@dataclass(frozen=True)
class TPComm:
    """A collective inside a layer: ``nbytes`` is nccl-tests' size (the per-rank buffer of an all-reduce,
    the whole gathered / scattered buffer of all-gather / reduce-scatter, each rank's send buffer of an
    all-to-all). ``dim``: the group it runs on, the TP group or the CP group (Ulysses' all-to-alls)."""

    name: str
    collective: CommKind
    nbytes: float
    group: int
    dim: Literal["tp", "cp"] = "tp"


@dataclass(frozen=True)
class RingAttention:
    """One pass of ring attention over a CP group of ``group`` ranks (Megatron-Core / Transformer Engine's
    load-balanced causal ring, ``cp_comm_type="p2p"``): ``steps[k]`` is the work of step ``k`` (its
    FlashAttention kernel and, from step 1, the merge of the partial output), each ``scale`` x its time;
    while step ``k < group - 1`` computes, ``send_bytes`` go to the next rank of the ring (the K/V block the
    next step needs; backward also the dK/dV accumulator), overlapped: the step takes the larger of the
    two. ``tail_bytes``: sent after the last step, exposed (backward: the dK/dV accumulator's last hop back
    to its owner). ``flops``: the pass's attention FLOPs (the masked half of each block excluded)."""

    name: str
    steps: tuple[tuple[TrainOp, ...], ...]
    send_bytes: float
    group: int
    flops: float
    tail_bytes: float = 0.0


@dataclass(frozen=True)
class TrainOp:
    """One kernel (or collective) of a layer's pass: ``op`` is costed by the kernel model and scaled by
    ``scale`` (FlashAttention's backward: 2.5 x its forward); ``comm`` is a TP / CP collective instead;
    ``ring`` a ring-attention pass (kernels and overlapped sends over the CP group)."""

    op: Op | None = None
    comm: TPComm | None = None
    ring: RingAttention | None = None
    scale: float = 1.0
    # a weight-gradient GEMM that accumulates into Megatron's fp32 ``main_grad`` (C read and written in
    # fp32, beta = 1: apex ``fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32``, Megatron-LM's
    # ``--gradient-accumulation-fusion`` in ``LinearWithGradAccumulationAndAsyncCommunication``)
    fp32_accumulate: bool = False

    @property
    def name(self) -> str:
        if self.op is not None:
            return self.op.name
        if self.ring is not None:
            return self.ring.name
        assert self.comm is not None
        return self.comm.name

    @property
    def flops(self) -> float:
        if self.ring is not None:
            return self.ring.flops
        return 0.0 if self.op is None else self.scale * float(self.op.flops)


@dataclass(frozen=True)
class TrainLayout:
    """How one training step is mapped: degrees, batch, recompute, schedule, ZeRO stage. ``cp``: context
    parallelism (the sequence split over ``cp`` GPUs; ``cp_impl`` its attention); GPUs are
    ``tp x cp x dp x pp`` in Megatron-Core's default order "tp-cp-ep-dp-pp" (TP fastest)."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    micro_batch: int = 1
    global_batch: int = 1
    seq: int = 2048
    sequence_parallel: bool = False
    recompute: Recompute = Recompute.NONE
    schedule: Schedule = Schedule.ONE_F_ONE_B
    virtual_stages: int = 1
    zero: int = 0
    attention: AttentionImpl = AttentionImpl.FLASH
    dtype: DType = DType.BF16
    cp: int = 1
    cp_impl: CPImpl = CPImpl.ULYSSES

    @property
    def gpus(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per DP replica per step (gradient accumulation steps)."""
        return self.global_batch // (self.dp * self.micro_batch)

    @property
    def gemm_dtype(self) -> DType:
        """The inputs of the linear layers' GEMMs (QKV, O, FC1, FC2: forward, data and weight gradients)."""
        return self.dtype

    @property
    def act_dtype(self) -> DType:
        """Everything else: activations, collectives, memory-bound ops, the attention core, the LM head,
        the 16-bit weights. ``fp8`` is Transformer Engine's fp8 training (module docstring): fp8 GEMM
        inputs, bf16 the rest."""
        return DType.BF16 if self.dtype is DType.FP8 else self.dtype

    @property
    def chunks(self) -> int:
        """Model chunks per pipeline stage (virtual stages of the interleaved schedule, else 1)."""
        return self.virtual_stages if self.schedule is Schedule.INTERLEAVED else 1


def check_layout(model: ModelSpec, layout: TrainLayout, gpus: int | None = None) -> None:
    """One clear :class:`ConfigError` per bad input, naming the numbers (issue 5, "Bad input")."""
    lay = layout
    for name, v in (("tp", lay.tp), ("pp", lay.pp), ("dp", lay.dp), ("micro_batch", lay.micro_batch),
                    ("global_batch", lay.global_batch), ("seq", lay.seq), ("virtual_stages", lay.virtual_stages),
                    ("cp", lay.cp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"must be a whole number >= 1, got {v!r}", field=name, value=v)
    if gpus is not None and lay.gpus != gpus:
        cp = f" x cp {lay.cp}" if lay.cp > 1 else ""
        raise ConfigError(f"tp x pp x dp{' x cp' if cp else ''} = {lay.tp} x {lay.pp} x {lay.dp}"
                          f"{cp.replace(' cp', '')} = {lay.gpus} is not the GPU count {gpus}", field="gpus", value=gpus)
    if model.num_heads % lay.tp:
        raise ConfigError(f"{model.name}: {model.num_heads} attention heads are not divisible by tp={lay.tp}",
                          field="tp", value=lay.tp)
    if model.num_kv_heads % lay.tp and lay.tp % model.num_kv_heads:
        raise ConfigError(f"{model.name}: {model.num_kv_heads} KV heads and tp={lay.tp} do not divide each other",
                          field="tp", value=lay.tp)
    v = lay.chunks
    if lay.schedule is not Schedule.INTERLEAVED and lay.virtual_stages != 1:
        raise ConfigError(f"virtual stages ({lay.virtual_stages}) need --schedule interleaved, got "
                          f"{lay.schedule.value}", field="virtual_stages", value=lay.virtual_stages)
    if lay.schedule is Schedule.INTERLEAVED and lay.virtual_stages > 1 and lay.pp == 1:
        raise ConfigError(f"the interleaved schedule splits each pipeline stage into {lay.virtual_stages} virtual "
                          "stages and needs pp > 1 (Megatron-LM's rule); with pp=1 use --schedule 1f1b",
                          field="pp", value=lay.pp)
    if model.num_layers % (lay.pp * v):
        raise ConfigError(f"{model.name}: {model.num_layers} layers are not divisible by pp x virtual stages = "
                          f"{lay.pp} x {v} = {lay.pp * v}", field="pp", value=lay.pp)
    if lay.global_batch % (lay.dp * lay.micro_batch):
        raise ConfigError(f"global batch {lay.global_batch} is not divisible by dp x micro-batch = "
                          f"{lay.dp} x {lay.micro_batch} = {lay.dp * lay.micro_batch}", field="global_batch",
                          value=lay.global_batch)
    if lay.schedule is Schedule.INTERLEAVED and lay.pp > 1 and lay.num_micro_batches % lay.pp:
        raise ConfigError(f"the interleaved schedule needs the micro-batches per replica "
                          f"({lay.num_micro_batches}) to be a multiple of pp={lay.pp} (Megatron-LM's rule)",
                          field="global_batch", value=lay.global_batch)
    if lay.zero not in (0, 1, 2, 3):
        raise ConfigError(f"ZeRO stage must be 0, 1, 2 or 3, got {lay.zero!r}", field="zero", value=lay.zero)
    if lay.cp > 1:
        _check_cp(model, lay)
    if lay.sequence_parallel and (lay.seq // lay.cp) % lay.tp:
        local = f" (seq {lay.seq} / cp {lay.cp})" if lay.cp > 1 else ""
        raise ConfigError(f"sequence parallelism splits seq {lay.seq // lay.cp}{local} over tp={lay.tp}: "
                          f"not divisible", field="seq", value=lay.seq)


def _check_cp(model: ModelSpec, lay: TrainLayout) -> None:
    """Context parallelism's conditions (Megatron-Core / Transformer Engine): the sequence splits evenly
    (ring: into ``2 cp`` chunks, the load-balanced causal split); Ulysses' all-to-all re-splits each
    rank's heads over CP; ring attention runs FlashAttention blocks."""
    cp = lay.cp
    if not isinstance(lay.cp_impl, CPImpl):
        raise ConfigError(f"context parallelism is ulysses or ring, got {lay.cp_impl!r}", field="cp_impl",
                          value=lay.cp_impl)
    if lay.cp_impl is CPImpl.RING:
        if lay.seq % (2 * cp):
            raise ConfigError(f"ring attention splits seq {lay.seq} into 2 x cp = {2 * cp} chunks (the "
                              f"load-balanced causal split): not divisible", field="seq", value=lay.seq)
        if lay.attention is not AttentionImpl.FLASH:
            raise ConfigError("ring attention runs FlashAttention blocks (Transformer Engine); "
                              f"--attention {lay.attention.value} is not supported with it",
                              field="attention", value=lay.attention.value)
        return
    if lay.seq % cp:
        raise ConfigError(f"context parallelism splits seq {lay.seq} over cp={cp}: not divisible",
                          field="seq", value=lay.seq)
    q_heads = model.num_heads // lay.tp
    if q_heads % cp:
        raise ConfigError(f"Ulysses splits the {q_heads} attention heads per TP rank ({model.num_heads} / "
                          f"tp {lay.tp}) over cp={cp}: not divisible", field="cp", value=cp)
    kv = max(1, model.num_kv_heads // lay.tp)
    if kv % cp and cp % kv:
        raise ConfigError(f"Ulysses splits the {kv} KV heads per TP rank over cp={cp} (or replicates them "
                          f"to cp): they do not divide each other", field="cp", value=cp)


# ---- models -----------------------------------------------------------------------------------
_GPT_KEYS = ("layers", "hidden", "heads", "vocab")


def parse_gpt(text: str, seq: int = 2048) -> ModelSpec:
    """``gpt:layers=128,hidden=25600,heads=160,vocab=51200``: a Megatron GPT (LayerNorm, GeLU MLP of
    4 x hidden, biases, learned positions over ``seq``, tied input/output embedding)."""
    body = text.split(":", 1)[1] if ":" in text else ""
    fields: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        m = re.fullmatch(r"([a-z_]+)\s*=\s*([0-9]+)", part)
        if not m:
            raise ConfigError(f"not key=integer: {part!r} (e.g. gpt:layers=96,hidden=12288,heads=96,vocab=51200)",
                              field="model", value=text)
        if m.group(1) not in _GPT_KEYS:
            raise ConfigError(f"unknown GPT field {m.group(1)!r}; known: {', '.join(_GPT_KEYS)}", field="model",
                              value=text)
        fields[m.group(1)] = int(m.group(2))
    missing = [k for k in _GPT_KEYS if k not in fields]
    if missing:
        raise ConfigError(f"inline GPT model lacks {', '.join(missing)}", field="model", value=text)
    h, a = fields["hidden"], fields["heads"]
    if min(fields.values()) < 1 or h % a:
        raise ConfigError(f"hidden {h} must be a positive multiple of heads {a}", field="model", value=text)
    return ModelSpec(name=text, num_layers=fields["layers"], hidden_size=h, num_heads=a, num_kv_heads=a,
                     head_dim=h // a, intermediate_size=4 * h, vocab_size=fields["vocab"], gated_mlp=False,
                     norm=Norm.LAYER, position=Position.LEARNED, tied_embeddings=True, qkv_bias=True,
                     out_bias=True, mlp_bias=True, max_position_embeddings=seq, activation=Activation.GELU,
                     source="inline Megatron GPT")


def load_train_model(text: str, seq: int = 2048) -> ModelSpec:
    """An inline ``gpt:...`` model or any catalog name / HF id / config file."""
    if text.strip().lower().startswith("gpt:"):
        return parse_gpt(text.strip(), seq)
    from workloads.catalog import load_model

    return load_model(text)


# ---- the ops of one layer ----------------------------------------------------------------------
@dataclass(frozen=True)
class LayerPasses:
    """A layer's ops per micro-batch: forward, backward, and what recompute re-runs before backward."""

    forward: tuple[TrainOp, ...]
    backward: tuple[TrainOp, ...]
    recompute: tuple[TrainOp, ...]


def _mem(name: str, kind: OpKind, tokens: int, read: float, write: float, flops: float = 0.0) -> TrainOp:
    return TrainOp(MemoryOp(name, kind, tokens, read, write, flops=flops))


def _gemm_bwd(g: Gemm, weight: bool = True) -> list[TrainOp]:
    """dX[m, k] = dY[m, n] W^T and dW[k, n] = X^T dY: two GEMMs of the forward's FLOPs; a weight's
    gradient accumulates into the fp32 ``main_grad`` (Megatron's gradient-accumulation fusion), the
    attention core's B operand (K, V: activations) gets a plain 16-bit gradient (``weight=False``)."""
    return [TrainOp(Gemm(f"{g.name}_dgrad", g.m, g.k, g.n, g.dtype)),
            TrainOp(Gemm(f"{g.name}_wgrad", g.k, g.n, g.m, g.dtype), fp32_accumulate=weight)]


def _bias_grad(name: str, rows: int, cols: int, eb: int) -> TrainOp:
    """A bias gradient: the sum over the rows of the incoming gradient (Megatron's ``grad_output.sum(dim=0)``
    in the linear layer's backward, or autograd's reduction of the fused bias-GeLU / bias-dropout-add
    kernels' broadcast bias): one read of ``rows x cols`` elements, ``cols`` fp32 written."""
    return _mem(f"{name}_bias_grad", OpKind.ELEMENTWISE, rows, rows * cols * eb, cols * 4.0, float(rows * cols))


def _mem_bwd(op: TrainOp) -> TrainOp:
    """A memory-bound op's backward: reads the incoming gradient and the saved input, writes a gradient."""
    m = op.op
    assert isinstance(m, MemoryOp)
    return _mem(f"{m.name}_bwd", m.kind, m.tokens, m.bytes_read + m.bytes_written, m.bytes_read, m.flops)


def layer_passes(model: ModelSpec, layout: TrainLayout) -> LayerPasses:
    """The ops of one transformer layer for one micro-batch on one GPU of its TP group (with context
    parallelism, on its ``seq / cp`` tokens)."""
    t, b, s = layout.tp, layout.micro_batch, layout.seq // layout.cp
    h, d = model.hidden_size, model.head_dim
    q_heads = model.num_heads // t
    kv_heads = max(1, model.num_kv_heads // t)
    dt, gdt = layout.act_dtype, layout.gemm_dtype
    eb = dt.bytes
    tok = s * b                                   # rows of every GEMM
    sp = layout.sequence_parallel and t > 1
    ln_tok = tok // t if sp else tok              # rows of the sequence-parallel regions
    act = tok * h * eb                            # one [s, b, h] tensor
    ln_act = ln_tok * h * eb
    ffn = model.intermediate_size // t
    mats = 2 if model.gated_mlp else 1

    def tp_comm(name: str, pos: Literal["f", "g"]) -> list[TrainOp]:
        if t <= 1:
            return []
        if not sp:
            return [TrainOp(comm=TPComm(name, "all_reduce", act, t))] if pos == "g" else []
        kind: CommKind = "all_gather" if pos == "f" else "reduce_scatter"
        return [TrainOp(comm=TPComm(name, kind, act, t))]

    def tp_comm_bwd(name: str, pos: Literal["f", "g"]) -> list[TrainOp]:
        # the conjugate of position f is g and vice versa (Megatron's f/g operators; Korthikanti Fig. 5)
        return tp_comm(f"{name}_bwd", "g" if pos == "f" else "f")

    qkv = Gemm("qkv_proj", tok, (q_heads + 2 * kv_heads) * d, h, gdt)
    o = Gemm("attn_out_proj", tok, h, q_heads * d, gdt)
    fc1 = Gemm("mlp_fc1", tok, mats * ffn, h, gdt)
    fc2 = Gemm("mlp_fc2", tok, h, ffn, gdt)
    ln1 = _mem("input_layernorm", OpKind.NORM, ln_tok, ln_act, ln_act, 5.0 * ln_tok * h)
    ln2 = _mem("post_attention_layernorm", OpKind.NORM, ln_tok, ln_act, ln_act, 5.0 * ln_tok * h)
    # bias + dropout + residual add (Megatron's fused kernel): reads x, residual; writes out and a 1-byte mask
    bda1 = _mem("attn_bias_dropout_add", OpKind.ADD, ln_tok, 2 * ln_act, ln_act + ln_tok * h, 2.0 * ln_tok * h)
    bda2 = _mem("mlp_bias_dropout_add", OpKind.ADD, ln_tok, 2 * ln_act, ln_act + ln_tok * h, 2.0 * ln_tok * h)
    act_op = _mem("mlp_activation", OpKind.ACTIVATION, tok, mats * tok * ffn * eb, tok * ffn * eb,
                  8.0 * tok * ffn)

    core_fwd, core_bwd = _attention_core(layout, q_heads, kv_heads, d, model.position is Position.ROPE)
    fwd: list[TrainOp] = [ln1, *tp_comm("attn_in", "f"), TrainOp(qkv), *core_fwd, TrainOp(o),
                          *tp_comm("attn_out", "g"), bda1, ln2, *tp_comm("mlp_in", "f"), TrainOp(fc1), act_op,
                          TrainOp(fc2), *tp_comm("mlp_out", "g"), bda2]
    def bias(name: str, rows: int, cols: int, has: bool) -> list[TrainOp]:
        return [_bias_grad(name, rows, cols, eb)] if has else []

    # the row-parallel biases (O, FC2) are added in the bias-dropout-add on the (SP-split) rows; the
    # column-parallel ones (QKV, FC1: in the fused bias-GeLU) on all rows of this rank's columns
    bwd: list[TrainOp] = [_mem_bwd(bda2), *bias("mlp_fc2", ln_tok, h, model.mlp_bias),
                          *tp_comm_bwd("mlp_out", "g"), *_gemm_bwd(fc2), _mem_bwd(act_op),
                          *bias("mlp_fc1", tok, mats * ffn, model.mlp_bias), *_gemm_bwd(fc1),
                          *tp_comm_bwd("mlp_in", "f"), _mem_bwd(ln2), _mem_bwd(bda1),
                          *bias("attn_out_proj", ln_tok, h, model.out_bias), *tp_comm_bwd("attn_out", "g"),
                          *_gemm_bwd(o), *core_bwd, *bias("qkv_proj", tok, qkv.n, model.qkv_bias),
                          *_gemm_bwd(qkv), *tp_comm_bwd("attn_in", "f"), _mem_bwd(ln1)]
    if layout.recompute is Recompute.FULL:
        rec = tuple(fwd)
    elif layout.recompute is Recompute.SELECTIVE and layout.attention is AttentionImpl.UNFUSED:
        rec = tuple(core_fwd)
    else:
        rec = ()
    return LayerPasses(tuple(fwd), tuple(bwd), rec)


def _attention_core(layout: TrainLayout, q_heads: int, kv_heads: int, d: int,
                    rope: bool) -> tuple[list[TrainOp], list[TrainOp]]:
    """The attention core of one layer on one GPU (``q_heads`` / ``kv_heads`` per TP rank): RoPE on the
    GPU's own tokens, then the core itself (``cp = 1``), or its context-parallel form (:func:`_ulysses`,
    :func:`_ring`)."""
    b, dt, cp = layout.micro_batch, layout.act_dtype, layout.cp
    eb = dt.bytes
    tok = layout.seq // cp * b
    pre: list[TrainOp] = []
    if rope:
        rb = tok * (q_heads + kv_heads) * d * eb
        pre = [_mem("rope", OpKind.ROPE, tok, rb, rb, 3.0 * tok * (q_heads + kv_heads) * d)]
    if cp == 1:
        fwd, bwd = _core(layout, layout.seq, q_heads, kv_heads, d)
    elif layout.cp_impl is CPImpl.ULYSSES:
        fwd, bwd = _ulysses(layout, q_heads, kv_heads, d)
    else:
        fwd, bwd = _ring(layout, q_heads, kv_heads, d)
    return [*pre, *fwd], [*bwd, *[_mem_bwd(p) for p in pre]]


def _core(layout: TrainLayout, s: int, q_heads: int, kv_heads: int,
          d: int) -> tuple[list[TrainOp], list[TrainOp]]:
    """Causal attention of ``micro_batch`` sequences of ``s`` tokens over ``q_heads`` heads."""
    b, dt = layout.micro_batch, layout.act_dtype
    eb = dt.bytes
    tok = s * b
    if layout.attention is AttentionImpl.FLASH:
        fa = PrefillAttention("flash_attention", q_heads, kv_heads, d, ((s, s),) * b, dt, causal=True,
                              paged=False)
        return ([TrainOp(fa)],
                [TrainOp(PrefillAttention("flash_attention_bwd", q_heads, kv_heads, d, ((s, s),) * b, dt,
                                          causal=True, paged=False), scale=2.5)])
    batches = b * q_heads
    scores = batches * s * s                       # elements of the s x s score matrices
    qk = Gemm("attn_qk", batches * s, s, d, dt)    # batched: b a/t GEMMs of s x s x d, stacked along m
    pv = Gemm("attn_pv", batches * s, d, s, dt)
    softmax = _mem("scale_mask_softmax", OpKind.ELEMENTWISE, tok, scores * eb, scores * eb, 5.0 * scores)
    dropout = _mem("attn_dropout", OpKind.ELEMENTWISE, tok, scores * eb, scores * (eb + 1), float(scores))
    # the context [b a/t, s, d] back to [s, b, h/t]: Megatron's ``context_layer.permute(2, 0, 1, 3).contiguous()``,
    # a copy; its backward is the inverse permute-copy of the gradient
    ctx_b = tok * q_heads * d * eb
    ctx_copy = _mem("context_permute", OpKind.ELEMENTWISE, tok, ctx_b, ctx_b)
    fwd = [TrainOp(qk), softmax, dropout, TrainOp(pv), ctx_copy]
    # backward: dP = dO V^T, dV = P^T dO (PV's two gradients), dropout and softmax backward (read the
    # gradient and the saved output / mask), dQ = dS K, dK = dS^T Q (QK^T's two gradients)
    bwd = [_mem("context_permute_bwd", OpKind.ELEMENTWISE, tok, ctx_b, ctx_b), *_gemm_bwd(pv, False), _mem_bwd(dropout),
           _mem_bwd(softmax), *_gemm_bwd(qk, False)]
    return fwd, bwd


def ulysses_all_to_all_bytes(layout: TrainLayout, q_heads: int, kv_heads: int, d: int) -> tuple[float, float]:
    """(Q or output, K or V): each GPU's send buffer of one Ulysses all-to-all (nccl-tests' all-to-all
    size), bytes. Before the core, a GPU holds its ``s/cp`` tokens of all its ``a/t`` heads and needs all
    ``s`` tokens of ``a/(t cp)`` heads: ``(s/cp) b (a/t) d`` elements out (``(cp-1)/cp`` of them to the
    other ranks), the same back for the output. K and V carry the KV heads per TP rank, replicated up
    to ``cp`` heads when fewer (GQA with fewer KV heads than ranks): ``(s/cp) b max(kv/t, cp) d``."""
    tok = layout.seq // layout.cp * layout.micro_batch
    eb = layout.act_dtype.bytes
    return float(tok * q_heads * d * eb), float(tok * max(kv_heads, layout.cp) * d * eb)


def _ulysses(layout: TrainLayout, q_heads: int, kv_heads: int, d: int) -> tuple[list[TrainOp], list[TrainOp]]:
    """DeepSpeed-Ulysses (Jacobs et al. 2023, arXiv:2309.14509, Sec. 3.1): all-to-alls of Q, K and V
    from sequence-split to head-split, the core on the full sequence with ``a/(t cp)`` heads, an
    all-to-all of the output back; backward the conjugates (the output's gradient in, Q, K, V's out):
    4 all-to-alls each way, sizes from :func:`ulysses_all_to_all_bytes`."""
    cp = layout.cp
    qb, kvb = ulysses_all_to_all_bytes(layout, q_heads, kv_heads, d)

    def a2a(name: str, nbytes: float) -> TrainOp:
        return TrainOp(comm=TPComm(name, "all_to_all", nbytes, cp, "cp"))

    fwd, bwd = _core(layout, layout.seq, q_heads // cp, max(kv_heads, cp) // cp, d)
    return ([a2a("cp_q", qb), a2a("cp_k", kvb), a2a("cp_v", kvb), *fwd, a2a("cp_out", qb)],
            [a2a("cp_out_bwd", qb), *bwd, a2a("cp_q_bwd", qb), a2a("cp_k_bwd", kvb), a2a("cp_v_bwd", kvb)])


def _ring(layout: TrainLayout, q_heads: int, kv_heads: int, d: int) -> tuple[list[TrainOp], list[TrainOp]]:
    """Ring attention (Liu et al. 2023, arXiv:2310.01889) as Megatron-Core runs it (Transformer Engine's
    ``AttnFuncWithCPAndKVP2P``), with the load-balanced causal split: the sequence is cut into ``2 cp``
    chunks of ``c = s/(2 cp)`` tokens, rank ``i`` holds chunks ``i`` and ``2cp-1-i`` (``n = 2c`` tokens).
    ``cp`` steps; at step ``k`` rank ``i`` holds the K/V of rank ``j = i - k``: step 0 (``j = i``) is
    causal attention of its ``n`` queries over its ``n`` keys (``n (n+1)/2`` pairs); for ``j < i`` all
    ``n`` queries see chunk ``j`` only, for ``j > i`` the second chunk's ``c`` queries see all ``n`` keys:
    ``c n = n^2/2`` pairs either way, so every step is half of the ``n x n`` block, 4 (a/t) d n^2/2 FLOPs
    per sequence (costed as the ``c x n`` unmasked kernel). From step 1 the partial output is merged into
    the running one (a memory pass: read the step's output and the fp32 accumulator, write it).
    While a step computes, the next K/V block, ``2 n b (kv/t) d`` bytes, goes to the next rank.
    Backward: the same blocks, each FlashAttention's backward (2.5 x) plus the fp32 accumulation of the
    block's dQ and dK/dV; the K/V block and the dK/dV accumulator (the same size) travel together, 2 x the
    forward's bytes per step, and after the last step the dK/dV accumulator's last hop to its owner."""
    cp, b, dt = layout.cp, layout.micro_batch, layout.act_dtype
    eb = dt.bytes
    n = layout.seq // cp
    c = n // 2
    tok = n * b
    diag = PrefillAttention("ring_attention_diag", q_heads, kv_heads, d, ((n, n),) * b, dt, causal=True,
                            paged=False)
    off = PrefillAttention("ring_attention_block", q_heads, kv_heads, d, ((c, n),) * b, dt, causal=False,
                           paged=False)
    off_flops = 4.0 * b * q_heads * d * c * n
    q_el = tok * q_heads * d
    kv_el = 2 * tok * kv_heads * d
    merge = _mem("ring_out_correction", OpKind.ELEMENTWISE, tok, q_el * (eb + 4.0), q_el * 4.0, 4.0 * q_el)
    acc = _mem("ring_grad_accumulate", OpKind.ELEMENTWISE, tok, (q_el + kv_el) * (eb + 4.0),
               (q_el + kv_el) * 4.0, float(q_el + kv_el))
    kv_block = float(kv_el * eb)

    def bwd(op: PrefillAttention) -> TrainOp:
        return TrainOp(PrefillAttention(f"{op.name}_bwd", q_heads, kv_heads, d, op.seqs, dt, causal=op.causal,
                                        paged=False), scale=2.5)

    f_steps = ((TrainOp(diag),), *(((TrainOp(off), merge),) * (cp - 1)))
    b_steps = ((bwd(diag), acc), *(((bwd(off), acc),) * (cp - 1)))
    flops = float(diag.flops) + (cp - 1) * off_flops
    fwd = RingAttention("ring_attention", f_steps, kv_block, cp, flops)
    back = RingAttention("ring_attention_bwd", b_steps, 2 * kv_block, cp, 2.5 * flops, tail_bytes=kv_block)
    return [TrainOp(ring=fwd)], [TrainOp(ring=back)]


def head_passes(model: ModelSpec, layout: TrainLayout) -> tuple[LayerPasses, LayerPasses]:
    """(first stage extras, last stage extras): the embedding lookup; the final norm, LM head GEMM
    (vocab split over TP) and cross-entropy (fp32 logits), on the GPU's ``seq / cp`` tokens. Recompute
    never covers them (Megatron)."""
    t, b, s = layout.tp, layout.micro_batch, layout.seq // layout.cp
    h, dt = model.hidden_size, layout.act_dtype
    eb = dt.bytes
    tok = s * b
    sp = layout.sequence_parallel and t > 1
    ln_tok = tok // t if sp else tok
    emb = _mem("embedding", OpKind.EMBEDDING, tok, tok * h * eb + tok * 8, tok * h * eb)
    first = LayerPasses((emb,), (_mem("embedding_bwd", OpKind.ELEMENTWISE, tok, 2 * tok * h * eb, tok * h * 4),),
                        ())
    vocab = math.ceil(model.vocab_size / t)
    lm = Gemm("lm_head", tok, vocab, h, dt)
    ln = _mem("final_layernorm", OpKind.NORM, ln_tok, ln_tok * h * eb, ln_tok * h * eb, 5.0 * ln_tok * h)
    # Megatron's vocab-parallel cross-entropy (``_VocabParallelCrossEntropy`` on ``logits.float()``), passes over
    # the [tokens, V/t] logits: the fp32 copy (read 16-bit, write 4 B), max (read 4), subtract the max in
    # place (4 + 4), exp in place (4 + 4), sum (4), divide by the sum in place (4 + 4; the softmax kept for
    # backward). Backward: the gradient scaled in place by the loss gradient (4 + 4), then cast back to
    # the GEMM's dtype (4 + eb). The all-reduces of [tokens] max / sum / target logit are not costed.
    n_logit = tok * vocab
    ce = _mem("cross_entropy", OpKind.ELEMENTWISE, tok, n_logit * (eb + 20), n_logit * 16.0, 5.0 * n_logit)
    ce_bwd = _mem("cross_entropy_bwd", OpKind.ELEMENTWISE, tok, n_logit * 8.0, n_logit * (4.0 + eb),
                  float(n_logit))
    comm = [TrainOp(comm=TPComm("lm_head_in", "all_gather", tok * h * eb, t))] if sp else []
    last = LayerPasses((ln, *comm, TrainOp(lm), ce),
                       (ce_bwd, *_gemm_bwd(lm), _mem_bwd(ln)), ())
    return first, last


def model_flops_per_iteration(model: ModelSpec, layout: TrainLayout, recompute: Recompute | None = None) -> float:
    """Megatron's FLOP count of one iteration (Narayanan et al. 2021, "Efficient Large-Scale Language
    Model Training on GPU Clusters Using Megatron-LM", Sec. 5.1, Appendix): ``72 B s l h^2 (1 + s/(6h) +
    V/(12 l h))`` without recompute (forward 1x, backward 2x). ``recompute`` counts what the hardware
    also runs: full adds a forward of the layers (the 96 form, ``96 B s l h^2 (1 + s/(6h) + V/(16 l h))``);
    selective adds the attention core's forward (4 B s^2 h per layer: Korthikanti et al. 2022 Sec. 5) with
    the unfused core; with FlashAttention there is nothing to recompute selectively (its backward
    recomputes the scores inside the kernel, which the 2.5x backward already costs), so none is counted,
    as :func:`layer_passes` runs none. The formula is that of a GPT (FFN 4h, full MHA); other models use
    the same form with their h."""
    B, s, L, h, V = layout.global_batch, layout.seq, model.num_layers, model.hidden_size, model.vocab_size
    base = 72.0 * B * s * L * h * h * (1.0 + s / (6.0 * h) + V / (12.0 * L * h))
    if recompute is Recompute.FULL:
        return 96.0 * B * s * L * h * h * (1.0 + s / (6.0 * h) + V / (16.0 * L * h))
    if recompute is Recompute.SELECTIVE and layout.attention is AttentionImpl.UNFUSED:
        return base + 4.0 * B * s * s * h * L
    return base
