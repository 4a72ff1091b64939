"""Time of one forward iteration of a model replica (TP within a node, PP stages within a node).

``StepTimeModel(model, gpu, tp, pp)`` answers two questions, fast:

* ``iteration_time(batch)``: seconds of one iteration of a mixed batch (``workloads.llm_ops.Batch``);
* ``decode_times(n, kv_sum, kv_max, k)``: the k step times of a decode-only stretch where ``n`` sequences
  each add one token per step (total KV length ``kv_sum + j*n`` at step j), as a numpy array.

Both come from ``GPUKernelModel`` (the per-kernel model) without re-walking the op list per call:

* everything but attention depends only on the token count T (and the logits count S): one layer's
  non-attention time ``layer_rest(T)`` (QKV/O/MLP GEMMs, norms, rope, add, TP all-reduces), and the
  head ``emb(T) + lm_head(S)``; each is costed once per (model, gpu, tp, value) and memoised;
* decode attention: exact (one kernel-model call) in ``iteration_time``; in ``decode_times``
  (decode-only steps, stepped or fast-forwarded) a closed form of (n, total KV S, longest KV M):
  the larger of n equal sequences of total S and of one sequence of M beside n - 1 one-token ones,
  each costed on a geometric grid (built once per n) and linearly interpolated;
* prefill attention is costed exactly per distinct tuple of (q_len, kv_len) chunks, memoised.

``reference_time(batch)`` sums the kernel model over every op of ``llm_ops`` (the slow, exact
path); tests/test_step.py shows the fast path within 1% of it.

Pipeline parallelism (pp stages, one node): the iteration's sequences are split into
``m = min(pp, sequences)`` micro-batches of equal share; each stage holds ``L/pp`` layers; the
micro-batches flow through the stages as a pipeline, so the iteration takes
``(m + pp - 1)`` micro-batch stage times plus one activation send per stage boundary, plus the
head (embedding on the first stage, LM head on the last) once. With pp = 1 this is the plain sum.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import GPUKernelModel
from hwmodels.kernels import gemm as _gemm
from workloads.errors import ConfigError
from workloads.llm_ops import Batch, check_tp, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DecodeAttention, DType, Gemm, OpKind, PrefillAttention

try:   # np.interp without its argument checks (the same compiled routine: same values)
    from numpy._core.multiarray import interp as _interp
except ImportError:  # pragma: no cover - other numpy layouts
    _interp = np.interp

log = logging.getLogger(__name__)

_ATTN = (OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE)
_GRID_POINTS = 64
_GEMM_TABLE_MIN = 2048
# m values where the vectorised GEMM table is checked against the kernel model when it is built
# (tile edges of every candidate tile, split-K and wave boundaries of small and large grids)
_GEMM_PROBES = (1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 1000,
                1023, 1024, 1025, 2047, 2048)


def gemm_times_over_m(kernels: GPUKernelModel, n: int, k: int, dtype: DType, ms: np.ndarray) -> np.ndarray:
    """``kernels.time(Gemm(m, n, k))`` for every m of ``ms`` at once: the same arithmetic as
    ``hwmodels.kernels.gemm.gemm_cost`` (and ``memory.stream_time``), elementwise in numpy, in the
    same operation order, so that each value is bit-identical to the scalar call.
    ``StepTimeModel`` checks that on probe values before trusting it, and tests/test_step.py
    over whole ranges; the kernel model stays the definition."""
    gpu, cal, stack = kernels.gpu, kernels.cal, kernels.stack
    sms = gpu.sm_count
    b = dtype.bytes
    m = np.asarray(ms, dtype=np.int64)
    rate_sm = gpu.peak_flops(dtype) * cal.gemm_peak_eff * stack.gemm_eff / sms
    dram = gpu.memory_bandwidth * cal.mem_eff * stack.gemm_bw_eff
    l2 = gpu.l2_cache_bytes
    best = None
    for bm, bn in _gemm.TILES:
        tiles = -(-m // bm) * math.ceil(n / bn)
        tile_eff = 1.0 / (1.0 + cal.gemm_feed_elems * (1.0 / bm + 1.0 / bn))
        fill = sms // np.maximum(1, tiles)
        for s_opt in (1, 2, 4, 8, 16, None):   # _gemm.split_options: fixed factors, then the SM-filling one
            split = fill if s_opt is None else np.full_like(m, s_opt)
            valid = (split == 1) | ((split > 1) & (split <= _gemm.MAX_SPLIT) & (tiles * split <= sms)
                                    & (k / np.maximum(split, 1) >= _gemm.MIN_SPLIT_K))
            if s_opt is None:
                valid &= split > 1
            split = np.maximum(split, 1)
            ctas = tiles * split
            waves = -(-ctas // sms)
            t_tile = 2.0 * bm * bn * -(-k // split) / (rate_sm * tile_eff)
            compute = waves * t_tile
            nbytes = (b * (m * k + k * n + m * n)).astype(np.float64)
            nbytes = np.where(split > 1, nbytes + 4.0 * m * n * split * 2, nbytes)
            cap = gpu.memory_bandwidth * cal.sm_bw_share * np.minimum(np.maximum(ctas, 1), sms) / sms
            if l2 <= 0:
                hit = np.zeros_like(nbytes)
            else:
                ws = np.maximum(nbytes, l2)
                hit = np.minimum(1.0, np.maximum(0.0, (l2 - ws) / (0.5 * l2)))
            rate_dram = np.minimum(dram, cap)
            rate_l2 = rate_dram * cal.l2_bw_mult
            memory = nbytes * (hit / rate_l2 + (1.0 - hit) / rate_dram)
            t = waves * cal.gemm_tile_s + np.maximum(compute, memory) \
                + cal.gemm_overlap_loss * np.minimum(compute, memory)
            t = np.where(valid, t, np.inf)
            best = t if best is None else np.minimum(best, t)
    assert best is not None
    return best + cal.launch_s
P2P_LATENCY_S = 10e-6  # one point-to-point activation send between PP stages (NCCL latency)


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
        self._rest: dict[int, float] = {}
        self._emb: dict[int, float] = {}
        self._logits: dict[int, float] = {}
        self._grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._max_grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._prefill = lru_cache(maxsize=65536)(self._prefill_attention_uncached)
        self._gemm_tables: dict[tuple[int, int, DType], np.ndarray] = {}
        self._gemm_vector_ok: bool | None = None
        self._decode_consts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float, int]] = {}

    # ---- memoised pieces -------------------------------------------------------------------
    def layer_rest(self, tokens: int) -> float:
        """One layer's time without attention, for ``tokens`` tokens (TP all-reduces included)."""
        t = self._rest.get(tokens)
        if t is None:
            ops = layer_ops(self.model, Batch(prefill=((tokens, tokens),)), self.tp, self.dtype)
            t = 0.0   # summed in op order, as the kernel-model sum would
            for op in ops:
                if op.kind in _ATTN:
                    continue
                t += self._gemm_time(op) if isinstance(op, Gemm) else self.kernels.time(op)
            self._rest[tokens] = t
        return t

    def _gemm_time(self, op: Gemm) -> float:
        """``kernels.time(op)``, from a per-(n, k, dtype) table over m (built vectorised, grown by
        doubling); the scalar kernel model where the table's probe check failed."""
        if self._gemm_vector_ok is None:
            self._gemm_vector_ok = self._check_gemm_vector(op)
        if not self._gemm_vector_ok:
            return self.kernels.time(op)
        key = (op.n, op.k, op.dtype)
        tab = self._gemm_tables.get(key)
        if tab is None or op.m >= tab.size:
            size = max(_GEMM_TABLE_MIN, 2 * (tab.size if tab is not None else 0), op.m + 1)
            tab = gemm_times_over_m(self.kernels, op.n, op.k, op.dtype, np.arange(size))
            tab[0] = 0.0
            self._gemm_tables[key] = tab
        return float(tab[op.m])

    def _check_gemm_vector(self, op: Gemm) -> bool:
        ms = np.array(_GEMM_PROBES)
        fast = gemm_times_over_m(self.kernels, op.n, op.k, op.dtype, ms)
        for m, f in zip(_GEMM_PROBES, fast.tolist()):
            ref = self.kernels.time(Gemm(op.name, m, op.n, op.k, op.dtype))
            if f != ref:
                log.warning("vectorised GEMM table differs from the kernel model (m=%d n=%d k=%d: %r vs %r); "
                            "using the scalar kernel model", m, op.n, op.k, f, ref)
                return False
        return True

    def _head(self, tokens: int, logits: int) -> float:
        e = self._emb.get(tokens)
        if e is None:
            ops = head_ops(self.model, Batch(prefill=((tokens, tokens),), logits=0),
                           self.tp, self.dtype) if tokens else []
            e = sum(self.kernels.time(op) for op in ops)
            self._emb[tokens] = e
        s = self._logits.get(logits)
        if s is None:
            ops = head_ops(self.model, Batch(logits=logits), self.tp, self.dtype) if logits else []
            s = sum(self.kernels.time(op) for op in ops)
            self._logits[logits] = s
        return e + s

    def _prefill_attention_uncached(self, seqs: tuple[tuple[int, int], ...]) -> float:
        op = PrefillAttention("attn_prefill", self.q_heads, self.kv_heads, self.model.head_dim, seqs,
                              self.dtype)
        return self.kernels.time(op)

    def _grid(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        g = self._grids.get(n)
        if g is None:
            hi = max(2.0, float(self.max_kv_len))
            per_seq = np.unique(np.round(np.geomspace(1.0, hi, _GRID_POINTS)).astype(np.int64))
            xs = per_seq * n
            ys = np.array([self._decode_exact(n, int(s)) for s in xs])
            g = (xs.astype(np.float64), ys)
            self._grids[n] = g
        return g

    def _max_grid(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        g = self._max_grids.get(n)
        if g is None:
            hi = max(2.0, float(self.max_kv_len))
            xs = np.unique(np.round(np.geomspace(1.0, hi, _GRID_POINTS)).astype(np.int64))
            ys = np.array([self._decode_lens((int(m),) + (1,) * (n - 1)) for m in xs])
            g = (xs.astype(np.float64), ys)
            self._max_grids[n] = g
        return g

    def _decode_exact(self, n: int, kv_sum: int) -> float:
        base, extra = divmod(kv_sum, n)
        return self._decode_lens(tuple([base + 1] * extra + [base] * (n - extra)))

    def _decode_lens(self, lens: tuple[int, ...]) -> float:
        op = DecodeAttention("attn_decode", self.q_heads, self.kv_heads, self.model.head_dim, lens, self.dtype)
        return self.kernels.time(op)

    def decode_attention(self, n: int, kv_sum: np.ndarray | float,
                         kv_max: np.ndarray | float) -> np.ndarray | float:
        """Decode attention time of ``n`` sequences whose KV lengths sum to ``kv_sum`` with the
        longest ``kv_max`` (vectorised): the larger of n equal sequences of the same total (the
        work spread over the SMs and the bytes streamed) and of the longest sequence alone next
        to n - 1 one-token ones (the critical path of its CTAs)."""
        xs, ys = self._grid(n)
        mx, my = self._max_grid(n)
        return np.maximum(np.interp(kv_sum, xs, ys), np.interp(kv_max, mx, my))

    # ---- iteration times ---------------------------------------------------------------------
    def _pipeline(self, stage_layer_s: float, tokens: int, micro: int) -> float:
        """Layers part of an iteration: pp stages, ``micro`` micro-batches each of stage time
        ``stage_layer_s`` (layers of one stage for one micro-batch)."""
        if self.pp == 1:
            return stage_layer_s
        send = P2P_LATENCY_S + (tokens / micro) * self.model.hidden_size * self.dtype.bytes \
            / self.gpu.interconnect_bandwidth
        return (micro + self.pp - 1) * (stage_layer_s + send)

    def iteration_time(self, batch: Batch) -> float:
        """Seconds for one iteration of ``batch`` through all layers and the head."""
        t = batch.num_tokens
        if t == 0:
            return 0.0
        nseq = len(batch.prefill) + len(batch.decode)
        m = min(self.pp, nseq)
        if m == 1:
            per_layer = self.layer_rest(t)
            if batch.prefill:
                per_layer += self._prefill(tuple(batch.prefill))
            if batch.decode:
                per_layer += self._decode_lens(tuple(batch.decode))
            layers = self._pipeline(self.layers_per_stage * per_layer, t, 1)
        else:
            # equal micro-batches: 1/m of the tokens, of the decodes and of the prefill chunks
            tm = math.ceil(t / m)
            per_layer = self.layer_rest(tm)
            if batch.prefill:
                per_layer += self._prefill(tuple(batch.prefill)) / m
            if batch.decode:
                nd = max(1, math.ceil(len(batch.decode) / m))
                per_layer += float(self.decode_attention(nd, sum(batch.decode) / m, float(max(batch.decode))))
            layers = self._pipeline(self.layers_per_stage * per_layer, t, m)
        return layers + self._head(t, batch.num_logits)

    def decode_times(self, n: int, kv_sum: int, kv_max: int, k: int) -> np.ndarray:
        """Seconds of each of ``k`` decode-only steps of ``n`` sequences; at step j the KV lengths
        (each sequence's new token included) sum to ``kv_sum + j*n``, the longest is
        ``kv_max + j``. Step j equals ``iteration_time(Batch(decode=...))`` for those lengths."""
        c = self._decode_consts.get(n)
        if c is None:
            c = self._decode_consts[n] = self._decode_setup(n)
        xs, ys, mxs, mys, rest, head, m = c
        steps = np.arange(k, dtype=np.float64)
        s = kv_sum + n * steps
        mx = kv_max + steps
        att = np.maximum(_interp(s if m == 1 else s / m, xs, ys), _interp(mx, mxs, mys))
        stage = self.layers_per_stage * (rest + att)
        if self.pp == 1:
            return stage + head
        return self._pipeline_vec(stage, n, m) + head

    def _decode_setup(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float, int]:
        """Per-n constants of ``decode_times``: the attention grids of a micro-batch's sequence
        count, the layer time without attention, the head, the micro-batch count."""
        m = min(self.pp, n)
        nm = n if m == 1 else math.ceil(n / m)
        xs, ys = self._grid(nm)
        mxs, mys = self._max_grid(nm)
        return xs, ys, mxs, mys, self.layer_rest(nm), self._head(n, n), m

    def _pipeline_vec(self, stage: np.ndarray, tokens: int, micro: int) -> np.ndarray:
        if self.pp == 1:
            return stage
        send = P2P_LATENCY_S + (tokens / micro) * self.model.hidden_size * self.dtype.bytes \
            / self.gpu.interconnect_bandwidth
        return (micro + self.pp - 1) * (stage + send)

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
