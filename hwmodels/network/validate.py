"""Collective validation: simulate every row of a measured collective-timing file and score it.

Format ``vidur-collective``: Vidur's ``data/profiling/network/<device>/{all_reduce,send_recv}.csv``
(columns ``size`` = message bytes, ``num_workers``, ``devices_per_node`` = workers per node,
``collective``, ``time_stats.<collective>.median`` in ms: the median NCCL kernel time). A row of
``w`` workers and ``d`` per node runs on GPUs 0..d-1 of nodes 0..w/d-1 of the cluster; send/recv
goes from the first to the last of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwmodels.network.collectives import CollectiveOp, CollectiveParams, collective_time, geometry
from hwmodels.network.topology import Cluster, load_cluster
from workloads.accuracy import ErrorStats, grouped
from workloads.errors import WorkloadError
from workloads.measured import CsvRows

FORMATS = ("vidur-collective",)


@dataclass(frozen=True)
class CollectiveSample:
    op: CollectiveOp
    nbytes: int
    workers: int
    per_node: int
    measured_s: float
    line: int

    @property
    def key(self) -> str:
        return f"{self.op.value} {self.workers // self.per_node}x{self.per_node}"


def read_vidur_collective(path: str | Path) -> list[CollectiveSample]:
    p = Path(path)
    rows = CsvRows(p, {"size", "num_workers", "devices_per_node", "collective"})
    out: list[CollectiveSample] = []
    ops = {o.value: o for o in (CollectiveOp.ALL_REDUCE, CollectiveOp.SEND_RECV, CollectiveOp.ALL_GATHER,
                                CollectiveOp.REDUCE_SCATTER, CollectiveOp.BROADCAST, CollectiveOp.ALL_TO_ALL)}
    for row in rows:
        name = (row.get("collective") or "").strip()
        if name not in ops:
            raise WorkloadError(f"unknown collective {name!r}; known: {', '.join(ops)}", file=str(p),
                                line=rows.line, column="collective")
        col = f"time_stats.{name}.median"
        if col not in row:
            raise WorkloadError(f"missing column {col}", file=str(p), line=1, column=col)
        workers = rows.integer(row, "num_workers", minimum=1)
        per_node = rows.integer(row, "devices_per_node", minimum=1)
        if workers % per_node:
            raise WorkloadError(f"{workers} workers do not fill nodes of {per_node}", file=str(p), line=rows.line,
                                column="devices_per_node")
        t = rows.number(row, col)
        if t <= 0:
            raise WorkloadError(f"time must be > 0, got {t!r}", file=str(p), line=rows.line, column=col)
        out.append(CollectiveSample(ops[name], rows.integer(row, "size", minimum=1), workers, per_node, t * 1e-3,
                                    rows.line))
    if not out:
        raise WorkloadError("no rows", file=str(p))
    return out


def read_collective_file(fmt: str, path: str | Path) -> list[CollectiveSample]:
    if fmt not in FORMATS:
        raise WorkloadError(f"unknown collective format {fmt!r}; known: {', '.join(FORMATS)}", file=str(path))
    return read_vidur_collective(path)


@dataclass(frozen=True)
class CollectivePoint:
    key: str
    nbytes: int
    line: int
    simulated_s: float
    measured_s: float
    algo: str


@dataclass(frozen=True)
class CollectiveValidation:
    format: str
    cluster: str
    overall: ErrorStats
    per_group: dict[str, ErrorStats]
    points: tuple[CollectivePoint, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": self.format, "cluster": self.cluster}
        d.update(self.overall.to_dict())
        d["ops"] = {k: v.to_dict() for k, v in self.per_group.items()}
        return d


def group_gpus(workers: int, per_node: int) -> list[str]:
    return [f"n{k}.gpu{i}" for k in range(workers // per_node) for i in range(per_node)]


def simulate_samples(samples: Sequence[CollectiveSample], cluster: Cluster,
                     params: CollectiveParams | None = None) -> list[CollectivePoint]:
    geos: dict[tuple[CollectiveOp, int, int], Any] = {}
    out = []
    for s in samples:
        gk = (s.op, s.workers, s.per_node)
        if gk not in geos:
            gpus = group_gpus(s.workers, s.per_node)
            if s.op is CollectiveOp.SEND_RECV:
                gpus = [gpus[0], gpus[-1]]
            geos[gk] = geometry(cluster, gpus)
        r = collective_time(cluster, s.op, s.nbytes, params=params, geo=geos[gk])
        out.append(CollectivePoint(s.key, s.nbytes, s.line, r.time_s, s.measured_s, r.algo.value))
    return out


def validate_collectives(samples: Sequence[CollectiveSample], cluster: str | Path, *, fmt: str = "vidur-collective",
                         params: CollectiveParams | None = None) -> CollectiveValidation:
    """Score ``samples`` on a cluster preset (sized to the largest group in the file)."""
    full = load_cluster(cluster)
    gpn = full.gpus_per_node
    need = max((s.workers // s.per_node) for s in samples) * gpn
    if max(s.per_node for s in samples) > gpn:
        raise WorkloadError(f"the file has {max(s.per_node for s in samples)} workers per node; the cluster's "
                            f"nodes have {gpn} GPUs")
    cl = load_cluster(cluster, gpus=need)
    points = simulate_samples(samples, cl, params)
    overall, per = grouped((p.key, p.simulated_s, p.measured_s) for p in points)
    return CollectiveValidation(fmt, cl.id or str(cluster), overall, per, tuple(points))
