"""Score the isolated-batch model against SplitwiseSim's measured ``perf_model.csv``.

Each distinct (model, TP, prompt, batch, output) of the file is simulated once, alone on an instance of
``tp`` GPUs (:meth:`hwmodels.engine.EngineStepTimeModel.isolated`: iterations prefilling the batch, whole
prompts, at most the engine's ``max_num_batched_tokens`` each, then ``output - 1`` decode steps), and compared
with every measured repeat: ``prompt_time`` with the prefill iterations together, ``token_time`` with the mean
decode step. A row whose batch does not fit the KV cache the memory model leaves (vLLM's start-up profile,
:func:`hwmodels.memory.memory_breakdown`, here over the whole batch's tokens) is skipped and counted, not
scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hwmodels.engine import EngineProfile, EngineStepTimeModel, load_engine, prefill_iterations
from hwmodels.gpu import GPUSpec
from hwmodels.memory import memory_breakdown
from workloads.accuracy import ErrorStats
from workloads.catalog import load_model
from workloads.errors import CapacityError
from workloads.measured_splitwise import SplitwiseRow

COLUMNS = ("prompt_time", "token_time")
DEFAULT_ENGINE = "vllm-splitwise"   # the engine the Splitwise file was measured under (engines.toml)


@dataclass(frozen=True)
class SplitwisePoint:
    row: SplitwiseRow
    prompt_s: float
    token_s: float
    peak_power_w: float = 0.0    # predicted: the larger of the prefill iteration's and a decode step's (0: off)


@dataclass(frozen=True)
class SplitwiseValidation:
    hardware: str
    engine: str
    stack: str
    overall: ErrorStats
    columns: dict[str, ErrorStats]
    groups: dict[str, dict[str, ErrorStats]]       # "model tpN" -> column -> stats
    points: tuple[SplitwisePoint, ...] = field(repr=False, default=())
    skipped: dict[str, int] = field(default_factory=dict)
    power: ErrorStats | None = None    # predicted peak power vs the file's peak_power x TDP (rows that have it)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": "splitwise-perf", "hardware": self.hardware, "engine": self.engine,
                             "stack": self.stack}
        d.update(self.overall.to_dict())
        d["columns"] = {k: v.to_dict() for k, v in self.columns.items()}
        d["ops"] = d["columns"]   # the key `validate ops --json` puts its per-entry figures under
        d["groups"] = {g: {k: v.to_dict() for k, v in cols.items()} for g, cols in self.groups.items()}
        if self.skipped:
            d["skipped"] = dict(self.skipped)
        if self.power is not None:
            d["peak_power"] = self.power.to_dict()
        return d


def peak_power_w(step: EngineStepTimeModel, prompt: int, batch: int, output: int) -> float:
    """Predicted peak board power of one GPU over the request (W): a prefill iteration's kernels at their
    sustained clock (the largest of the iterations ``isolated`` runs, under the engine's
    ``max_num_batched_tokens``), or a decode step (mid-way KV lengths) with its host time, whichever draws
    more; 0 where the engine has no power limit."""
    if step.engine.power_limit is None:
        return 0.0
    n = prefill_iterations(prompt, batch, step.engine.max_num_batched_tokens)[0][1]
    pre = step.sustained(((prompt, prompt),) * n, (), prompt * n, n).power_w
    return max(pre, step.decode_power_w([prompt + max(1, output // 2)] * batch))


def simulate_rows(rows: Sequence[SplitwiseRow], gpu: GPUSpec, engine: EngineProfile) -> tuple[
        list[SplitwisePoint], dict[str, int]]:
    steps: dict[tuple[str, int], EngineStepTimeModel] = {}
    done: dict[tuple[str, int, int, int, int], tuple[float, float, float] | None] = {}
    points: list[SplitwisePoint] = []
    skipped: dict[str, int] = {}
    for r in rows:
        key = (r.model, r.tp, r.prompt, r.batch, r.output)
        if key not in done:
            model = load_model(r.model)
            try:
                mem = memory_breakdown(model, gpu, tp=r.tp, max_num_batched_tokens=r.prompt * r.batch,
                                       max_num_seqs=r.batch)
                fits = r.batch * (r.prompt + r.output) <= mem.kv_tokens
            except CapacityError:
                fits = False
            if fits:
                if (r.model, r.tp) not in steps:
                    steps[(r.model, r.tp)] = EngineStepTimeModel(model, gpu, r.tp, engine=engine)
                st = steps[(r.model, r.tp)]
                pre, dec = st.isolated(r.prompt, r.batch, r.output)
                done[key] = (pre, dec, peak_power_w(st, r.prompt, r.batch, r.output))
            else:
                done[key] = None
        res = done[key]
        if res is None:
            why = f"{r.model} tp{r.tp} batch {r.batch} x {r.prompt + r.output} tokens: KV cache does not fit"
            skipped[why] = skipped.get(why, 0) + 1
            continue
        points.append(SplitwisePoint(r, res[0], res[1], res[2]))
    return points, skipped


def validate_splitwise_perf(rows: Sequence[SplitwiseRow], gpu: GPUSpec,
                            engine: EngineProfile | str = DEFAULT_ENGINE) -> SplitwiseValidation:
    eng = load_engine(engine) if isinstance(engine, str) else engine
    points, skipped = simulate_rows(rows, gpu, eng)

    def stats(pts: Sequence[SplitwisePoint], col: str) -> ErrorStats:
        if col == "prompt_time":
            return ErrorStats.from_pairs([p.prompt_s for p in pts], [p.row.prompt_s for p in pts])
        return ErrorStats.from_pairs([p.token_s for p in pts], [p.row.token_s for p in pts])

    columns = {c: stats(points, c) for c in COLUMNS}
    groups: dict[str, dict[str, ErrorStats]] = {}
    for g in sorted({(p.row.model, p.row.tp) for p in points}):
        pts = [p for p in points if (p.row.model, p.row.tp) == g]
        groups[f"{g[0]} tp{g[1]}"] = {c: stats(pts, c) for c in COLUMNS}
    pw = [p for p in points if p.row.peak_power > 0 and p.peak_power_w > 0]
    power = ErrorStats.from_pairs([p.peak_power_w for p in pw], [p.row.peak_power * gpu.tdp_w for p in pw]) \
        if pw else None
    return SplitwiseValidation(gpu.id, eng.id, eng.stack, ErrorStats.merge(columns.values()), columns, groups,
                               tuple(points), skipped, power)
