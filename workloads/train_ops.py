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


CommKind = Literal["all_reduce", "all_gather", "reduce_scatter"]


@dataclass(frozen=True)
class TPComm:
    """A tensor-parallel collective inside a layer: ``nbytes`` is nccl-tests' size (the per-rank
    buffer of an all-reduce, the whole gathered / scattered buffer of all-gather / reduce-scatter)."""

    name: str
    collective: CommKind
    nbytes: float
    group: int


@dataclass(frozen=True)
class TrainOp:
    """One kernel (or collective) of a layer's pass: ``op`` is costed by the kernel model and scaled by
    ``scale`` (FlashAttention's backward: 2.5 x its forward); ``comm`` is a TP collective instead."""

    op: Op | None = None
    comm: TPComm | None = None
    scale: float = 1.0
    # a weight-gradient GEMM that accumulates into Megatron's fp32 ``main_grad`` (C read and written in
    # fp32, beta = 1: apex ``fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32``, Megatron-LM's
    # ``--gradient-accumulation-fusion`` in ``LinearWithGradAccumulationAndAsyncCommunication``)
    fp32_accumulate: bool = False

    @property
    def name(self) -> str:
        if self.op is not None:
            return self.op.name
        assert self.comm is not None
        return self.comm.name

    @property
    def flops(self) -> float:
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
    def chunks(self) -> int:
        """Model chunks per pipeline stage (virtual stages of the interleaved schedule, else 1)."""
        return self.virtual_stages if self.schedule is Schedule.INTERLEAVED else 1


def check_layout(model: ModelSpec, layout: TrainLayout, gpus: int | None = None) -> None:
    """One clear :class:`ConfigError` per bad input, naming the numbers (issue 5, "Bad input")."""
    lay = layout
    for name, v in (("tp", lay.tp), ("pp", lay.pp), ("dp", lay.dp), ("micro_batch", lay.micro_batch),
                    ("global_batch", lay.global_batch), ("seq", lay.seq), ("virtual_stages", lay.virtual_stages)):
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
    if lay.sequence_parallel and lay.seq % lay.tp:
        raise ConfigError(f"sequence parallelism splits seq {lay.seq} over tp={lay.tp}: not divisible",
                          field="seq", value=lay.seq)


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
    """The ops of one transformer layer for one micro-batch on one GPU of its TP group."""
    t, b, s = layout.tp, layout.micro_batch, layout.seq
    h, d = model.hidden_size, model.head_dim
    q_heads = model.num_heads // t
    kv_heads = max(1, model.num_kv_heads // t)
    dt = layout.dtype
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

    qkv = Gemm("qkv_proj", tok, (q_heads + 2 * kv_heads) * d, h, dt)
    o = Gemm("attn_out_proj", tok, h, q_heads * d, dt)
    fc1 = Gemm("mlp_fc1", tok, mats * ffn, h, dt)
    fc2 = Gemm("mlp_fc2", tok, h, ffn, dt)
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
    b, s, dt = layout.micro_batch, layout.seq, layout.dtype
    eb = dt.bytes
    tok = s * b
    pre: list[TrainOp] = []
    if rope:
        rb = tok * (q_heads + kv_heads) * d * eb
        pre = [_mem("rope", OpKind.ROPE, tok, rb, rb, 3.0 * tok * (q_heads + kv_heads) * d)]
    if layout.attention is AttentionImpl.FLASH:
        fa = PrefillAttention("flash_attention", q_heads, kv_heads, d, ((s, s),) * b, dt, causal=True,
                              paged=False)
        return ([*pre, TrainOp(fa)],
                [TrainOp(PrefillAttention("flash_attention_bwd", q_heads, kv_heads, d, ((s, s),) * b, dt,
                                          causal=True, paged=False), scale=2.5),
                 *[_mem_bwd(p) for p in pre]])
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
    fwd = [*pre, TrainOp(qk), softmax, dropout, TrainOp(pv), ctx_copy]
    # backward: dP = dO V^T, dV = P^T dO (PV's two gradients), dropout and softmax backward (read the
    # gradient and the saved output / mask), dQ = dS K, dK = dS^T Q (QK^T's two gradients)
    bwd = [_mem("context_permute_bwd", OpKind.ELEMENTWISE, tok, ctx_b, ctx_b), *_gemm_bwd(pv, False), _mem_bwd(dropout),
           _mem_bwd(softmax), *_gemm_bwd(qk, False), *[_mem_bwd(p) for p in pre]]
    return fwd, bwd


def head_passes(model: ModelSpec, layout: TrainLayout) -> tuple[LayerPasses, LayerPasses]:
    """(first stage extras, last stage extras): the embedding lookup; the final norm, LM head GEMM
    (vocab split over TP) and cross-entropy (fp32 logits). Recompute never covers them (Megatron)."""
    t, b, s = layout.tp, layout.micro_batch, layout.seq
    h, dt = model.hidden_size, layout.dtype
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
    selective adds the attention core's forward (4 B s^2 h per layer: Korthikanti et al. 2022 Sec. 5).
    The formula is that of a GPT (FFN 4h, full MHA); other models use the same form with their h."""
    B, s, L, h, V = layout.global_batch, layout.seq, model.num_layers, model.hidden_size, model.vocab_size
    base = 72.0 * B * s * L * h * h * (1.0 + s / (6.0 * h) + V / (12.0 * L * h))
    if recompute is Recompute.FULL:
        return 96.0 * B * s * L * h * h * (1.0 + s / (6.0 * h) + V / (16.0 * L * h))
    if recompute is Recompute.SELECTIVE:
        return base + 4.0 * B * s * s * h * L
    return base
