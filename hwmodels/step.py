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

import math
from functools import lru_cache

import numpy as np

from hwmodels.gpu import GPUSpec
from hwmodels.kernels import GPUKernelModel
from workloads.errors import ConfigError
from workloads.llm_ops import Batch, check_tp, head_ops, layer_ops
from workloads.model_spec import ModelSpec
from workloads.ops import DecodeAttention, DType, OpKind, PrefillAttention

_ATTN = (OpKind.ATTN_PREFILL, OpKind.ATTN_DECODE)
_GRID_POINTS = 64
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

    # ---- memoised pieces -------------------------------------------------------------------
    def layer_rest(self, tokens: int) -> float:
        """One layer's time without attention, for ``tokens`` tokens (TP all-reduces included)."""
        t = self._rest.get(tokens)
        if t is None:
            ops = layer_ops(self.model, Batch(prefill=((tokens, tokens),)), self.tp, self.dtype)
            t = sum(self.kernels.time(op) for op in ops if op.kind not in _ATTN)
            self._rest[tokens] = t
        return t

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
        steps = np.arange(k, dtype=np.float64)
        s = kv_sum + n * steps
        mx = kv_max + steps
        m = min(self.pp, n)
        if m == 1:
            per_layer = self.layer_rest(n) + self.decode_attention(n, s, mx)
            layers = self._pipeline_vec(self.layers_per_stage * per_layer, n, 1)
        else:
            per_layer = self.layer_rest(math.ceil(n / m)) + self.decode_attention(math.ceil(n / m), s / m, mx)
            layers = self._pipeline_vec(self.layers_per_stage * per_layer, n, m)
        return layers + self._head(n, n)

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
