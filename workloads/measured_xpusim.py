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

from pathlib import Path

from workloads.errors import WorkloadError
from workloads.measured import MeasuredFile, MeasuredOp, _format, _positive_time, _Rows
from workloads.model_spec import ModelSpec
from workloads.ops import DecodeAttention, DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention

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

@_format("xpusim-gemm")
def read_xpusim_gemm(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """One GEMM per row; the op is named ``gemm_<dtype>`` (``gemm_bf16``, ``gemm_fp8``)."""
    rows = _Rows(path, {"label", "dtype", "m", "n", "k", "time_s"})
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
        records.append(MeasuredOp(name, (Gemm(name, m, n, k, dt),), _positive_time(v, rows, "time_s"), rows.line))
    return MeasuredFile("xpusim-gemm", str(path), tuple(records),
                        skipped=(("no time (error)", skipped),) if skipped else ())


# ---- xpusim-attention -------------------------------------------------------------------------------

@_format("xpusim-attention")
def read_xpusim_attention(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Prefill rows: ``batch`` sequences of ``q_len`` queries over ``kv_len`` keys (causal from the
    ``causal`` column), contiguous K/V. Decode rows: ``batch`` one-token queries over ``kv_len`` keys.
    The op names are ``attn_prefill`` / ``attn_decode``."""
    rows = _Rows(path, {"phase", "batch", "q_len", "kv_len", "q_heads", "kv_heads", "head_dim", "causal",
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
        v = _positive_time(rows.number(row, "time_s"), rows, "time_s")
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


def _memory_op(op: str, t: int, h: int, rows: _Rows) -> MemoryOp:
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


@_format("xpusim-memory-ops")
def read_xpusim_memory_ops(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """Rows timed behind the L2 flush (``l2_flushed`` 1), one op each; the others are skipped (the
    module docstring says why) and counted as ``<op> (no L2 flush: host-bound)``."""
    rows = _Rows(path, {"op", "tokens", "hidden", "l2_flushed", "time_s"})
    records: list[MeasuredOp] = []
    skipped: dict[str, int] = {}
    for row in rows:
        name = (row.get("op") or "").strip()
        t = rows.integer(row, "tokens", minimum=1)
        h = rows.integer(row, "hidden", minimum=1)
        op = _memory_op(name, t, h, rows)
        v = _positive_time(rows.number(row, "time_s"), rows, "time_s")
        if not rows.flag(row, "l2_flushed"):
            key = f"{name} (no L2 flush: host-bound)"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        records.append(MeasuredOp(name, (op,), v, rows.line))
    return MeasuredFile("xpusim-memory-ops", str(path), tuple(records), skipped=tuple(sorted(skipped.items())))


# ---- xpusim-steps -----------------------------------------------------------------------------------

STEP_MODES = ("eager", "cuda_graph")


@_format("xpusim-steps")
def read_xpusim_steps(path: Path, model: ModelSpec | None = None, tp: int = 1) -> MeasuredFile:
    """One whole step per row: the kernels of :func:`torch_llama_step_ops` for the row's catalog model
    (``model``), ``batch`` and ``prompt`` / ``context``; named ``<phase>.<mode>``. ``layers`` must
    match the catalog model's (the collector's quick mode builds two-layer models)."""
    from workloads.catalog import load_model

    rows = _Rows(path, {"model", "layers", "phase", "mode", "batch", "prompt", "context", "time_s"})
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
        v = _positive_time(rows.number(row, "time_s"), rows, "time_s")
        records.append(MeasuredOp(f"{phase}.{mode}", ops, v, rows.line))
    return MeasuredFile("xpusim-steps", str(path), tuple(records))
