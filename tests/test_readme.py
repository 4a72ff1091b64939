"""The README's Python example runs against the current library (documentation that must stay true)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), ns)
    summary = ns["summary"]
    assert summary["requests"] > 0 and summary["ttft_s"]["p50"] > 0
