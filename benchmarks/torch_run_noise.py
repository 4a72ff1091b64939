"""How far two measured runs of the same ``xpusim validate torch`` configuration are from each other: the noise
floor a model of that machine is scored against.

Reads two ``validate torch --out DIR`` folders of the same configuration (same model, shapes and device: their
traces, hence ``ops.csv``'s (phase, step, op_index, aten) rows, are identical; checked) and scores run B's
measured times against run A's as if B were a simulation, per op kind and per whole step, with the same
``n / wape / mape`` figures ``validate torch`` prints (:func:`workloads.accuracy.grouped`). A model that predicts
run A exactly is scored about this far from run B, so a per-kind target below these figures is below what the
machine repeats. One JSON line per figure; without arguments, for every pair of committed H100 runs of one
configuration (``benchmarks/accuracy.py``'s ``NOISE_PAIRS``):

    python benchmarks/torch_run_noise.py [DIR_A DIR_B]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run_noise(a: Path, b: Path) -> list[dict[str, Any]]:
    """The figures of run ``b`` scored against run ``a`` (two ``validate torch --out`` folders)."""
    from workloads.measured_xpusim import read_validate_torch

    return step_noise(read_validate_torch(a).steps, read_validate_torch(b).steps, a, b)


def step_noise(steps_a: Any, steps_b: Any, a: Path, b: Path) -> list[dict[str, Any]]:
    """As :func:`run_noise`, on runs already read (``RecordedTorchRun.steps``)."""
    from workloads.accuracy import grouped

    def ident(steps: Any) -> list[tuple[str, int, list[tuple[int, str]]]]:
        return [(st.phase, st.index, [(o.index, o.aten) for o in st.graph.ops]) for st in steps]

    if ident(steps_a) != ident(steps_b):
        raise SystemExit(f"{a} and {b} do not hold the same traced ops (not the same configuration)")
    pairs = [(o.kind.value, tb, ta) for sa, sb in zip(steps_a, steps_b)
             for o, ta, tb in zip(sa.graph.ops, sa.op_seconds, sb.op_seconds)
             if o.kind is not None and ta is not None and tb is not None and ta > 0]
    overall, per_kind = grouped(pairs)
    _, per_step = grouped((sa.phase, sb.step_seconds, sa.step_seconds) for sa, sb in zip(steps_a, steps_b))
    out: list[dict[str, Any]] = [{"figure": "run_noise", "compared": "all ops", **overall.to_dict()}]
    out += [{"figure": "run_noise", "compared": f"op kind {k}", **s.to_dict()} for k, s in sorted(per_kind.items())]
    out += [{"figure": "run_noise", "compared": f"step {k}", **s.to_dict()} for k, s in sorted(per_step.items())]
    for rec in out:
        rec.update({"run_a": str(a), "run_b": str(b)})
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2:
        pairs = [(Path(args[0]), Path(args[1]))]
    elif not args:
        from accuracy import NOISE_PAIRS, ROOT

        h100 = ROOT / "validation" / "measured" / "h100"
        pairs = [(h100 / f"validate_torch_{a}", h100 / f"validate_torch_{b}") for a, b in NOISE_PAIRS]
    else:
        raise SystemExit(__doc__)
    for a, b in pairs:
        for rec in run_noise(a, b):
            print(json.dumps(rec))


if __name__ == "__main__":
    main()
