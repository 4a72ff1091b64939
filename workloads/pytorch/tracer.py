"""Capture what a ``torch.nn.Module`` really runs as xpusim's op graph.

``trace(module, *args)`` runs the module under a ``TorchDispatchMode``: every aten op that reaches the
dispatcher below autograd (``aten::mm``, ``aten::_scaled_dot_product_flash_attention_for_cpu``,
``aten::mul`` ...) is recorded with its input/output shapes and dtypes, FLOPs, bytes read and written,
its data dependencies (the ops that last wrote the storage it reads), its stream, the module it ran in,
and whether it ran in the forward or the backward pass. Composite ops (``linear``, ``rms_norm``,
``scaled_dot_product_attention``) arrive already decomposed into what actually executes, so the graph
is the eager program, op by op.

Each op gets two labels:

- ``aclass`` (:class:`AtenClass`): what the op does to memory and arithmetic units (a GEMM, an
  attention kernel, an elementwise op, a reduction, a copy, a gather, a view that moves nothing). A
  host-CPU or GPU model costs an op by its class.
- ``kind`` (:class:`workloads.ops.OpKind`): the role it plays in a transformer, as
  ``workloads.llm_ops`` names them. GEMMs and SDPA calls map one to one (``Gemm``,
  ``PrefillAttention`` / ``DecodeAttention``); the other ops get their role from where they ran:
  inside a norm module -> ``norm``; an activation function, and the product that gates it -> ``activation``;
  arithmetic inside a module that then calls attention -> ``rope`` (its in-place copies into a cache are
  ``elementwise``: the KV-cache write); the sum of two equal-shape tensors -> ``add`` (a residual);
  an embedding gather -> ``embedding``; collectives of ``torch.distributed`` -> ``all_reduce`` (others
  keep their aten name and no kind); anything else -> ``elementwise``. Views and metadata ops have no
  kind and cost nothing.

:meth:`OpGraph.fused` groups consecutive ops of the same kind in the same module call into one
``MemoryOp`` whose bytes are what a fused kernel would move: the regions of tensors it reads that were
written outside the group, and the regions it writes that are read outside it (or never read: outputs,
cache writes); its ``kernels`` count the eager launches. That is the view ``workloads.llm_ops`` builds
from a ``ModelSpec``, which the consistency test compares against.

torch is optional: this module imports it when tracing, so ``import workloads.pytorch.tracer`` works
without torch (``trace`` then raises a ConfigError).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workloads.errors import ConfigError
from workloads.ops import AllReduce, DecodeAttention, DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention


class AtenClass(enum.Enum):
    """What an aten op does to the machine (how a hardware model costs it)."""

    GEMM = "gemm"
    ATTENTION = "attention"
    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"  # mean, sum, softmax, norms: read everything, write less
    COPY = "copy"  # copy_, clone, cat, _to_copy, contiguous: move bytes, no arithmetic
    GATHER = "gather"  # embedding, index_select, index, index_add_: rows chosen by an index
    FILL = "fill"  # zeros, full, arange, fill_: write only
    COLLECTIVE = "collective"
    VIEW = "view"  # shape/stride metadata only: costs nothing


_GEMM = {"mm", "addmm", "bmm", "baddbmm", "_addmm_activation", "_scaled_mm"}
_ATTENTION = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
              "_flash_attention_forward", "_efficient_attention_forward"}
_ACTIVATIONS = {"silu", "gelu", "relu", "sigmoid", "tanh", "softplus", "gelu_backward", "silu_backward",
                "threshold_backward", "sigmoid_backward", "tanh_backward"}
_REDUCTIONS = {"mean", "sum", "_softmax", "softmax", "_log_softmax", "amax", "max", "min", "topk", "var",
               "var_mean", "native_layer_norm", "native_layer_norm_backward", "rms_norm", "_fused_rms_norm",
               "_fused_rms_norm_backward", "native_group_norm", "norm", "linalg_vector_norm", "argmax",
               "_softmax_backward_data", "cumsum", "sort"}
_NORMS = {"native_layer_norm", "native_layer_norm_backward", "rms_norm", "_fused_rms_norm",
          "_fused_rms_norm_backward", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit"}
_COPIES = {"copy_", "clone", "cat", "_to_copy", "contiguous", "stack", "index_put_", "_unsafe_index_put",
           "masked_scatter", "repeat", "constant_pad_nd", "flip", "roll", "tril", "triu"}
_GATHERS = {"embedding", "index_select", "index", "gather", "index_add_", "index_add", "scatter_add_",
            "scatter_add", "embedding_dense_backward", "nonzero", "masked_select"}
_FILLS = {"zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "fill_", "zero_", "arange",
          "empty", "empty_like", "empty_strided", "new_zeros", "new_empty", "new_empty_strided", "scalar_tensor",
          "new_full", "new_ones", "randint", "normal_", "uniform_", "_local_scalar_dense"}
_FREE = {"_unsafe_view", "_reshape_alias", "alias", "detach", "lift_fresh", "empty", "empty_like",
         "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense", "set_", "resize_",
         "_to_copy_meta", "sym_size", "sym_stride", "is_same_size", "_has_compatible_shallow_copy_type"}
_OVERWRITES = {"copy_", "fill_", "zero_", "normal_", "uniform_"}
_COLLECTIVE_WORDS = ("allreduce", "all_reduce", "allgather", "all_gather", "reduce_scatter", "alltoall",
                     "all_to_all", "broadcast", "send", "recv", "barrier")
_NORM_MODULE_WORDS = ("Norm",)  # nn.RMSNorm, nn.LayerNorm, nn.GroupNorm, BatchNorm*, HF's LlamaRMSNorm ...

_DTYPE_NAMES = {"float32": DType.FP32, "float16": DType.FP16, "bfloat16": DType.BF16,
                "float8_e4m3fn": DType.FP8, "float8_e5m2": DType.FP8}


@dataclass(frozen=True)
class TensorRef:
    """One tensor an op read or wrote: which storage version (``value``), the region, shape and dtype."""

    value: int  # id of the storage version (the op output that last wrote this storage); -1: never written
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # storage offset in elements
    dtype: str  # torch dtype name without "torch."
    itemsize: int
    storage_elems: int  # size of the whole storage, elements

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def bytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class TracedOp:
    """One aten op as it ran. ``flops``/``bytes_read``/``bytes_written`` are of this op alone (an eager
    launch); ``deps`` are the indices of the ops that wrote what it reads."""

    index: int
    aten: str  # "aten::mm": the profiler's name
    overload: str
    aclass: AtenClass
    kind: OpKind | None  # None: a view or metadata op, or a collective xpusim has no op for
    inputs: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]
    flops: float
    bytes_read: float
    bytes_written: float
    deps: tuple[int, ...]
    stream: int
    scope: str  # module path ("layers.0.input_layernorm"); "" at the top level or in backward
    call: int  # which call of that module (ops of one call share it)
    backward: bool
    op: Op | None = None  # the xpusim op of a GEMM, attention or collective

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    @property
    def costs(self) -> bool:
        """False for views and metadata ops, which run no kernel."""
        return self.aclass is not AtenClass.VIEW

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(r.shape for r in self.inputs)


@dataclass
class OpGraph:
    """The ops of a traced run, in execution order, with what the run was."""

    ops: list[TracedOp]
    device: str = "cpu"
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def costed(self) -> list[TracedOp]:
        return [o for o in self.ops if o.costs]

    @property
    def flops(self) -> float:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops)

    def fused(self) -> list[Op]:
        """The graph as xpusim ops, each run of same-kind memory-bound ops in one module call fused."""
        return _fuse(self.ops)


class _Recorder:
    """The state of one trace: storage versions, module scopes, ops."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.ops: list[TracedOp] = []
        self.writer: dict[int, int] = {}  # storage key -> value id of its last write
        self.value_op: dict[int, int] = {}  # value id -> op index
        self.values = itertools.count()
        self.scopes: list[tuple[str, int, str]] = []  # (path, call id, module type name)
        self.calls = itertools.count(1)
        self.backward = False


def _storage_key(t: Any) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # fake or meta tensors have no data
        return id(t.untyped_storage())


def _ref(t: Any, value: int) -> TensorRef:
    try:
        storage = t.untyped_storage().nbytes() // max(1, t.element_size())
    except (RuntimeError, NotImplementedError):
        storage = t.numel()
    return TensorRef(value, tuple(int(s) for s in t.shape), tuple(int(s) for s in t.stride()),
                     int(t.storage_offset()), str(t.dtype).removeprefix("torch."), int(t.element_size()), storage)


def _tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _bound(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The op's arguments by schema name (defaults filled in)."""
    out: dict[str, Any] = {}
    for i, a in enumerate(func._schema.arguments):
        if i < len(args):
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def _classify(name: str, func: Any) -> AtenClass:
    if name in _GEMM:
        return AtenClass.GEMM
    if name in _ATTENTION or (name.startswith("_scaled_dot_product") and name.endswith("_backward")) \
            or name in {"_flash_attention_backward", "_efficient_attention_backward"}:
        return AtenClass.ATTENTION
    if any(w in name for w in _COLLECTIVE_WORDS) and func.namespace in {"c10d", "_c10d_functional", "c10d_functional"}:
        return AtenClass.COLLECTIVE
    if name in _FREE:
        return AtenClass.VIEW
    returns = func._schema.returns
    if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
        return AtenClass.VIEW
    if name.rstrip("_") in _REDUCTIONS or name in _REDUCTIONS:
        return AtenClass.REDUCTION
    if name in _COPIES:
        return AtenClass.COPY
    if name in _GATHERS:
        return AtenClass.GATHER
    if name in _FILLS:
        return AtenClass.FILL
    return AtenClass.ELEMENTWISE


def _gemm_dims(name: str, ins: Sequence[TensorRef]) -> tuple[int, int, int, int]:
    """(batch, m, n, k) of a GEMM from its matrix operands."""
    mats = [r for r in ins if len(r.shape) >= 2]
    if name in {"addmm", "_addmm_activation", "baddbmm"} and len(mats) >= 3:
        mats = mats[1:]
    a, b = mats[0], mats[1]
    if len(a.shape) == 3:
        return a.shape[0], a.shape[1], b.shape[2], a.shape[2]
    return 1, a.shape[0], b.shape[1], a.shape[1]


def _attention_op(name: str, bound: dict[str, Any], stem: str) -> tuple[float, Op]:
    q, k = bound["query"], bound["key"]
    causal = bool(bound.get("is_causal", False))
    if q.dim() == 3:  # varlen layout [total_tokens, heads, dim] (flash_attention_forward)
        b, hq, tq, d = 1, q.shape[1], q.shape[0], q.shape[2]
        hkv, tk = k.shape[1], k.shape[0]
    else:
        b, hq, tq, d = (int(s) for s in q.shape)
        hkv, tk = int(k.shape[1]), int(k.shape[2])
    if causal:  # each query i attends to (tk - tq + i + 1) keys (bottom-right aligned, as a KV cache)
        pairs = tq * (tk - tq) + tq * (tq + 1) / 2.0
    else:
        pairs = float(tq * tk)
    flops = 4.0 * b * hq * d * pairs
    dtype = _DTYPE_NAMES.get(str(q.dtype).removeprefix("torch."), DType.BF16)
    op: Op
    if tq == 1:
        op = DecodeAttention(stem, int(hq), int(hkv), int(d), (int(tk),) * b, dtype, paged=False)
    else:
        op = PrefillAttention(stem, int(hq), int(hkv), int(d), ((int(tq), int(tk)),) * b, dtype,
                              causal=causal, paged=False)
    if name.endswith("_backward"):  # FlashAttention-2's backward: 5 matmuls to the forward's 2
        flops *= 2.5
    return flops, op


class _Mode:
    """Factory of the TorchDispatchMode subclass (defined lazily: torch is optional)."""

    cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is not None:
            return cls.cls
        from torch.utils._python_dispatch import TorchDispatchMode

        class TraceMode(TorchDispatchMode):
            def __init__(self, rec: _Recorder) -> None:
                super().__init__()
                self.rec = rec

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                _record(self.rec, func, args, kwargs, out)
                return out

        cls.cls = TraceMode
        return TraceMode


def _record(rec: _Recorder, func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> None:
    import torch

    name = func._schema.name.split("::")[-1]
    aten = f"{func.namespace}::{name}"
    aclass = _classify(name, func)
    in_t = _tensors(list(args) + list(kwargs.values()))
    if name in _OVERWRITES and in_t:
        in_t = in_t[1:]  # the destination's old contents are overwritten, not read
    out_t = _tensors(out)
    inputs = tuple(_ref(t, rec.writer.get(_storage_key(t), -1)) for t in in_t)
    index = len(rec.ops)
    deps = tuple(sorted({rec.value_op[r.value] for r in inputs if r.value in rec.value_op}))
    outputs = []
    for t in out_t:
        if aclass is AtenClass.VIEW:
            outputs.append(_ref(t, rec.writer.get(_storage_key(t), -1)))
            continue
        v = next(rec.values)
        rec.value_op[v] = index
        rec.writer[_storage_key(t)] = v
        outputs.append(_ref(t, v))
    path, call, mtype = rec.scopes[-1] if rec.scopes and not rec.backward else ("", 0, "")
    flops = 0.0
    op: Op | None = None
    bytes_read = float(sum(r.bytes for r in inputs))
    bytes_written = float(sum(r.bytes for r in outputs))
    stem = path or name
    if aclass is AtenClass.VIEW:
        bytes_read = bytes_written = 0.0
    elif aclass is AtenClass.GEMM:
        batch, m, n, k = _gemm_dims(name, inputs)
        flops = 2.0 * batch * m * n * k
        dtype = _DTYPE_NAMES.get(inputs[0].dtype, DType.BF16)
        op = Gemm(stem, batch * m, n, k, dtype)
    elif aclass is AtenClass.ATTENTION:
        flops, op = _attention_op(name, _bound(func, args, kwargs), stem)
        # logsumexp and other auxiliary outputs are small; count q, k, v and the output
        bytes_written = float(outputs[0].bytes) if outputs else 0.0
    elif aclass is AtenClass.COLLECTIVE:
        size = float(sum(r.bytes for r in inputs))
        group = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            group = torch.distributed.get_world_size()
        if "reduce" in name and "scatter" not in name:
            op = AllReduce(stem, size, group)
    elif aclass is AtenClass.GATHER and name in {"embedding", "index_select"}:
        # the gathered rows are read, not the whole table
        table, idx = (inputs[0], inputs[1]) if name == "embedding" else (inputs[0], inputs[-1])
        row = table.bytes / max(1, table.shape[0])
        bytes_read = idx.bytes + idx.numel * row
    elif aclass is AtenClass.FILL:
        bytes_read = 0.0
    if aclass in (AtenClass.ELEMENTWISE, AtenClass.REDUCTION):
        flops = float(max([r.numel for r in outputs] + [r.numel for r in inputs if aclass is AtenClass.REDUCTION]
                          + [0]))
    stream = 0
    if out_t and out_t[0].is_cuda:
        stream = int(torch.cuda.current_stream(out_t[0].device).stream_id)
    rec.ops.append(TracedOp(index, aten, func._overloadname, aclass, None, inputs, tuple(outputs), flops,
                            bytes_read, bytes_written, deps, stream, path, call, rec.backward, op))
    del mtype


def _assign_kinds(ops: list[TracedOp], types: dict[tuple[str, int], str]) -> list[TracedOp]:
    """Give each op its transformer role (see the module docstring); a pass over the whole trace."""
    from dataclasses import replace

    # index of the first attention op in each module call
    attn_at: dict[tuple[str, int], int] = {}
    for o in ops:
        if o.aclass is AtenClass.ATTENTION and o.scope:
            attn_at.setdefault((o.scope, o.call), o.index)
    kind_of_value: dict[int, OpKind] = {}
    result = []
    for o in ops:
        name = o.aten.split("::")[-1]
        kind: OpKind | None
        if o.aclass is AtenClass.VIEW or o.aclass is AtenClass.FILL and not o.bytes_written:
            kind = None
        elif o.aclass is AtenClass.GEMM:
            kind = OpKind.GEMM
        elif o.aclass is AtenClass.ATTENTION:
            kind = o.op.kind if o.op is not None else OpKind.ATTN_PREFILL
        elif o.aclass is AtenClass.COLLECTIVE:
            kind = OpKind.ALL_REDUCE if isinstance(o.op, AllReduce) else None
        elif name in {"embedding", "embedding_dense_backward"}:
            kind = OpKind.EMBEDDING
        elif name in _NORMS or any(w in types.get((o.scope, o.call), "") for w in _NORM_MODULE_WORDS):
            kind = OpKind.NORM
        elif name in _ACTIVATIONS or (name == "mul" and any(kind_of_value.get(r.value) is OpKind.ACTIVATION
                                                            for r in o.inputs)):
            kind = OpKind.ACTIVATION
        elif (o.scope, o.call) in attn_at and o.index < attn_at[(o.scope, o.call)]:
            kind = OpKind.ELEMENTWISE if o.aclass is AtenClass.COPY and name == "copy_" else OpKind.ROPE
        elif name in {"add", "add_"} and len(o.inputs) == 2 and o.inputs[0].shape == o.inputs[1].shape:
            kind = OpKind.ADD
        else:
            kind = OpKind.ELEMENTWISE
        for r in o.outputs:
            if kind is not None:
                kind_of_value[r.value] = kind
        result.append(replace(o, kind=kind))
    return result


def trace(fn: Callable[..., Any], *args: Any, backward: bool = False, label: str = "",
          loss: Callable[[Any], Any] | None = None, module: Any = None, **kwargs: Any) -> tuple[OpGraph, Any]:
    """Run ``fn(*args, **kwargs)`` (a module or any callable) and return ``(graph, result)``.

    ``backward``: also run the backward pass of ``loss(result)`` (default: the sum of the result) and
    record its ops (``TracedOp.backward``). Module scopes come from the submodules of ``module`` (default:
    ``fn`` itself when it is an ``nn.Module``).
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the tests install torch
        raise ConfigError("tracing needs PyTorch: pip install 'xpusim[torch]'", field="torch") from exc

    names: dict[int, str] = {}
    root = module if module is not None else fn
    if isinstance(root, torch.nn.Module):
        names = {id(m): n for n, m in root.named_modules()}
    rec = _Recorder(names)
    types: dict[tuple[str, int], str] = {}

    def pre(module: Any, _args: Any) -> None:
        path = rec.names.get(id(module))
        if path is None:
            return
        call = next(rec.calls)
        types[(path, call)] = type(module).__name__
        rec.scopes.append((path, call, type(module).__name__))

    def post(module: Any, _args: Any, _out: Any) -> None:
        if id(module) in rec.names and rec.scopes:
            rec.scopes.pop()

    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    mode = _Mode.get()(rec)
    try:
        with mode:
            result = fn(*args, **kwargs)
            if backward:
                rec.backward = True
                target = loss(result) if loss is not None else (result if result.dim() == 0 else result.sum())
                target.backward()
    finally:
        for h in handles:
            h.remove()
    ops = _assign_kinds(rec.ops, types)
    device = "cpu"
    first = next((o for o in ops if o.outputs), None)
    if any(o.stream for o in ops) or (first is not None and torch.cuda.is_available()
                                      and _tensors(result) and _tensors(result)[0].is_cuda):
        device = "cuda"
    return OpGraph(ops, device=device, label=label), result


# ---------------------------------------------------------------- fusion view


def _region_elems(refs: Iterable[TensorRef]) -> int:
    """Elements covered by the union of these views of one storage."""
    refs = list({(r.offset, r.shape, r.stride): r for r in refs}.values())
    if len(refs) == 1:
        return refs[0].numel
    import numpy as np  # only the fusion view needs it; tracing and reading a run do not

    size = max(r.storage_elems for r in refs)
    mask = np.zeros(size, dtype=bool)
    for r in refs:
        if not r.numel:
            continue
        view = np.lib.stride_tricks.as_strided(mask[r.offset:], shape=r.shape,
                                               strides=tuple(s * mask.itemsize for s in r.stride))
        view[...] = True  # writes through the view into the mask (as_strided shares memory)
    return int(mask.sum())


def _group_bytes(group: list[TracedOp], readers_outside: set[int], read_values: set[int]) -> tuple[float, float]:
    written = {r.value for o in group for r in o.outputs}
    reads: dict[int, list[TensorRef]] = {}
    for o in group:
        if o.aten.endswith("::embedding") or o.aten.endswith("::index_select"):
            continue  # counted below with the op's own gather bytes
        for r in o.inputs:
            if r.value not in written:
                reads.setdefault(r.value, []).append(r)
    rd = float(sum(_region_elems(rs) * rs[0].itemsize for rs in reads.values()))
    rd += sum(o.bytes_read for o in group if o.aten.endswith(("::embedding", "::index_select")))
    writes: dict[int, list[TensorRef]] = {}
    for o in group:
        for r in o.outputs:
            if o.aclass is not AtenClass.VIEW and (r.value in readers_outside or r.value not in read_values):
                writes.setdefault(r.value, []).append(r)
    wr = float(sum(_region_elems(ws) * ws[0].itemsize for ws in writes.values()))
    return rd, wr


def _fuse(ops: list[TracedOp]) -> list[Op]:
    costed = [o for o in ops if o.costs and o.kind is not None]
    # group: consecutive costed ops of one memory-bound kind in one module call
    groups: list[list[TracedOp]] = []
    for o in costed:
        compute = o.op is not None
        if (groups and not compute and groups[-1][0].op is None and groups[-1][0].kind is o.kind
                and (groups[-1][0].scope, groups[-1][0].call) == (o.scope, o.call)):
            groups[-1].append(o)
        else:
            groups.append([o])
    group_of: dict[int, int] = {o.index: g for g, grp in enumerate(groups) for o in grp}
    # for each value: the groups that read it (views forward the read to the op that reads the view)
    readers: dict[int, set[int]] = {}
    for o in costed:
        for r in o.inputs:
            readers.setdefault(r.value, set()).add(group_of[o.index])
    read_values = set(readers)
    out: list[Op] = []
    for g, grp in enumerate(groups):
        first = grp[0]
        if first.op is not None:
            out.append(first.op)
            continue
        outside = {v for v, gs in readers.items() if gs - {g}}
        rd, wr = _group_bytes(grp, outside, read_values)
        rows = first.outputs[0].numel // max(1, first.outputs[0].shape[-1]) if first.outputs and \
            first.outputs[0].shape else 1
        assert first.kind is not None
        out.append(MemoryOp(f"{first.scope or 'top'}.{first.kind.value}", first.kind, rows, rd, wr,
                            flops=sum(o.flops for o in grp), kernels=len(grp)))
    return out


def summarize(ops: Iterable[Op]) -> dict[str, tuple[float, float]]:
    """(FLOPs, bytes) per op kind of a list of xpusim ops."""
    out: dict[str, tuple[float, float]] = {}
    for op in ops:
        f, b = out.get(op.kind.value, (0.0, 0.0))
        out[op.kind.value] = (f + op.flops, b + op.bytes)
    return out
