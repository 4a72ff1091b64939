"""Terminal tables shared by the commands: the n / WAPE / MAPE table every ``xpusim validate`` prints."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from workloads.accuracy import ErrorStats


def stdout_console() -> Console:
    """The console for a command's tables on stdout: off a terminal (pipes, files, tests) rich would assume
    80 columns and fold or cut the cells, so it prints up to 200 columns there instead."""
    return Console(width=None if sys.stdout.isatty() else 200)


def error_table(title: str, key: str, rows: Iterable[tuple[str, ErrorStats]],
                totals: Iterable[tuple[str, ErrorStats]] = ()) -> Table:
    """One row per ``(name, stats)``, then the ``totals`` rows in bold."""
    table = Table(title=title)
    for col in (key, "n", "WAPE", "MAPE"):
        table.add_column(col, justify="left" if col == key else "right")
    for name, s in rows:
        table.add_row(name, str(s.n), f"{s.wape:.3f}", f"{s.mape:.3f}")
    for name, s in totals:
        table.add_row(f"[bold]{name}[/bold]", str(s.n), f"[bold]{s.wape:.3f}[/bold]", f"[bold]{s.mape:.3f}[/bold]")
    return table


def print_error_table(title: str, key: str, rows: Iterable[tuple[str, ErrorStats]],
                      totals: Iterable[tuple[str, ErrorStats]] = ()) -> Console:
    """Print :func:`error_table` on stdout; returns the console for any lines after it."""
    console = stdout_console()
    console.print(error_table(title, key, rows, totals))
    return console
