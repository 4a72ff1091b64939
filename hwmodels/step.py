"""Time of one forward iteration of a model replica (TP within a node, PP stages within a node).

``StepTimeModel(model, gpu, tp, pp)`` answers two questions, fast:

* ``iteration_time(batch)``: seconds of one iteration of a mixed batch (``workloads.llm_ops.Batch``);
* ``decode_times(kv_lens, k)``: the k step times of a decode-only stretch where every sequence adds
  one token per step (KV lengths ``kv_lens + j`` at step j), as a numpy array.

The serving simulation calls the same answers through ``batch_time`` (a batch given by its parts, no
``Batch`` object) and ``decode_times_mapped`` (a stretch's times mapped to the clock's integer ns,
memoised per run of equal KV-tile counts); both give exactly the values above.

Both come from ``GPUKernelModel`` (the per-kernel model) without re-walking the op list per call:

* everything but attention depends only on the token count T (and the logits count S): one layer's
  non-attention time ``layer_rest(T)`` (QKV/O/MLP GEMMs, norms, rope, add, TP all-reduces), and the
  head ``emb(T) + lm_head(S)``; each is costed once per (model, gpu, tp, value) and memoised;
* decode attention: exact; in ``decode_times`` the kernel model's stretch evaluation
  (``GPUKernelModel.decode_stretch_times``) costs the k calls at once, equal to k separate calls;
* prefill attention is costed exactly per distinct tuple of (q_len, kv_len) chunks, memoised.

``reference_time(batch)`` sums the kernel model over every op of ``llm_ops`` (the slow, exact
path); tests/test_step.py shows the fast path within 1% of it.

Pipeline parallelism (pp stages, one node): the iteration's sequences are split into
``m = min(pp, sequences)`` micro-batches of equal share; each stage holds ``L/pp`` layers; the
micro-batches flow through the stages as a pipeline, so the iteration takes
``(m + pp - 1)`` micro-batch stage times plus one activation send per stage boundary (the network
fabric's send/recv on the GPU's node type, :func:`hwmodels.kernels.comm.p2p_time`), plus the
head (embedding on the first stage, LM head on the last) once. With pp = 1 this is the plain sum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import GPUKernelModel
from hwmodels.kernels.attention import (
    DecodeShape,
    attention_calibration_for,
    decode_shape,
    decode_stretch,
    decode_stretch_mapped,
    varlen_shape,
)
from hwmodels.kernels.calibration import Calibration
from hwmodels.kernels.comm import p2p_time
from hwmodels.kernels.gemm import gemm_times
from hwmodels.kernels.memory import ROW_BYTES_PER_CTA, grid_eff
from hwmodels.kernels.stack import Geometry, Stack
from workloads.errors import ConfigError
from workloads.llm_ops import Batch, check_tp, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DecodeAttention, DType, Gemm, MemoryOp, Op, OpKind, PrefillAttention

log = logging.getLogger(__name__)

_ATTN = (OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE)
_GEMM_TABLE_MIN = 2049   # m = 0..2048: the default token budget without a rebuild


class StepTimeModel:
    def __init__(self, model: ModelSpec, gpu: GPUSpec, tp: int = 1, pp: int = 1,
                 dtype: DType = DType.BF16, max_kv_len: int | None = None) -> None:
        check_tp(model, tp)
        if pp < 1 or pp > model.num_layers:
            raise ConfigError(f"pipeline parallel degree must be in 1..{model.num_layers}, got {pp}",
                              field="pp", value=pp)
        self.model, self.gpu, self.tp, self.pp, self.dtype = model, gpu, tp, pp, dtype
        self.kernels = GPUKernelModel(gpu)
        self.layers_per_stage = math.ceil(model.num_layers / pp)
        self.q_heads = model.num_heads // tp
        self.kv_heads = max(1, model.num_kv_heads // tp)
        self.max_kv_len = max_kv_len or model.max_position_embeddings
        self._rest: dict[int, float] = {}   # layer_rest op by op (when the table cannot be built)
        self._rest_tab: list[float] | None = None   # layer_rest by token count, built at once
        self._rest_vec = True   # False once the table could not be built
        self._emb_tab: list[float] | None = None
        self._emb_vec = True
        self._emb: dict[int, float] = {}
        self._logits: dict[int, float] = {}
        self._prefill = lru_cache(maxsize=65536)(self._prefill_attention_uncached)
        self._gemm_tables: dict[tuple[int, int, DType], np.ndarray] = {}
        self._decode: dict[int, tuple[DecodeShape, float, float]] = {}   # n -> (shape, layer_rest, head)
        g = self.kernels.gpu   # varlen attention calls: the kernel model's cost, without op objects
        self._varlen = varlen_shape(PrefillAttention("attn_prefill", self.q_heads, self.kv_heads, model.head_dim,
                                                     ((1, 1),), dtype), g, attention_calibration_for(g, None))

    # ---- memoised pieces -------------------------------------------------------------------
    def layer_rest(self, tokens: int) -> float:
        """One layer's time without attention, for ``tokens`` tokens (TP all-reduces included)."""
        tab = self._rest_tab
        if tab is not None and tokens < len(tab):
            return tab[tokens]
        if self._rest_vec:
            tab = self._rest_tab = self._table(tokens, len(tab or ()), self._layer_scaled, self._layer_rest_op_by_op)
            if tab is not None:
                return tab[tokens]
            self._rest_vec = False
        t = self._rest.get(tokens)
        if t is None:
            t = self._rest[tokens] = self._layer_rest_op_by_op(tokens)
        return t

    def _layer_rest_op_by_op(self, tokens: int) -> float:
        """``layer_rest`` as the kernel model costs the ops of ``llm_ops`` one by one."""
        t = 0.0   # summed in op order, as the kernel-model sum would
        for op in layer_ops(self.model, Batch(prefill=((tokens, tokens),)), self.tp, self.dtype):
            if op.kind in _ATTN:
                continue
            t += self._gemm_time(op) if isinstance(op, Gemm) else self.kernels.time(op)
        return t

    def _layer_scaled(self, size: int) -> np.ndarray | None:
        """``layer_rest(T)`` for T = 1 .. size - 1 at once (None: the layer's ops are not all T times
        their one-token shapes, e.g. MoE experts)."""
        one, big = ([op for op in layer_ops(self.model, Batch(prefill=((n, n),)), self.tp, self.dtype)
                     if op.kind not in _ATTN] for n in (1, size - 1))
        ops = self._scaled_ops(one, big, size - 1)
        if ops is None:
            return None
        t = np.arange(1, size)
        acc = np.zeros(size - 1)
        for op in ops:   # summed in op order, elementwise: the scalar sum's values
            if isinstance(op, Gemm):
                acc += self._gemm_table(op.n, op.k, op.dtype, size)[1:]
            elif isinstance(op, MemoryOp):
                acc += memory_times(op, t, self.kernels.gpu, self.kernels.cal, self.kernels.stack)
            else:
                return None
        return acc

    def _emb_scaled(self, size: int) -> np.ndarray | None:
        """The embedding's time for T = 1 .. size - 1 at once (``_head`` with no logits)."""
        one, big = (head_ops(self.model, Batch(prefill=((n, n),), logits=0), self.tp, self.dtype)
                    for n in (1, size - 1))
        ops = self._scaled_ops(one, big, size - 1)
        if ops is None or not all(isinstance(op, MemoryOp) for op in ops):
            return None
        acc = np.zeros(size - 1)
        for op in ops:
            assert isinstance(op, MemoryOp)
            acc += memory_times(op, np.arange(1, size), self.kernels.gpu, self.kernels.cal, self.kernels.stack)
        return acc

    @staticmethod
    def _scaled_ops(one: list[Op], big: list[Op], n: int) -> list[Op] | None:
        """``one`` (the ops at one token) when every op of ``big`` (the same ops at ``n`` tokens) is
        ``n`` times its one-token shape (token rows, bytes); else None."""
        if len(one) != len(big):
            return None
        for a, b in zip(one, big):
            if type(a) is not type(b) or a.name != b.name:
                return None
            if isinstance(a, Gemm):
                assert isinstance(b, Gemm)
                ok = a.m == 1 and b.m == n and (b.n, b.k, b.dtype) == (a.n, a.k, a.dtype)
            elif isinstance(a, MemoryOp):
                assert isinstance(b, MemoryOp)
                ok = a.tokens == 1 and b.tokens == n and (b.kind, b.kernels) == (a.kind, a.kernels) \
                    and b.bytes_read == n * a.bytes_read and b.bytes_written == n * a.bytes_written
            else:   # TP all-reduces (their cost is not vectorised) and anything else: op by op
                ok = False
            if not ok:
                return None
        return one

    def _table(self, tokens: int, have: int, build: Callable[[int], np.ndarray | None],
               scalar: Callable[[int], float]) -> list[float] | None:
        """A per-token-count table (index T) covering ``tokens``, built at once by ``build`` and checked
        bit for bit against ``scalar`` (the op-by-op cost) at a few token counts; None when ``build``
        cannot, or its values differ (then the caller costs op by op)."""
        size = max(_GEMM_TABLE_MIN, 2 * have, tokens + 1)
        vals = build(size)
        if vals is None:
            return None
        tab = [0.0, *vals.tolist()]
        sms = self.kernels.gpu.sm_count
        for t in sorted({1, 2, min(sms, size - 1), min(sms + 1, size - 1), size // 2, size - 1}):
            if scalar(t) != tab[t]:
                log.warning("per-token-count table differs from the op-by-op cost at %d tokens "
                            "(%r vs %r): costing op by op", t, tab[t], scalar(t))
                return None
        return tab

    def _gemm_table(self, n: int, k: int, dtype: DType, size: int) -> np.ndarray:
        """The kernel model's GEMM times over m = 0 .. at least size - 1 for one (n, k, dtype)
        (:func:`hwmodels.kernels.gemm.gemm_times`, vectorised over m), grown by doubling."""
        key = (n, k, dtype)
        tab = self._gemm_tables.get(key)
        if tab is None or size > tab.size:
            size = max(_GEMM_TABLE_MIN, 2 * (tab.size if tab is not None else 0), size)
            kr = self.kernels
            tab = gemm_times(kr.gpu, kr.cal, kr.stack, n, k, np.arange(size), dtype)
            self._gemm_tables[key] = tab
        return tab

    def _gemm_time(self, op: Gemm) -> float:
        """``kernels.time(op)`` from the per-(n, k, dtype) table over m."""
        return float(self._gemm_table(op.n, op.k, op.dtype, op.m + 1)[op.m])

    def _head(self, tokens: int, logits: int) -> float:
        tab = self._emb_tab
        if tab is not None and tokens < len(tab):
            e = tab[tokens]
        else:
            if self._emb_vec:
                tab = self._emb_tab = self._table(tokens, len(tab or ()), self._emb_scaled, self._emb_op_by_op)
                self._emb_vec = tab is not None
            if tab is not None:
                e = tab[tokens]
            else:
                got = self._emb.get(tokens)
                e = self._emb[tokens] = self._emb_op_by_op(tokens) if got is None else got
        s = self._logits.get(logits)
        if s is None:
            ops = head_ops(self.model, Batch(logits=logits), self.tp, self.dtype) if logits else []
            s = sum(self.kernels.time(op) for op in ops)
            self._logits[logits] = s
        return e + s

    def _emb_op_by_op(self, tokens: int) -> float:
        ops = head_ops(self.model, Batch(prefill=((tokens, tokens),), logits=0), self.tp, self.dtype) if tokens else []
        return sum(self.kernels.time(op) for op in ops)

    def _prefill_attention_uncached(self, seqs: tuple[tuple[int, int], ...]) -> float:
        """``kernels.time`` of the varlen call over ``seqs`` (``attention.prefill_attention_time``)."""
        return self._varlen.time(seqs)

    def _decode_lens(self, lens: tuple[int, ...]) -> float:
        op = DecodeAttention("attn_decode", self.q_heads, self.kv_heads, self.model.head_dim, lens, self.dtype)
        return self.kernels.time(op)

    def _decode_stretch(self, lens: Sequence[int], k: int) -> np.ndarray:
        op = DecodeAttention("attn_decode", self.q_heads, self.kv_heads, self.model.head_dim, tuple(lens),
                             self.dtype)
        return self.kernels.decode_stretch_times(op, k)

    def _micro_decode(self, lens: Sequence[int], m: int, k: int) -> np.ndarray:
        """Decode attention of one of ``m`` equal micro-batches over ``k`` steps: the mean over the
        micro-batches (sequences dealt round-robin) of each one's exact time."""
        if m == 1:
            return self._decode_stretch(lens, k)
        total = self._decode_stretch(lens[0::m], k)
        for i in range(1, m):
            total = total + self._decode_stretch(lens[i::m], k)
        return total / m

    # ---- iteration times ---------------------------------------------------------------------
    def _pipeline(self, stage_layer_s: float, tokens: int, micro: int) -> float:
        """Layers part of an iteration: pp stages, ``micro`` micro-batches each of stage time
        ``stage_layer_s`` (layers of one stage for one micro-batch)."""
        if self.pp == 1:
            return stage_layer_s
        return (micro + self.pp - 1) * (stage_layer_s + self._send(tokens, micro))

    def _attention(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...]) -> float:
        """One layer's attention kernels for these sequences (``llm_ops.attention_ops``: one varlen
        call when any prefill is present, else one decode call). Prefill-only calls are memoised."""
        if prefill and not decode:
            return self._prefill(prefill)
        if not prefill:
            return self._decode_lens(decode)
        return self._varlen.time(prefill, decode)   # the varlen call over prefill + ((1, kv) per decode)

    def iteration_time(self, batch: Batch) -> float:
        """Seconds for one iteration of ``batch`` through all layers and the head."""
        return self.batch_time(tuple(batch.prefill), tuple(batch.decode), batch.num_tokens, batch.num_logits)

    def batch_time(self, prefill: tuple[tuple[int, int], ...], decode: tuple[int, ...], tokens: int,
                   logits: int) -> float:
        """``iteration_time`` of the batch given by its parts (``tokens``: its token count,
        ``logits``: the sequences that sample), without building a ``Batch``."""
        t = tokens
        if t == 0:
            return 0.0
        nseq = len(prefill) + len(decode)
        m = min(self.pp, nseq)
        if m == 1:
            per_layer = self.layer_rest(t) + self._attention(prefill, decode)
            layers = self._pipeline(self.layers_per_stage * per_layer, t, 1)
        else:
            # m micro-batches, sequences dealt round-robin; a stage's time is the mean micro-batch
            seqs = [(q, kv) for q, kv in prefill] + [(0, kv) for kv in decode]
            att = 0.0
            for i in range(m):
                part = seqs[i::m]
                att += self._attention(tuple((q, kv) for q, kv in part if q > 0),
                                       tuple(kv for q, kv in part if q == 0))
            per_layer = self.layer_rest(math.ceil(t / m)) + att / m
            layers = self._pipeline(self.layers_per_stage * per_layer, t, m)
        return layers + self._head(t, logits)

    def decode_times(self, kv_lens: Sequence[int], k: int) -> np.ndarray:
        """Seconds of each of ``k`` decode-only steps of the sequences ``kv_lens`` (KV lengths, each
        sequence's new token included), every sequence one token longer per step. Step j equals
        ``iteration_time(Batch(decode=[x + j for x in kv_lens]))``, computed at once."""
        n = len(kv_lens)
        if self.pp == 1 and n and k > 0:   # the common case: one shape per n, constants memoised
            sh, rest, head = self._decode_consts(kv_lens)
            return self.layers_per_stage * (rest + decode_stretch(sh, kv_lens, k)) + head
        m = min(self.pp, n)
        nm = n if m == 1 else math.ceil(n / m)
        stage = self.layers_per_stage * (self.layer_rest(nm) + self._micro_decode(kv_lens, m, k))
        return self._pipeline_vec(stage, n, m) + self._head(n, n)

    def _decode_consts(self, kv_lens: Sequence[int]) -> tuple[DecodeShape, float, float]:
        n = len(kv_lens)
        c = self._decode.get(n)
        if c is None:
            op = DecodeAttention("attn_decode", self.q_heads, self.kv_heads, self.model.head_dim,
                                 tuple(kv_lens), self.dtype)
            g = self.kernels.gpu
            c = self._decode[n] = (decode_shape(op, g, attention_calibration_for(g, None)), self.layer_rest(n),
                                   self._head(n, n))
        return c

    def decode_times_mapped(self, kv_lens: Sequence[int], k: int, post: Callable[[np.ndarray], np.ndarray],
                            tables: dict[int, Any]) -> np.ndarray:
        """``post(decode_times(kv_lens, k))`` for an elementwise ``post`` (the serving clock's
        conversion to integer ns), memoised: ``tables`` (the caller's, one per ``post``) keeps per
        sequence count the shape, the step times' mapping and the mapped step times of each run of
        equal KV-tile counts over the summed KV length (``attention.decode_stretch_mapped``), so a
        stretch is a few slices. Same values."""
        n = len(kv_lens)
        if self.pp != 1 or not n or k <= 0:
            return post(self.decode_times(kv_lens, k))
        ent = tables.get(n)
        if ent is None:   # per sequence count: the shape, the run tables, and the step times' mapping
            sh, rest, head = self._decode_consts(kv_lens)
            layers = self.layers_per_stage

            def step_post(t: np.ndarray) -> np.ndarray:
                return post(layers * (rest + t) + head)

            ent = tables[n] = (sh, {}, step_post)
        return decode_stretch_mapped(ent[0], kv_lens, k, ent[2], ent[1])

    def _pipeline_vec(self, stage: np.ndarray, tokens: int, micro: int) -> np.ndarray:
        if self.pp == 1:
            return stage
        return (micro + self.pp - 1) * (stage + self._send(tokens, micro))

    def _send(self, tokens: int, micro: int) -> float:
        """One micro-batch's activations ([tokens / micro, hidden]) sent across a stage boundary."""
        return p2p_time(float(math.ceil(tokens / micro) * self.model.hidden_size * self.dtype.bytes), self.gpu)

    # ---- slow exact reference ----------------------------------------------------------------
    def reference_time(self, batch: Batch) -> float:
        """Sum of the kernel model over every op of ``llm_ops`` (pp = 1 only): the fast path's
        ground truth."""
        layer = sum(self.kernels.time(op) for op in layer_ops(self.model, batch, self.tp, self.dtype))
        head = sum(self.kernels.time(op) for op in head_ops(self.model, batch, self.tp, self.dtype))
        return self.model.num_layers * layer + head

    # ---- work counters (for MFU / MBU) -------------------------------------------------------
    def flops(self, tokens: float, attn_pairs: float) -> float:
        """FLOPs of a replica iteration: matmuls over ``tokens`` plus QK^T and PV over
        ``attn_pairs`` (query, key) pairs summed over sequences."""
        return 2.0 * self.model.matmul_params_per_token() * tokens \
            + 4.0 * self.model.num_layers * self.model.q_size * attn_pairs

    def weight_bytes(self) -> float:
        return float(self.model.weight_bytes(self.dtype.bytes))

    def kv_bytes_per_token(self) -> float:
        return float(self.model.kv_bytes_per_token(self.dtype.bytes))


# ---- memory-bound ops over every token count at once ----------------------------------------------
def _hit(gpu: GPUSpec, working_set: np.ndarray | float) -> np.ndarray | float:
    """``memory.l2_hit_fraction`` elementwise."""
    l2 = gpu.l2_cache_bytes
    if l2 <= 0:
        return 0.0
    return np.minimum(1.0, np.maximum(0.0, (l2 - working_set) / (0.5 * l2)))


def memory_times(op: MemoryOp, tokens: np.ndarray, gpu: GPUSpec, cal: Calibration, stack: Stack) -> np.ndarray:
    """``memory.memory_op_cost(op scaled to T tokens)[0]`` for every T of ``tokens`` (integers >= 1) at
    once: ``op`` is the op at one token, every byte count T times its own (as ``llm_ops`` writes them).
    The same arithmetic in the same order, elementwise (so the same float values); the caller checks a
    few entries against the scalar cost."""
    t = tokens.astype(np.int64)
    read, written = op.bytes_read * t, op.bytes_written * t
    nbytes = read + written
    if op.kind is OpKind.EMBEDDING:   # memory.gather_cost
        chain = cal.launch_s + t * stack.gather_index_latencies * cal.mem_latency_s
        elems = written / 2.0
        clock = gpu.boost_clock_hz or 1.5e9
        issue = elems / (gpu.sm_count * clock * stack.gather_elems_per_sm_cycle)
        mem = _stream(gpu, cal, nbytes.astype(float), float(gpu.sm_count), 1.0, None)
        return np.where(t <= stack.gather_small_max, chain, cal.launch_s + (cal.mem_latency_s + np.maximum(issue, mem)))
    impl = stack.impl(op.kind)
    kernels = max(1, op.kernels) * impl.kernels
    per_kernel = nbytes / kernels
    if impl.geometry is Geometry.ROW:   # memory._row_time
        width = written / (kernels * t * 2.0)
        if not (width == width[0]).all():
            raise ValueError(f"{op.name}: row width varies with the token count")
        w = float(width[0])
        ws = per_kernel if stack.l2_credit else math.inf
        cta_bytes = per_kernel / t
        sms = gpu.sm_count
        threads = min(impl.block_threads, max(32, 32 * math.ceil(w / impl.vec / 32)))
        iters = math.ceil(w / (threads * impl.vec))
        per_round = max(1, cal.threads_per_sm // threads)
        per_sm = np.ceil(t / sms)
        rounds = np.ceil(per_sm / per_round)
        active = np.minimum(t, sms)
        port = cal.gemm_l2_bytes_per_clk_sm * (gpu.boost_clock_hz or 1.5e9)
        dram = gpu.memory_bandwidth * cal.mem_eff * impl.bw_eff / active
        hit = _hit(gpu, ws)
        rate_dram = np.minimum(dram, port)
        rate_l2 = np.minimum(dram * cal.l2_bw_mult, port)
        mem = per_sm * cta_bytes * (hit / rate_l2 + (1.0 - hit) / rate_dram)
        chain = rounds * impl.passes * iters * cal.mem_latency_s
        body = kernels * (chain + mem)
    else:
        lat = impl.passes * cal.mem_latency_s
        ctas = np.maximum(t.astype(float), per_kernel / ROW_BYTES_PER_CTA)
        mem = _stream(gpu, cal, per_kernel, ctas, grid_eff(impl, gpu, cal), None if stack.l2_credit else math.inf)
        body = kernels * np.maximum(lat, mem)
    return kernels * cal.launch_s + body


def _stream(gpu: GPUSpec, cal: Calibration, nbytes: np.ndarray, ctas: np.ndarray | float, eff: float,
            working_set: float | None) -> np.ndarray:
    """``memory.stream_time`` elementwise (``nbytes`` > 0)."""
    sms = gpu.sm_count
    dram = gpu.memory_bandwidth * cal.mem_eff * eff
    cap = gpu.memory_bandwidth * cal.sm_bw_share * np.minimum(np.maximum(ctas, 1.0), sms) / sms
    hit = _hit(gpu, nbytes if working_set is None else working_set)
    rate_dram = np.minimum(dram, cap)
    rate_l2 = np.minimum(dram, cap) * cal.l2_bw_mult
    return nbytes * (hit / rate_l2 + (1.0 - hit) / rate_dram)
