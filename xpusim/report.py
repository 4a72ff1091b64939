"""Writing simulation outputs: summary.json, requests.csv, a Chrome/Perfetto trace. Every file is
written to a temporary file in the same folder and moved into place (``os.replace``), so an error
never leaves a partial output behind."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sim.metrics import per_request
from sim.serving import ServeResult


def atomic_write_text(path: str | Path, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False, default=float) + "\n"


def requests_csv(res: ServeResult) -> str:
    pr = per_request(res)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "replica", "prompt_tokens", "output_tokens", "arrival_s", "ttft_s", "tpot_s",
                "latency_s", "queue_s", "preemptions"])
    for i in range(res.ids.size):
        tpot = pr["tpot_s"][i]
        w.writerow([int(res.ids[i]), int(res.replica[i]), int(res.prompt[i]), int(res.output[i]),
                    f"{res.arrival_ns[i] / 1e9:.9f}", f"{pr['ttft_s'][i]:.9f}",
                    "" if np.isnan(tpot) else f"{tpot:.9f}", f"{pr['latency_s'][i]:.9f}",
                    f"{pr['queue_s'][i]:.9f}", int(res.preemptions[i])])
    return buf.getvalue()


def chrome_trace(res: ServeResult) -> str:
    """Chrome/Perfetto trace. Process 1 ("iterations"): a track per replica with each iteration's
    batch (a fast-forwarded decode stretch is one span carrying its step count) and a counter track
    of the replica's KV blocks in use. Process 2 ("requests"): an async span per request, from
    arrival to its last token, grouped by replica (async spans stack where requests overlap)."""
    ev: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "iterations"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "requests"}},
    ]
    for rep, log in enumerate(res.logs):
        ev.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": rep, "args": {"name": f"replica {rep}"}})
        for start, end, steps, pf_tok, n_dec, n_pf, used in log:
            name = f"decode x{n_dec}" if pf_tok == 0 else f"prefill {pf_tok} tok + decode x{n_dec}"
            ev.append({"ph": "X", "pid": 1, "tid": rep, "name": name, "ts": start / 1e3, "dur": (end - start) / 1e3,
                       "args": {"iterations": steps, "prefill_tokens": pf_tok, "prefill_seqs": n_pf,
                                "decode_seqs": n_dec, "kv_blocks_used": used}})
    for rep, (t, used) in enumerate(zip(res.kv_t, res.kv_used)):
        for ti, ui in zip(t.tolist(), used.tolist()):
            ev.append({"ph": "C", "pid": 1, "tid": rep, "name": f"kv blocks replica {rep}", "ts": ti / 1e3,
                       "args": {"used": ui}})
    for i in range(res.ids.size):
        rid, rep = int(res.ids[i]), int(res.replica[i])
        common = {"cat": "request", "id": rid, "pid": 2, "tid": rep, "name": f"req {rid}"}
        ev.append({**common, "ph": "b", "ts": res.arrival_ns[i] / 1e3,
                   "args": {"prompt": int(res.prompt[i]), "output": int(res.output[i]),
                            "ttft_s": (res.first_ns[i] - res.arrival_ns[i]) / 1e9,
                            "preemptions": int(res.preemptions[i])}})
        ev.append({**common, "ph": "e", "ts": res.last_ns[i] / 1e3})
    return json.dumps({"traceEvents": ev, "displayTimeUnit": "ms"})


def kv_cache_csv(res: ServeResult) -> str:
    """KV-cache use over time: one row per replica event (time, blocks in use, fraction)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["t_s", "replica", "blocks_used", "used_fraction"])
    total = res.memory.num_blocks
    for rep, (t, used) in enumerate(zip(res.kv_t, res.kv_used)):
        for ti, ui in zip(t.tolist(), used.tolist()):
            w.writerow([f"{ti / 1e9:.9f}", rep, ui, f"{ui / total:.6f}"])
    return buf.getvalue()


def write_outputs(out_dir: str | Path | None, summary: dict[str, Any], res: ServeResult,
                  timeline: str | Path | None = None) -> list[Path]:
    """Render everything first, then move each file into place."""
    files: list[tuple[Path, str]] = []
    if out_dir is not None:
        d = Path(out_dir)
        files += [(d / "summary.json", summary_json(summary)), (d / "requests.csv", requests_csv(res)),
                  (d / "kv_cache.csv", kv_cache_csv(res))]
    if timeline is not None:
        files.append((Path(timeline), chrome_trace(res)))
    for p, text in files:
        atomic_write_text(p, text)
    return [p for p, _ in files]
