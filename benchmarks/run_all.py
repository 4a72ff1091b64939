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
# fit_* scripts re-derive shipped constants (calibrations, trace profiles); they print TOML, not figures;
# collect_* scripts measure a GPU (they need CUDA and an output folder)
SKIP_PREFIXES = ("run_all", "fit_", "collect_", "_")


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith(SKIP_PREFIXES))
    worst = 0
    for name in names:
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent)
        worst = max(worst, proc.returncode)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
