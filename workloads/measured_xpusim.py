"""Readers for the CSVs that ``benchmarks/collect_cuda.py`` writes (``validation/measured/<gpu>/``).

Everything there ran under plain PyTorch eager (the ``torch`` software stack): ``F.linear`` /
``torch._scaled_mm`` GEMMs, ``scaled_dot_product_attention``, torch elementwise kernels, and the
built-in Llama module of :mod:`workloads.pytorch.llama`. Each row is timed between two CUDA events
behind a 256 MiB L2-evicting write (the median of 20 launches), so its operands start cold in L2.

Formats (registered with :data:`workloads.measured.FORMATS`):

``xpusim-gemm``        ``gemm.csv``: ``label, dtype, m, n, k, time_s`` of C[m,n] = A[m,k] W[n,k]^T in bf16
                       (``F.linear``) or fp8 e4m3 (``torch._scaled_mm``, bf16 out). Rows with an ``error``
                       (an fp8 path the build lacked) carry no time and are skipped.
``xpusim-attention``   ``attention.csv``: SDPA prefill (causal, q_len = kv_len) and decode (one query
                       token over kv_len keys), contiguous ``[batch, heads, len, head_dim]`` tensors,
                       GQA through ``enable_gqa``. The collector forced the ``flash`` backend, i.e.
                       FlashAttention-2's kernels compiled into PyTorch (``mha_fwd``): decodes with
                       grouped heads fold the group into the query tile (``seqlenq_ngroups_swapped``)
                       and split the KV over CTAs by FA2's heuristic, K/V not paged.
``xpusim-memory-ops``  ``memory_ops.csv``: RMSNorm (``nn.RMSNorm``, PyTorch's fused kernel), add,
                       SiLU-and-mul and RoPE (rotate-half, eager ops) and an embedding gather, as the
                       kernels those eager ops launch (see the ``torch_*`` builders). Only the rows
                       timed behind the L2 flush are kernel times: without it the GPU drains its queue
                       between two launches and the events time the host's dispatch of the op
                       (20-80 us for any size below a few MB); those rows are skipped and counted.
``xpusim-steps``       ``steps.csv``: whole prefill and decode steps of the built-in module (all layers,
                       bf16), eager and decode replayed from a CUDA graph, as the kernels the module
                       launches (:func:`torch_llama_step_ops`). The op name is ``<phase>.<mode>``.

All four need no ``--model``: the shapes are in the rows (steps name a catalog model).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workloads.errors import WorkloadError
from workloads.measured import CsvRows, MeasuredFile, MeasuredOp, positive_time, register_format
from workloads.model_spec import ModelSpec
from workloads.ops import DecodeAttention, DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention
from workloads.pytorch.tracer import AtenClass, OpGraph, TensorRef, TracedOp

BF16 = DType.BF16
_GEMM_DTYPES = {"bfloat16": DType.BF16, "bf16": DType.BF16, "float16": DType.FP16, "fp8_e4m3": DType.FP8}


# ---- the kernels of PyTorch eager ops ---------------------------------------------------------------

def torch_rmsnorm(name: str, tokens: int, width: int, b: int = 2) -> MemoryOp:
    """``nn.RMSNorm`` on CUDA (PyTorch >= 2.6 ``_fused_rms_norm``: one block per row, fp32 inside):
    reads the row and the weight, writes the row; one kernel."""
    e = tokens * width
    return MemoryOp(name, OpKind.NORM, tokens, float(e * b + width * b), float(e * b), flops=4.0 * e)


def torch_add(name: str, tokens: int, width: int, b: int = 2) -> MemoryOp:
    """``a + b``: one vectorised elementwise kernel reading two tensors, writing one."""
    e = tokens * width
    return MemoryOp(name, OpKind.ADD, tokens, 2.0 * e * b, float(e * b), flops=float(e))


def torch_silu_mul(name: str, tokens: int, width: int, b: int = 2) -> MemoryOp:
    """``silu(g) * u`` of the two halves (``width`` each) of a gate+up output: ``silu`` on the strided
    half (one kernel, writes a new tensor), then the multiply (one kernel): 3 reads, 2 writes."""
    e = tokens * width
    return MemoryOp(name, OpKind.ELEMENTWISE, tokens, 3.0 * e * b, 2.0 * e * b, flops=5.0 * e, kernels=2)


def torch_rope(name: str, tokens: int, heads: int, head_dim: int, b: int = 2) -> MemoryOp:
    """``x * cos + cat(-x2, x1) * sin`` over ``heads`` heads: ``neg`` of the second half, ``cat``,
    two multiplies and the add: 5 kernels moving 5.5 reads and 4.5 writes of x (cos/sin are small)."""
    e = tokens * heads * head_dim
    return MemoryOp(name, OpKind.ELEMENTWISE, tokens, 5.5 * e * b, 4.5 * e * b, flops=3.0 * e, kernels=5)


def torch_embedding(name: str, tokens: int, width: int, b: int = 2) -> MemoryOp:
    """``nn.Embedding``: ``index_select`` of ``tokens`` rows (int64 indices)."""
    e = tokens * width
    return MemoryOp(name, OpKind.EMBEDDING, tokens, float(e * b + 8 * tokens), float(e * b))


def torch_copy(name: str, tokens: int, elems_per_token: int, b: int = 2) -> MemoryOp:
    """A strided copy (a KV-cache slot written from a view): one kernel, one read and one write."""
    e = tokens * elems_per_token
    return MemoryOp(name, OpKind.ELEMENTWISE, tokens, float(e * b), float(e * b))


ROPE_TABLE_KERNELS = 7  # arange, outer, cat, cos, sin, two casts: the module's cos/sin tables per step


def torch_llama_step_ops(spec: ModelSpec, batch: int, new_tokens: int, context: int) -> tuple[Op, ...]:
    """The kernels one forward step of :class:`workloads.pytorch.llama.LlamaModel` launches on CUDA
    (bf16, dense, RMSNorm, RoPE, gated SiLU MLP; the order and counts of the profiler's table in
    ``validation/measured/h200/step_ops.csv``): ``batch`` sequences of ``new_tokens`` each, the last at
    ``context`` keys (a prefill: ``new_tokens == context``; a decode: one token over ``context``).

    Per layer: norm, fused QKV GEMM, RoPE on q and on k (5 kernels each), the K and V cache-slot copies,
    SDPA (causal prefill, or a decode over ``context`` keys, the query heads of a KV head packed), the
    O GEMM, residual add, norm, gate+up GEMM, SiLU and multiply, down GEMM, residual add. Around them:
    the embedding gather, the RoPE tables, the final norm and the LM head of the last position only."""
    if spec.is_moe or not spec.gated_mlp:
        raise WorkloadError(f"{spec.name}: the step builder covers dense gated-MLP Llama models only")
    t_all = batch * new_tokens
    h, d = spec.hidden_size, spec.head_dim
    qh, kvh, ffn = spec.num_heads, spec.num_kv_heads, spec.intermediate_size
    layer: list[Op] = [
        torch_rmsnorm("norm", t_all, h),
        Gemm("qkv_proj", t_all, spec.q_size + 2 * spec.kv_size, h, BF16),
        torch_rope("rope_q", t_all, qh, d),
        torch_rope("rope_k", t_all, kvh, d),
        torch_copy("cache_k", t_all, kvh * d),
        torch_copy("cache_v", t_all, kvh * d),
    ]
    if new_tokens > 1:
        if context != new_tokens:
            raise WorkloadError(f"a prefill step runs over its own tokens: context {context} != {new_tokens}")
        layer.append(PrefillAttention("attn", qh, kvh, d, ((new_tokens, new_tokens),) * batch, BF16,
                                      causal=True, paged=False))
    else:
        layer.append(DecodeAttention("attn", qh, kvh, d, (context,) * batch, BF16, pack_gqa=True,
                                     split_kv=True, paged=False))
    layer += [
        Gemm("o_proj", t_all, h, spec.q_size, BF16),
        torch_add("residual", t_all, h),
        torch_rmsnorm("norm", t_all, h),
        Gemm("gate_up_proj", t_all, 2 * ffn, h, BF16),
        torch_silu_mul("silu_mul", t_all, ffn),
        Gemm("down_proj", t_all, h, ffn, BF16),
        torch_add("residual", t_all, h),
    ]
    tables = MemoryOp("rope_tables", OpKind.ELEMENTWISE, new_tokens, 8.0 * new_tokens * d,
                      8.0 * new_tokens * d, kernels=ROPE_TABLE_KERNELS)
    head: list[Op] = [torch_embedding("embedding", t_all, h), tables]
    tail: list[Op] = [torch_rmsnorm("final_norm", batch, h), Gemm("lm_head", batch, spec.vocab_size, h, BF16)]
    return tuple(head + layer * spec.num_layers + tail)


# ---- xpusim-gemm ------------------------------------------------------------------------------------

@register_format("xpusim-gemm")
def read_xpusim_gemm(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """One GEMM per row; the op is named ``gemm_<dtype>`` (``gemm_bf16``, ``gemm_fp8``)."""
    rows = CsvRows(path, {"label", "dtype", "m", "n", "k", "time_s"})
    records: list[MeasuredOp] = []
    skipped = 0
    for row in rows:
        raw = (row.get("dtype") or "").strip()
        dt = _GEMM_DTYPES.get(raw)
        if dt is None:
            raise WorkloadError(f"unknown dtype {raw!r}; known: {', '.join(sorted(_GEMM_DTYPES))}",
                                file=str(path), line=rows.line, column="dtype")
        v = rows.opt_number(row, "time_s")
        if v is None:
            skipped += 1   # a row that records why the GEMM did not run (the ``error`` column)
            continue
        m, n, k = (rows.integer(row, c, minimum=1) for c in ("m", "n", "k"))
        name = f"gemm_{dt.value}"
        records.append(MeasuredOp(name, (Gemm(name, m, n, k, dt),), positive_time(v, rows, "time_s"), rows.line))
    return MeasuredFile("xpusim-gemm", str(path), tuple(records),
                        skipped=(("no time (error)", skipped),) if skipped else ())


# ---- xpusim-attention -------------------------------------------------------------------------------

@register_format("xpusim-attention")
def read_xpusim_attention(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Prefill rows: ``batch`` sequences of ``q_len`` queries over ``kv_len`` keys (causal from the
    ``causal`` column), contiguous K/V. Decode rows: ``batch`` one-token queries over ``kv_len`` keys.
    The op names are ``attn_prefill`` / ``attn_decode``."""
    rows = CsvRows(path, {"phase", "batch", "q_len", "kv_len", "q_heads", "kv_heads", "head_dim", "causal",
                        "time_s"})
    records: list[MeasuredOp] = []
    for row in rows:
        phase = (row.get("phase") or "").strip()
        b = rows.integer(row, "batch", minimum=1)
        q = rows.integer(row, "q_len", minimum=1)
        kv = rows.integer(row, "kv_len", minimum=1)
        qh = rows.integer(row, "q_heads", minimum=1)
        kvh = rows.integer(row, "kv_heads", minimum=1)
        d = rows.integer(row, "head_dim", minimum=1)
        if qh % kvh:
            raise WorkloadError(f"{qh} query heads not a multiple of {kvh} KV heads", file=str(path),
                                line=rows.line, column="kv_heads")
        v = positive_time(rows.number(row, "time_s"), rows, "time_s")
        op: Op
        if phase == "prefill":
            if q > kv:
                raise WorkloadError(f"q_len {q} > kv_len {kv}", file=str(path), line=rows.line, column="q_len")
            op = PrefillAttention("attn_prefill", qh, kvh, d, ((q, kv),) * b, BF16,
                                  causal=rows.flag(row, "causal"), paged=False)
            name = "attn_prefill"
        elif phase == "decode":
            if q != 1:
                raise WorkloadError(f"a decode row has one query token, got q_len {q}", file=str(path),
                                    line=rows.line, column="q_len")
            op = DecodeAttention("attn_decode", qh, kvh, d, (kv,) * b, BF16, pack_gqa=True, split_kv=True,
                                 paged=False)
            name = "attn_decode"
        else:
            raise WorkloadError(f"phase must be prefill or decode, got {phase!r}", file=str(path),
                                line=rows.line, column="phase")
        records.append(MeasuredOp(name, (op,), v, rows.line))
    return MeasuredFile("xpusim-attention", str(path), tuple(records))


# ---- xpusim-memory-ops ------------------------------------------------------------------------------

ROPE_HEAD_DIM = 128   # collect_cuda.py: q and k heads of a GQA-4 layer, head_dim 128
FFN_MULT = 3.5        # collect_cuda.py: gate+up of a 3.5 x hidden FFN (7 x hidden wide)


def _memory_op(op: str, t: int, h: int, rows: CsvRows) -> MemoryOp:
    if op == "rmsnorm":
        return torch_rmsnorm(op, t, h)
    if op == "add":
        return torch_add(op, t, h)
    if op == "silu_mul":
        return torch_silu_mul(op, t, int(FFN_MULT * h))
    if op == "rope":
        heads = h // ROPE_HEAD_DIM
        return torch_rope(op, t, heads + heads // 4, ROPE_HEAD_DIM)
    if op == "embedding":
        return torch_embedding(op, t, h)
    raise WorkloadError(f"unknown op {op!r}; known: add, embedding, rmsnorm, rope, silu_mul", file=str(rows.path),
                        line=rows.line, column="op")


@register_format("xpusim-memory-ops")
def read_xpusim_memory_ops(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Rows timed behind the L2 flush (``l2_flushed`` 1), one op each; the others are skipped (the
    module docstring says why) and counted as ``<op> (no L2 flush: host-bound)``."""
    rows = CsvRows(path, {"op", "tokens", "hidden", "l2_flushed", "time_s"})
    records: list[MeasuredOp] = []
    skipped: dict[str, int] = {}
    for row in rows:
        name = (row.get("op") or "").strip()
        t = rows.integer(row, "tokens", minimum=1)
        h = rows.integer(row, "hidden", minimum=1)
        op = _memory_op(name, t, h, rows)
        v = positive_time(rows.number(row, "time_s"), rows, "time_s")
        if not rows.flag(row, "l2_flushed"):
            key = f"{name} (no L2 flush: host-bound)"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        records.append(MeasuredOp(name, (op,), v, rows.line))
    return MeasuredFile("xpusim-memory-ops", str(path), tuple(records), skipped=tuple(sorted(skipped.items())))


# ---- xpusim-kernel-times ------------------------------------------------------------------------------

_KT_BACKEND = {"cudnn_attention": "cudnn", "flash_attention": "fa2"}  # SDPA backend -> xpusim's kernel name


def _kt_shape(text: str, rows: CsvRows) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in text.split(";"):
        key, sep, val = part.partition("=")
        if not sep or not val.strip().isdigit() or int(val) < 1:
            raise WorkloadError(f"shape must be key=positive integer pairs separated by ';', got {text!r}",
                                file=str(rows.path), line=rows.line, column="shape")
        out[key.strip()] = int(val)
    return out


@register_format("xpusim-kernel-times")
def read_xpusim_kernel_times(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """``kernel_times.csv`` (``collect_cuda.py --sections kernel_times``): each call timed four ways; the
    record's time is ``kernel_s``, the profiler's device time of the call's kernels (what ``validate
    torch`` compares per op). SDPA rows name the backend that ran (``attn_decode.cudnn_attention``), so
    each op carries its kernel (``cudnn`` or ``fa2``) whatever the stack; the op names are
    ``attn_<phase>.<kernel>`` and ``gemm_bf16``. Memory-op rows (``mem.*``) are counted as skipped: their
    kernels are scored inside whole steps by ``validate torch``."""
    rows = CsvRows(path, {"kind", "shape", "kernel_s"})
    records: list[MeasuredOp] = []
    skipped: dict[str, int] = {}
    for row in rows:
        kind = (row.get("kind") or "").strip()
        v = rows.opt_number(row, "kernel_s")
        if v is None or not math.isfinite(v):
            skipped["no kernel time"] = skipped.get("no kernel time", 0) + 1
            continue
        sh = _kt_shape(row.get("shape") or "", rows)
        op: Op
        if kind.startswith("attn_"):
            phase, _, backend = kind.partition(".")
            kernel = _KT_BACKEND.get(backend)
            if kernel is None or phase not in ("attn_prefill", "attn_decode"):
                raise WorkloadError(f"unknown attention row kind {kind!r}; known backends: "
                                    f"{', '.join(sorted(_KT_BACKEND))}", file=str(path), line=rows.line, column="kind")
            b, q, kv, hq, hkv, d = (sh.get(k, 0) for k in ("b", "q", "kv", "hq", "hkv", "d"))
            if min(b, q, kv, hq, hkv, d) < 1 or hq % hkv:
                raise WorkloadError(f"attention shape needs b, q, kv, hq, hkv, d with hkv dividing hq, got {sh}",
                                    file=str(path), line=rows.line, column="shape")
            name = f"{phase}.{kernel}"
            if phase == "attn_prefill":
                op = PrefillAttention(name, hq, hkv, d, ((q, kv),) * b, BF16, causal=True, paged=False,
                                      kernel=kernel)
            else:
                op = DecodeAttention(name, hq, hkv, d, (kv,) * b, BF16, pack_gqa=True, split_kv=True,
                                     paged=False, kernel=kernel)
        elif kind == "gemm":
            name = "gemm_bf16"
            op = Gemm(name, sh.get("m", 0), sh.get("n", 0), sh.get("k", 0), BF16)
            if min(op.m, op.n, op.k) < 1:
                raise WorkloadError(f"a GEMM shape needs m, n, k, got {sh}", file=str(path), line=rows.line,
                                    column="shape")
        else:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        records.append(MeasuredOp(name, (op,), positive_time(v, rows, "kernel_s"), rows.line))
    return MeasuredFile("xpusim-kernel-times", str(path), tuple(records), skipped=tuple(sorted(skipped.items())))


# ---- xpusim-steps -----------------------------------------------------------------------------------

STEP_MODES = ("eager", "cuda_graph")


@register_format("xpusim-steps")
def read_xpusim_steps(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """One whole step per row: the kernels of :func:`torch_llama_step_ops` for the row's catalog model
    (``model``), ``batch`` and ``prompt`` / ``context``; named ``<phase>.<mode>``. ``layers`` must
    match the catalog model's (the collector's quick mode builds two-layer models)."""
    from workloads.catalog import load_model

    rows = CsvRows(path, {"model", "layers", "phase", "mode", "batch", "prompt", "context", "time_s"})
    records: list[MeasuredOp] = []
    specs: dict[str, ModelSpec] = {}
    for row in rows:
        name = (row.get("model") or "").strip()
        if name not in specs:
            try:
                specs[name] = load_model(name)
            except WorkloadError as exc:
                raise WorkloadError(f"unknown model {name!r}: {exc}", file=str(path), line=rows.line,
                                    column="model") from None
        spec = specs[name]
        layers = rows.integer(row, "layers", minimum=1)
        if layers != spec.num_layers:
            from dataclasses import replace
            spec = replace(spec, num_layers=layers)
        phase = (row.get("phase") or "").strip()
        mode = (row.get("mode") or "").strip()
        if mode not in STEP_MODES:
            raise WorkloadError(f"mode must be one of {', '.join(STEP_MODES)}, got {mode!r}", file=str(path),
                                line=rows.line, column="mode")
        b = rows.integer(row, "batch", minimum=1)
        prompt = rows.integer(row, "prompt", minimum=1)
        ctx = rows.integer(row, "context", minimum=1)
        if phase == "prefill":
            ops = torch_llama_step_ops(spec, b, prompt, ctx)
        elif phase == "decode":
            ops = torch_llama_step_ops(spec, b, 1, ctx)
        else:
            raise WorkloadError(f"phase must be prefill or decode, got {phase!r}", file=str(path),
                                line=rows.line, column="phase")
        v = positive_time(rows.number(row, "time_s"), rows, "time_s")
        records.append(MeasuredOp(f"{phase}.{mode}", ops, v, rows.line))
    return MeasuredFile("xpusim-steps", str(path), tuple(records))


# ---- a committed `xpusim validate torch` run directory ----------------------------------------------

@dataclass
class RunStep:
    """One step of a recorded ``validate torch`` run, rebuilt from its CSVs: the traced ops (views as
    placeholders where the run's op indices skip them), each costed op's measured seconds, the step's."""

    phase: str
    index: int
    context: int
    graph: OpGraph
    op_seconds: list[float | None]
    step_seconds: float


@dataclass
class RecordedTorchRun:
    """A ``validate torch --out DIR`` run read back: its steps and the ``# key: value`` provenance."""

    path: str
    steps: list[RunStep]
    provenance: dict[str, str] = field(default_factory=dict)


_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_DTYPE_OF = {"fp32": DType.FP32, "bf16": DType.BF16, "fp16": DType.FP16}
_VIEW_PLACEHOLDER = "aten::<view>"


def _shapes(text: str, path: Path, line: int) -> tuple[tuple[int, ...], ...]:
    out = []
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(tuple(int(v) for v in part.split("x")))
        except ValueError:
            raise WorkloadError(f"bad shape {part!r} (want e.g. 4x512x2048)", file=str(path), line=line,
                                column="input_shapes") from None
    return tuple(out)


def _broadcast(shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    nd = max((len(s) for s in shapes), default=0)
    out = [1] * nd
    for s in shapes:
        for i, v in enumerate(s, start=nd - len(s)):
            out[i] = max(out[i], v)
    return tuple(out)


def _out_shape(name: str, aclass: AtenClass, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...] | None:
    """The main output's shape of a memory-bound aten op from its input shapes (None: unknown)."""
    if not shapes:
        return None
    if name == "cat":
        first = shapes[0]
        if all(len(s) == len(first) and s[:-1] == first[:-1] for s in shapes):
            return first[:-1] + (sum(s[-1] for s in shapes),)
        return (sum(s[0] for s in shapes),) + first[1:]
    if name == "embedding" and len(shapes) >= 2:
        return shapes[1] + shapes[0][-1:]
    if aclass is AtenClass.REDUCTION and name not in {"_fused_rms_norm", "rms_norm", "native_layer_norm"}:
        return shapes[0][:-1] + (1,)
    return _broadcast(shapes)


def _rebuild_op(row: dict[str, str], rows: CsvRows, dtype: str) -> TracedOp:
    """A :class:`TracedOp` from one ``ops.csv`` row. Runs written before the columns ``bytes_read`` /
    ``bytes_written`` existed give only the total: it is split by the elements read and written at one
    item size (exact for the single-dtype ops of a bf16 module; an fp32 RoPE table op is off by its cast)."""
    aten = (row.get("aten") or "").strip()
    name = aten.split("::")[-1]
    try:
        kind = OpKind((row.get("kind") or "").strip())
        aclass = AtenClass((row.get("class") or "").strip())
    except ValueError as exc:
        raise WorkloadError(str(exc), file=str(rows.path), line=rows.line, column="kind") from None
    shapes = _shapes(row.get("input_shapes", ""), rows.path, rows.line)
    total = rows.number(row, "bytes")
    flops = rows.number(row, "flops")
    item = _DTYPE_BYTES.get(dtype, 2)
    scope = (row.get("scope") or "").strip()
    stem = scope or name
    op: Op | None = None
    out_shape = _out_shape(name, aclass, shapes)
    if aclass is AtenClass.GEMM:
        if len(shapes) < 2 or len(shapes[0]) < 2:
            raise WorkloadError(f"a GEMM needs two matrix shapes, got {row.get('input_shapes')!r}",
                                file=str(rows.path), line=rows.line, column="input_shapes")
        a, b = shapes[-2], shapes[-1]
        batch = a[0] if len(a) == 3 else 1
        m, k, n = a[-2], a[-1], b[-1]
        op = Gemm(stem, batch * m, n, k, _DTYPE_OF.get(dtype, DType.BF16))
        out_shape = (batch * m, n)
    elif aclass is AtenClass.ATTENTION:
        if len(shapes) < 3 or any(len(s) != 4 for s in shapes[:3]):
            raise WorkloadError(f"attention needs q, k, v shapes [b, heads, len, dim], got "
                                f"{row.get('input_shapes')!r}", file=str(rows.path), line=rows.line,
                                column="input_shapes")
        nseq, hq, tq, d = shapes[0]
        hkv, tk = shapes[1][1], shapes[1][2]
        dt = _DTYPE_OF.get(dtype, DType.BF16)
        if tq == 1:   # the built-in module: a decode attends to the whole cache, a prefill is causal
            op = DecodeAttention(stem, hq, hkv, d, (tk,) * nseq, dt, paged=False)
        else:
            op = PrefillAttention(stem, hq, hkv, d, ((tq, tk),) * nseq, dt, causal=True, paged=False)
        out_shape = shapes[0]
    written = rows.opt_number(row, "bytes_written")
    read = rows.opt_number(row, "bytes_read")
    if written is None or read is None:
        n_in = sum(math.prod(s) for s in shapes)
        n_out = math.prod(out_shape) if out_shape else 0
        if name in {"_fused_rms_norm", "rms_norm"} and shapes:   # and the fp32 rstd per row
            n_out += 2 * (math.prod(shapes[0]) // max(1, shapes[0][-1]))
        if aclass is AtenClass.FILL or not shapes:
            read, written = 0.0, total
        elif name == "embedding" and len(shapes) >= 2:
            written = float(math.prod(out_shape or ()) * item)
            read = total - written
        else:
            scale = total / max(1, n_in + n_out)
            written = n_out * scale
            read = total - written
    ins = tuple(TensorRef(-1, s, _contiguous(s), 0, dtype, item, math.prod(s)) for s in shapes)
    outs = (TensorRef(-1, out_shape, _contiguous(out_shape), 0, dtype, item, math.prod(out_shape)),) \
        if out_shape else ()
    index = rows.integer(row, "op_index", minimum=0)
    return TracedOp(index, aten, "", aclass, kind, ins, outs, flops, float(read), float(written), (), 0, scope,
                    0, False, op)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for v in reversed(shape):
        out.append(acc)
        acc *= max(1, v)
    return tuple(reversed(out))


def _view(index: int) -> TracedOp:
    return TracedOp(index, _VIEW_PLACEHOLDER, "", AtenClass.VIEW, None, (), (), 0.0, 0.0, 0.0, (), 0, "", 0,
                    False, None)


class _CommentedRows(CsvRows):
    """:class:`CsvRows` of a CSV under ``# key: value`` lines (what ``validate torch --out`` writes);
    those lines are ``provenance``."""

    def __init__(self, path: Path, required: set[str]) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except OSError as exc:
            raise WorkloadError(f"cannot read: {exc.strerror}", file=str(path)) from None
        self._skip = 0
        while self._skip < len(lines) and lines[self._skip].startswith("#"):
            self._skip += 1
        self.provenance: dict[str, str] = {}
        for line in lines[:self._skip]:
            key, _, value = line[1:].partition(":")
            self.provenance[key.strip()] = value.strip()
        self.path = path
        self._fh = io.StringIO("".join(lines[self._skip:]))  # type: ignore[assignment]
        self._reader = csv.DictReader(self._fh)
        header = self._reader.fieldnames or []
        missing = sorted(required - set(header))
        if missing:
            raise WorkloadError(f"missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}",
                                file=str(path), line=self._skip + 1, column=missing[0])
        self.line = self._skip + 1

    def __iter__(self) -> Iterator[dict[str, str]]:
        for row in self._reader:
            self.line = self._reader.line_num + self._skip
            yield row


def read_validate_torch(directory: Path | str) -> RecordedTorchRun:
    """A ``xpusim validate torch --out DIR`` run read back from ``DIR/ops.csv`` and ``DIR/steps.csv``,
    ready to be simulated again (``xpusim validate torch --from DIR``) without running anything.

    Each step's ops are rebuilt from the measured columns: aten op, kind, class, scope, input shapes,
    FLOPs, bytes (GEMMs and SDPA calls become their xpusim ops; the dtype is the run's ``# dtype``).
    ``ops.csv`` lists the ops that ran a kernel; the op indices it skips were views and metadata ops,
    which come back as placeholders (they cost host time, not device time), as many as the step's
    indices skip up to its last costed op."""
    d = Path(directory)
    ops_p, steps_p = d / "ops.csv", d / "steps.csv"
    for p in (ops_p, steps_p):
        if not p.is_file():
            raise WorkloadError("a validate torch run directory needs ops.csv and steps.csv (--out DIR)",
                                file=str(p))
    srows = _CommentedRows(steps_p, {"phase", "step", "context", "measured_s"})
    prov = srows.provenance
    dtype = prov.get("dtype", "bf16")
    by_step: dict[tuple[str, int], list[tuple[TracedOp, float]]] = {}
    rows = _CommentedRows(ops_p, {"phase", "step", "op_index", "aten", "kind", "class", "scope", "input_shapes",
                                  "flops", "bytes", "measured_s"})
    for row in rows:
        key = ((row.get("phase") or "").strip(), rows.integer(row, "step", minimum=0))
        meas = positive_time(rows.number(row, "measured_s"), rows, "measured_s")
        by_step.setdefault(key, []).append((_rebuild_op(row, rows, dtype), meas))
    steps: list[RunStep] = []
    for row in srows:
        phase = (row.get("phase") or "").strip()
        idx = srows.integer(row, "step", minimum=0)
        timed = sorted(by_step.pop((phase, idx), []), key=lambda t: t[0].index)
        if not timed:
            raise WorkloadError(f"no ops.csv rows for {phase} step {idx}", file=str(ops_p))
        ops: list[TracedOp] = []
        secs: list[float | None] = []
        for op, meas in timed:
            while len(ops) < op.index:
                ops.append(_view(len(ops)))
                secs.append(None)
            if len(ops) > op.index:
                raise WorkloadError(f"op index {op.index} repeats in {phase} step {idx}", file=str(ops_p))
            ops.append(op)
            secs.append(meas)
        graph = OpGraph(ops, device=prov.get("device", "cuda"), label=f"{phase} {idx}", meta={"source": str(d)})
        steps.append(RunStep(phase, idx, srows.integer(row, "context", minimum=1), graph, secs,
                             positive_time(srows.number(row, "measured_s"), srows, "measured_s")))
    if by_step:
        (phase, idx), _ = next(iter(by_step.items()))
        raise WorkloadError(f"ops.csv has {phase} step {idx}, which steps.csv does not", file=str(ops_p))
    return RecordedTorchRun(str(d), steps, prov)
