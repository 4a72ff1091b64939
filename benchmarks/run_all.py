"""Run every benchmark in this folder; each prints JSON lines (one per figure) to stdout.

    python benchmarks/run_all.py            # all
    python benchmarks/run_all.py serve_speed accuracy_ops   # some

A benchmark that needs ../shared/data skips itself (prints a JSON line with "skipped").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all", "fit_azure"}  # fit_azure re-derives shipped constants; it is not a figure


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if p.stem not in SKIP and not p.stem.startswith("_"))
    worst = 0
    for name in names:
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent)
        worst = max(worst, proc.returncode)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
