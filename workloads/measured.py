"""Readers for measured per-kernel timing files, each row turned into the ops that simulate it.

A reader returns :class:`MeasuredFile`: records of ``(op name, ops, measured seconds, line)``. The ops
are built with the file's own shapes (the ``lss-*`` formats carry no model shapes: they take a
:class:`ModelSpec` and a TP degree). Every format describes one software stack, and the ops say how
that stack implements the layer (fused vLLM kernels, or eager HuggingFace PyTorch with its unfused
elementwise chains), because that, not the GPU, decides how many bytes move and how many kernels run.

Formats (see ``../shared/data/README.md`` for the files themselves):

``vidur-mlp``          Vidur profiler ``mlp.csv``: vLLM kernels, fp16, CUDA events per op, ms (median).
``vidur-attention``    Vidur-format ``attention.csv``: prefill / decode attention, ms (median).
                       ``kv_cache_size`` of a decode row is the batch's total KV tokens (split evenly):
                       batch 2 over 4096 takes what batch 1 over 2048 does. Rows with fewer KV tokens
                       than sequences measure an empty kernel and are skipped. The kernel (A6000 file,
                       FLASH_ATTENTION): FlashAttention-2's forward kernel on contiguous K/V, not
                       causal (every query tile walks all keys: chunk = KV = 640 takes twice 32 x 640),
                       decodes as one-row queries per query head, neither GQA-packed nor split.
``lss-layers``         LLMServingSim v0 ``layers.csv``: eager HuggingFace modules, ns.
``lss-dense``          LLMServingSim perf ``dense.csv`` (vLLM 0.19, bf16, eager), µs.
``lss-attention``      LLMServingSim perf ``attention.csv``: one varlen FlashAttention call over a chunk
                       of ``prefill_chunk`` new tokens after ``kv_prefill`` cached ones plus
                       ``n_decode`` decodes of ``kv_decode`` cached tokens each (each decode's
                       sequence is ``kv_decode + 1`` keys: the step at kv_decode 128 is a second
                       128-key tile), µs. vLLM 0.19 FlashAttention backend (FA2 on Ada, paged KV).
``llmcompass-matmul``  LLMCompass ``matmul_A100.csv``: ``M, N, K, <t>ms, <x>Tflops`` fp16 GEMMs timed
                       by wall clock around each call (so they include the host launch and sync).
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import WorkloadError
from workloads.llm_ops import Batch, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DecodeAttention, DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention


class Timing(enum.Enum):
    """How a file timed its kernels: device-side events, or host wall clock around a synchronised call."""

    DEVICE = "device"
    WALL_CLOCK = "wall_clock"


@dataclass(frozen=True)
class MeasuredOp:
    """One measured value and the ops whose summed time simulates it."""

    op: str
    ops: tuple[Op, ...]
    seconds: float
    line: int


@dataclass(frozen=True)
class MeasuredFile:
    format: str
    path: str
    records: tuple[MeasuredOp, ...]
    timing: Timing = Timing.DEVICE
    needs_model: bool = False
    skipped: tuple[tuple[str, int], ...] = ()   # (row name, rows) the model has no op for, e.g. a new layer


FORMATS: dict[str, Callable[..., MeasuredFile]] = {}
MODEL_FORMATS = {"lss-layers", "lss-dense", "lss-attention"}


def register_format(name: str) -> Callable[[Callable[..., MeasuredFile]], Callable[..., MeasuredFile]]:
    def register(fn: Callable[..., MeasuredFile]) -> Callable[..., MeasuredFile]:
        if name in FORMATS:
            raise ValueError(f"duplicate measured format {name!r}")
        FORMATS[name] = fn
        return fn
    return register


def read_measured(fmt: str, path: str | Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Read ``path`` in format ``fmt``; ``model`` and ``tp`` are needed by the ``lss-*`` formats."""
    if fmt not in FORMATS:
        raise WorkloadError(f"unknown measured format {fmt!r}; known: {', '.join(sorted(FORMATS))}",
                            file=str(path))
    p = Path(path)
    if not p.is_file():
        raise WorkloadError("file not found", file=str(p))
    if fmt in MODEL_FORMATS and model is None:
        raise WorkloadError(f"format {fmt} carries no model shapes: give the model (--model)", file=str(p))
    return FORMATS[fmt](p, model=model, tp=tp)


# ---- CSV plumbing ---------------------------------------------------------------------------------

class CsvRows:
    """Iterates a header CSV as (line number, row) and reads typed cells with located errors."""

    def __init__(self, path: Path, required: set[str]) -> None:
        self.path = path
        try:
            self._fh = path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise WorkloadError(f"cannot read: {exc.strerror}", file=str(path)) from None
        self._reader = csv.DictReader(self._fh)
        header = self._reader.fieldnames or []
        missing = sorted(required - set(header))
        if missing:
            self._fh.close()
            raise WorkloadError(f"missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}",
                                file=str(path), line=1, column=missing[0])
        self.line = 1

    def __iter__(self) -> Iterator[dict[str, str]]:
        try:
            for row in self._reader:
                self.line = self._reader.line_num
                yield row
        finally:
            self._fh.close()

    def _cell(self, row: dict[str, str], col: str) -> str:
        return (row.get(col) or "").strip()

    def _check(self, raw: str, col: str, *, integer: bool, minimum: float) -> float:
        try:
            v = float(raw)
        except ValueError:
            raise WorkloadError(f"not a number: {raw!r}", file=str(self.path), line=self.line,
                                column=col) from None
        if not math.isfinite(v) or v < minimum or (integer and not v.is_integer()):
            kind = "an integer" if integer else "a number"
            raise WorkloadError(f"must be {kind} >= {minimum:g}, got {raw!r}", file=str(self.path),
                                line=self.line, column=col)
        return v

    def number(self, row: dict[str, str], col: str, *, minimum: float = 0.0) -> float:
        """The cell as a finite number >= ``minimum``."""
        return self._check(self._cell(row, col), col, integer=False, minimum=minimum)

    def opt_number(self, row: dict[str, str], col: str, *, minimum: float = 0.0) -> float | None:
        """As :meth:`number`, or None for a blank cell."""
        raw = self._cell(row, col)
        if raw == "":
            return None
        return self._check(raw, col, integer=False, minimum=minimum)

    def integer(self, row: dict[str, str], col: str, *, minimum: float = 0.0) -> int:
        """The cell as an integer >= ``minimum`` (``2.0`` is 2)."""
        return int(self._check(self._cell(row, col), col, integer=True, minimum=minimum))

    def flag(self, row: dict[str, str], col: str) -> bool:
        raw = (row.get(col) or "").strip().lower()
        if raw in ("true", "1"):
            return True
        if raw in ("false", "0"):
            return False
        raise WorkloadError(f"not a boolean: {raw!r}", file=str(self.path), line=self.line, column=col)


def positive_time(value: float, rows: CsvRows, col: str) -> float:
    if value <= 0:
        raise WorkloadError(f"time must be > 0, got {value!r}", file=str(rows.path), line=rows.line, column=col)
    return value


# ---- vidur-mlp ------------------------------------------------------------------------------------

VIDUR_MLP_OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
                 "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
_VIDUR_SHAPES = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
                 "num_tokens", "num_tensor_parallel_workers")


@register_format("vidur-mlp")
def read_vidur_mlp(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Each row: one layer's ops for ``num_tokens`` tokens at TP ``num_tensor_parallel_workers``.

    The ops are :func:`workloads.llm_ops.layer_ops` of a model with the row's shapes (fp16), so the
    file also checks the op graph the serving simulation uses."""
    rows = CsvRows(path, set(_VIDUR_SHAPES))
    records: list[MeasuredOp] = []
    for row in rows:
        heads = rows.integer(row, "n_head", minimum=1)
        hidden = rows.integer(row, "n_embd", minimum=1)
        spec = ModelSpec(name="vidur-row", num_layers=1, hidden_size=hidden, num_heads=heads,
                         num_kv_heads=rows.integer(row, "n_kv_head", minimum=1),
                         head_dim=hidden // heads,
                         intermediate_size=rows.integer(row, "n_expanded_embd", minimum=1),
                         vocab_size=rows.integer(row, "vocab_size", minimum=1),
                         gated_mlp=rows.flag(row, "use_gated_mlp"))
        t = rows.integer(row, "num_tokens", minimum=1)
        row_tp = rows.integer(row, "num_tensor_parallel_workers", minimum=1)
        if heads % row_tp:
            raise WorkloadError(f"{heads} heads not divisible by tp {row_tp}", file=str(path), line=rows.line,
                                column="num_tensor_parallel_workers")
        batch = Batch(prefill=((t, t),))
        by_name = {op.name: op for op in layer_ops(spec, batch, row_tp, DType.FP16)}
        by_name.update({op.name: op for op in head_ops(spec, batch, row_tp, DType.FP16)})
        for name in VIDUR_MLP_OPS:
            col = f"time_stats.{name}.median"
            if col not in row:
                continue
            v = rows.opt_number(row, col)
            if v is None:
                continue
            records.append(MeasuredOp(name, (by_name[name],), positive_time(v, rows, col) * 1e-3, rows.line))
    return MeasuredFile("vidur-mlp", str(path), tuple(records))


# ---- vidur-attention ------------------------------------------------------------------------------

@register_format("vidur-attention")
def read_vidur_attention(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Prefill rows: one sequence of ``prefill_chunk_size`` new tokens over ``kv_cache_size`` tokens
    (chunk included when it is at least the chunk, as the files store it). Decode rows: ``batch_size``
    sequences sharing ``kv_cache_size`` KV tokens. Both run FlashAttention-2's forward kernel on
    contiguous K/V without causal tile skipping; decodes are not GQA-packed nor KV-split (see the
    module docstring for the evidence in the times)."""
    cols = {"n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
            "prefill_chunk_size", "kv_cache_size", "is_prefill"}
    rows = CsvRows(path, cols)
    records: list[MeasuredOp] = []
    for row in rows:
        hidden = rows.integer(row, "n_embd", minimum=1)
        q_heads_all = rows.integer(row, "n_q_head", minimum=1)
        row_tp = rows.integer(row, "num_tensor_parallel_workers", minimum=1)
        hd = hidden // q_heads_all
        qh = q_heads_all // row_tp
        kvh = max(1, rows.integer(row, "n_kv_head", minimum=1) // row_tp)
        b = rows.integer(row, "batch_size", minimum=1)
        kv = rows.integer(row, "kv_cache_size")
        dtype = DType.FP16
        if rows.flag(row, "is_prefill"):
            col = "time_stats.attn_prefill.median"
            v = rows.opt_number(row, col)
            if v is None:
                continue
            chunk = rows.integer(row, "prefill_chunk_size", minimum=1)
            total = max(kv, chunk)
            op: Op = PrefillAttention("attn_prefill", qh, kvh, hd, ((chunk, total),) * b, dtype,
                                      causal=False, paged=False)
            records.append(MeasuredOp("attn_prefill", (op,), positive_time(v, rows, col) * 1e-3, rows.line))
        else:
            col = "time_stats.attn_decode.median"
            v = rows.opt_number(row, col)
            if v is None or kv < b:
                continue
            per = kv // b
            op = DecodeAttention("attn_decode", qh, kvh, hd, (per,) * b, dtype, pack_gqa=False, split_kv=False,
                                 paged=False)
            records.append(MeasuredOp("attn_decode", (op,), positive_time(v, rows, col) * 1e-3, rows.line))
    return MeasuredFile("vidur-attention", str(path), tuple(records))


# ---- lss-layers (eager HuggingFace) ---------------------------------------------------------------

def _hf_layer_ops(model: ModelSpec, t: int, tp: int, dtype: DType) -> dict[str, tuple[Op, ...]]:
    """The eager HuggingFace Llama layer as the kernels it launches.

    RMSNorm: to(fp32), pow, mean, add eps + rsqrt, mul, to(bf16), weight mul: 7 kernels moving
    36 bytes per element (bf16 in/out, fp32 temporaries). RoPE: q and k (transposed views) made
    contiguous, then ``q*cos + rotate_half(q)*sin`` (slice/neg, cat, two muls, add): 11 bytes-passes
    of q and k, 12 kernels. The SiLU row also carries the gate*up multiply (the times show it)."""
    b = dtype.bytes
    h = model.hidden_size
    qh = model.num_heads // tp
    kvh = max(1, model.num_kv_heads // tp)
    hd = model.head_dim
    ffn = model.intermediate_size // tp
    e = t * h
    norm = MemoryOp("norm", OpKind.ELEMENTWISE, t, 20.0 * e, 16.0 * e, flops=5.0 * e, kernels=7)
    qk = t * (qh + kvh) * hd * b
    rope = MemoryOp("rope", OpKind.ELEMENTWISE, t, 6.0 * qk, 5.0 * qk, flops=3.0 * t * (qh + kvh) * hd,
                    kernels=12)
    act = MemoryOp("act_fn", OpKind.ELEMENTWISE, t, 3.0 * t * ffn * b, 2.0 * t * ffn * b,
                   flops=5.0 * t * ffn, kernels=2)
    emb = MemoryOp("embedding", OpKind.EMBEDDING, t, e * b + 8 * t, e * b)
    attn = PrefillAttention("attn", qh, kvh, hd, ((t, t),), dtype)
    return {
        "embedding": (emb,), "input_layernorm": (norm,), "post_layernorm": (norm,),
        "final_layernorm": (norm,),
        "q_proj": (Gemm("q_proj", t, qh * hd, h, dtype),), "k_proj": (Gemm("k_proj", t, kvh * hd, h, dtype),),
        "v_proj": (Gemm("v_proj", t, kvh * hd, h, dtype),), "rope": (rope,), "attn": (attn,),
        "o_proj": (Gemm("o_proj", t, h, qh * hd, dtype),),
        "gate_proj": (Gemm("gate_proj", t, ffn, h, dtype),), "up_proj": (Gemm("up_proj", t, ffn, h, dtype),),
        "act_fn": (act,), "down_proj": (Gemm("down_proj", t, h, ffn, dtype),),
        "lm_head": (Gemm("lm_head", t, math.ceil(model.vocab_size / tp), h, dtype),),
    }


def _read_layer_table(path: Path, fmt: str, columns: tuple[str, str, str], seconds_per_unit: float,
                      build: Callable[[int], dict[str, tuple[Op, ...]]]) -> MeasuredFile:
    """Rows of (layer name, token count, time): each row's ops are ``build(tokens)[name]``. Rows of a
    layer the model does not have (a profiler of another model family may time layers this one lacks)
    are skipped and counted in ``skipped``; a file with no known layer at all is an error."""
    name_col, tok_col, time_col = columns
    rows = CsvRows(path, set(columns))
    records: list[MeasuredOp] = []
    cache: dict[int, dict[str, tuple[Op, ...]]] = {}
    skipped: dict[str, int] = {}
    first_unknown = (0, "")
    for row in rows:
        name = row[name_col].strip()
        t = rows.integer(row, tok_col, minimum=1)
        if t not in cache:
            cache[t] = build(t)
        if name not in cache[t]:
            skipped[name] = skipped.get(name, 0) + 1
            first_unknown = first_unknown if first_unknown[0] else (rows.line, name)
            continue
        v = positive_time(rows.number(row, time_col), rows, time_col)
        records.append(MeasuredOp(name, cache[t][name], v * seconds_per_unit, rows.line))
    if not records and skipped:
        known = ", ".join(next(iter(cache.values())))
        raise WorkloadError(f"no known layer in the file, e.g. {first_unknown[1]!r}; known: {known}",
                            file=str(path), line=first_unknown[0], column=name_col)
    return MeasuredFile(fmt, str(path), tuple(records), needs_model=True, skipped=tuple(sorted(skipped.items())))


@register_format("lss-layers")
def read_lss_layers(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    assert model is not None  # read_measured checks

    def build(t: int) -> dict[str, tuple[Op, ...]]:
        return {name: tuple(dataclasses.replace(op, name=name) for op in ops)
                for name, ops in _hf_layer_ops(model, t, tp, DType.BF16).items()}

    return _read_layer_table(path, "lss-layers", ("layer_name", "input", "latency(ns)"), 1e-9, build)


# ---- lss-dense (vLLM 0.19) ------------------------------------------------------------------------

def _vllm_dense_ops(model: ModelSpec, t: int, tp: int, dtype: DType) -> dict[str, Op]:
    """vLLM's fused kernels: QKV and gate/up GEMMs merged, fused add+RMSNorm ("layernorm": the
    profiler's row for the layer norms, reading and writing hidden and residual), fused SiLU*mul."""
    spec_ops = {op.name: op for op in layer_ops(model, Batch(prefill=((t, t),)), tp, dtype)}
    b = dtype.bytes
    e = t * model.hidden_size
    return {
        "embedding": MemoryOp("embedding", OpKind.EMBEDDING, t, e * b + 8 * t, e * b),
        "layernorm": MemoryOp("layernorm", OpKind.NORM, t, 2.0 * e * b, 2.0 * e * b, flops=6.0 * e),
        "final_layernorm": MemoryOp("final_layernorm", OpKind.NORM, t, 2.0 * e * b, 2.0 * e * b, flops=6.0 * e),
        "qkv_proj": dataclasses.replace(spec_ops["attn_pre_proj"], name="qkv_proj"),
        "rotary_emb": dataclasses.replace(spec_ops["attn_rope"], name="rotary_emb"),
        "o_proj": dataclasses.replace(spec_ops["attn_post_proj"], name="o_proj"),
        "gate_up_proj": dataclasses.replace(spec_ops["mlp_up_proj"], name="gate_up_proj"),
        "act_fn": dataclasses.replace(spec_ops["mlp_act"], name="act_fn"),
        "down_proj": dataclasses.replace(spec_ops["mlp_down_proj"], name="down_proj"),
    }


@register_format("lss-dense")
def read_lss_dense(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    assert model is not None

    def build(t: int) -> dict[str, tuple[Op, ...]]:
        return {name: (op,) for name, op in _vllm_dense_ops(model, t, tp, DType.BF16).items()}

    return _read_layer_table(path, "lss-dense", ("layer", "tokens", "time_us"), 1e-6, build)


# ---- lss-attention (vLLM 0.19 FlashAttention varlen) ----------------------------------------------

@register_format("lss-attention")
def read_lss_attention(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """A row with a prefill chunk is one varlen kernel over the chunk and the decodes (each a query
    of one token, not GQA-packed nor split: the call's longest query is the chunk); a decode-only row
    is FA2's decode path (query heads of a KV head packed, split-KV heuristic). A decode's sequence is
    its ``kv_decode`` cached tokens plus the new one."""
    assert model is not None
    rows = CsvRows(path, {"prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"})
    qh = model.num_heads // tp
    kvh = max(1, model.num_kv_heads // tp)
    hd = model.head_dim
    records: list[MeasuredOp] = []
    for row in rows:
        chunk = rows.integer(row, "prefill_chunk")
        prior = rows.integer(row, "kv_prefill")
        nd = rows.integer(row, "n_decode")
        kvd = rows.integer(row, "kv_decode")
        v = positive_time(rows.number(row, "time_us"), rows, "time_us") * 1e-6
        if chunk == 0 and (nd == 0 or kvd == 0):
            continue
        if chunk > 0:
            seqs = ((chunk, prior + chunk),) + ((1, kvd + 1),) * nd
            op: Op = PrefillAttention("attention", qh, kvh, hd, seqs, DType.BF16)
            name = "attn_prefill" if nd == 0 else "attn_mixed"
        else:
            op = DecodeAttention("attention", qh, kvh, hd, (kvd + 1,) * nd, DType.BF16)
            name = "attn_decode"
        records.append(MeasuredOp(name, (op,), v, rows.line))
    return MeasuredFile("lss-attention", str(path), tuple(records), needs_model=True)


# ---- llmcompass-matmul ----------------------------------------------------------------------------

@register_format("llmcompass-matmul")
def read_llmcompass_matmul(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    records: list[MeasuredOp] = []
    with path.open(encoding="utf-8") as fh:
        for i, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            cells = [c.strip() for c in raw.split(",")]
            if len(cells) < 4:
                raise WorkloadError(f"expected 'M, N, K, <time>ms, ...', got {raw.strip()!r}",
                                    file=str(path), line=i)
            try:
                m, n, k = (int(c) for c in cells[:3])
            except ValueError:
                raise WorkloadError(f"M, N, K must be integers, got {cells[:3]}", file=str(path), line=i,
                                    column="M,N,K") from None
            t = cells[3]
            if not t.endswith("ms"):
                raise WorkloadError(f"time must end in 'ms', got {t!r}", file=str(path), line=i, column="time")
            try:
                ms = float(t[:-2])
            except ValueError:
                raise WorkloadError(f"not a time: {t!r}", file=str(path), line=i, column="time") from None
            if min(m, n, k) < 1 or not ms > 0:
                raise WorkloadError(f"bad row {raw.strip()!r}", file=str(path), line=i)
            records.append(MeasuredOp("matmul", (Gemm("matmul", m, n, k, DType.FP16),), ms * 1e-3, i))
    if not records:
        raise WorkloadError("no rows", file=str(path))
    return MeasuredFile("llmcompass-matmul", str(path), tuple(records), timing=Timing.WALL_CLOCK)


# The formats of xpusim's own measurement kit (benchmarks/collect_cuda.py) register themselves here.
from workloads import measured_xpusim as _measured_xpusim  # noqa: E402,F401
