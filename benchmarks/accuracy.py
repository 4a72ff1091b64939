"""The accuracy report: every validation xpusim can run on the data it has, in one table.

    python benchmarks/accuracy.py [--data ../shared/data] [--out docs] [--cpu]

Runs, each where its data and modules are present (a missing piece is a row saying so, not a failure):

* the kernel model on every shared measured file (``accuracy_ops.run``: ``xpusim validate ops``);
* the kernel model on xpusim's own GPU measurements (``validation/measured/<gpu>/``, ``accuracy_ops.KIT_FILES``):
  GEMMs, attention, memory-bound ops and whole prefill/decode steps of the built-in Llama modules, per op;
* the committed ``xpusim validate torch --device cuda`` runs (``validation/measured/<gpu>/validate_torch_<model>/``),
  re-simulated offline (``--from``): per op kind and whole prefill/decode steps;
* the serving simulation replaying the shared vLLM run (``sim.validation``, ``xpusim validate serve``);
* collectives on the shared Vidur network files (``hwmodels.network.validate``, ``xpusim validate collectives``);
* SplitwiseSim's A100 perf model (``xpusim validate serve --format splitwise-perf``) and the published
  Selene training iteration times (``sim.training_validation``);
* with ``--cpu``: the built-in Llama-3.2-1B module run for real on this machine's CPU and simulated from
  its trace (``hwmodels.validate_torch``; slow on a shared machine, so not by default).

Writes ``<out>/accuracy_report.md`` and ``<out>/accuracy_report.json`` (each written whole to a temporary
file, then renamed) with one row per figure: source, device, what is compared, role (fitted / held out),
n, wape, mape (serving rows: the relative error of the statistic), and prints each row as a JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from accuracy_ops import DEFAULT_DATA, KIT_FILES, file_path, load_shared
from accuracy_ops import run as run_shared_ops

from hwmodels.gpu import load_gpu
from hwmodels.validate_ops import validate_ops

Row = dict[str, Any]
COLUMNS = ("source", "device", "compared", "role", "n", "wape", "mape", "rel_err")


def row(source: str, device: str, compared: str, role: str, n: int | None = None, wape: float | None = None,
        mape: float | None = None, rel_err: float | None = None, note: str = "") -> Row:
    r: Row = {"source": source, "device": device, "compared": compared, "role": role, "n": n, "wape": wape,
              "mape": mape, "rel_err": rel_err}
    if note:
        r["note"] = note
    return r


def shared_ops(data: Path) -> list[Row]:
    out = []
    for d in run_shared_ops(data):
        out.append(row(d["file"], d["hardware"], f"per-kernel times ({d['format']}, stack {d['stack']})",
                       "held out" if d["held_out"] else "fitted", d["n"], d["wape"], d["mape"]))
    return out


def kit_ops(data: Path) -> list[Row]:
    """xpusim's own measurements: the file and each op of it."""
    out = []
    for f in KIT_FILES:
        if not file_path(f, data).is_file():
            out.append(row(f"validation/measured/{f.path}", f.hardware, f.format, "-", note="file not found"))
            continue
        res = validate_ops(load_shared(f, data), load_gpu(f.hardware), stack=f.stack)
        role = "fitted" if f.fitted else "held out"
        src = f"validation/measured/{f.path}"
        out.append(row(src, f.hardware, f"{f.format} (stack {res.stack}): all rows", role, res.overall.n,
                       res.overall.wape, res.overall.mape))
        for op, s in res.per_op.items():
            out.append(row(src, f.hardware, f"{f.format}: {op}", role, s.n, s.wape, s.mape))
        if f.format == "xpusim-steps":
            out += eager_steps_with_host(load_shared(f, data), src, f.hardware, role)
    return out


def eager_steps_with_host(measured: Any, src: str, hardware: str, role: str) -> list[Row]:
    """The kit's eager steps as ``validate torch`` prices a step: the host's issue co-executed with the kernels
    (``CudaStepCost.kernels_step_time``; view ops per launch from the H200 1B traced decode step), not the
    kernels alone of the rows above."""
    from hwmodels.validate_torch import CudaStepCost, views_per_launch
    from workloads.accuracy import ErrorStats

    ref = "h200/validate_torch_llama-3.2-1b"
    if not (ROOT / "validation" / "measured" / ref).is_dir():
        return []
    ops = recorded_run(ref).steps[1].graph.ops
    vpl = views_per_launch(ops)
    cost = CudaStepCost(load_gpu(hardware))
    out = []
    for name in ("prefill.eager", "decode.eager"):
        recs = [r for r in measured.records if r.op == name]
        if recs:
            st = ErrorStats.from_pairs([cost.kernels_step_time(r.ops, vpl) for r in recs], [r.seconds for r in recs])
            out.append(row(src, hardware, f"xpusim-steps: {name}, host co-executed (validate torch's step model)",
                           role, st.n, st.wape, st.mape))
    return out


SERVE_RUN = "measured/vllm_rtx4090_llama31_8b"


def serving(data: Path) -> list[Row]:
    run_dir = data / SERVE_RUN
    if not run_dir.is_dir():
        return [row(SERVE_RUN, "rtx-4090", "serving replay", "-", note="shared data not found")]
    from sim.validation import read_meta, validate_run
    from workloads.catalog import load_model
    from workloads.traces import read_vllm_bench

    meta = read_meta(run_dir)
    reqs = read_vllm_bench(run_dir)
    metrics, _ = validate_run(reqs, meta, load_model(meta["model"]), load_gpu("rtx-4090"))
    return [row(SERVE_RUN, "rtx-4090", f"serving replay: {k}", "kernel constants fitted on this GPU",
                len(reqs), rel_err=v["rel_err"]) for k, v in metrics.items()]


COLLECTIVE_FILES = (("measured/vidur_a100/network/all_reduce.csv", "vidur-a100"),
                    ("measured/vidur_a100/network/send_recv.csv", "vidur-a100"))


def collectives(data: Path) -> list[Row]:
    try:
        from hwmodels.network.validate import read_collective_file, validate_collectives
    except ImportError as exc:
        return [row("collectives", "-", "collective times", "-", note=f"not available: {exc}")]
    out = []
    for rel, cluster in COLLECTIVE_FILES:
        path = data / rel
        if not path.is_file():
            out.append(row(rel, cluster, "collective times", "-", note="shared data not found"))
            continue
        res = validate_collectives(read_collective_file("vidur-collective", path), cluster)
        out.append(row(rel, cluster, "collective times (vidur-collective): all rows", "fitted",
                       res.overall.n, res.overall.wape, res.overall.mape))
        for key, s in res.per_group.items():
            out.append(row(rel, cluster, f"collective times: {key}", "fitted", s.n, s.wape, s.mape))
    return out


SPLITWISE_FILE = "measured/splitwise/perf_model_a100.csv"


def splitwise(data: Path) -> list[Row]:
    """SplitwiseSim's A100 perf model (prompt_time, token_time) by the isolated-batch model under the
    engine it was measured with (its constants were fitted on this file: benchmarks/fit_splitwise.py)."""
    from hwmodels.gpu import load_gpu
    from sim.splitwise_perf import validate_splitwise_perf
    from workloads.measured_splitwise import read_splitwise_perf

    path = data / SPLITWISE_FILE
    if not path.is_file():
        return [row(SPLITWISE_FILE, "a100-sxm-80gb", "isolated batch times", "-", note="shared data not found")]
    res = validate_splitwise_perf(read_splitwise_perf(path), load_gpu("a100-sxm-80gb"))
    return [row(SPLITWISE_FILE, "a100-sxm-80gb", f"{col} (engine {res.engine})", "fitted", s.n, s.wape, s.mape)
            for col, s in res.columns.items()]


def training() -> list[Row]:
    """Korthikanti et al. 2022 Table 5 iteration times on Selene (published; no constant set from them)."""
    from sim.training_validation import MODES, TABLE5, table5

    out = []
    for name in TABLE5:
        for mode in MODES:
            sim, paper = table5(name, mode)
            what = "full recompute" if mode == "full" else "SP + selective recompute"
            out.append(row("Korthikanti et al. 2022 Table 5 (Selene)", "a100-sxm-80gb",
                           f"GPT {name} iteration time, {what}", "held out", rel_err=sim / paper - 1))
    return out


# committed `validate torch --device cuda` runs: (directory under validation/measured/, catalog GPU, role); the
# torch-step stack and the host profile were fitted on the 1B run (hwmodels/stacks/torch-step.toml)
CUDA_RUNS = (("h200/validate_torch_llama-3.2-1b", "h200-sxm-141gb", "fitted (torch-step, host)"),
             ("h200/validate_torch_llama-3.1-8b", "h200-sxm-141gb", "held out"),
             ("h100/validate_torch_llama-3.1-8b", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.1-8b-lease2", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.1-8b-lease3", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.2-1b", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.2-3b", "h100-sxm-80gb", "held out (new model)"),
             ("h100/validate_torch_qwen3-8b", "h100-sxm-80gb", "held out (new model)"),
             ("h100/validate_torch_llama-3.1-8b-b16p1024", "h100-sxm-80gb", "held out (new shape)"),
             # a fourth lease (session 6): the same configurations again, each in its own process, with the host probe
             ("h100/validate_torch_llama-3.2-1b-lease4", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.1-8b-lease4", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.1-8b-lease4b", "h100-sxm-80gb", "held out"),
             ("h100/validate_torch_llama-3.2-3b-lease4", "h100-sxm-80gb", "held out (new model)"),
             ("h100/validate_torch_qwen3-8b-lease4", "h100-sxm-80gb", "held out (new model)"))


@functools.cache
def recorded_run(rel: str) -> Any:
    """A committed ``validate torch`` run (``validation/measured/<rel>``), read once for every section here."""
    from workloads.measured_xpusim import read_validate_torch

    return read_validate_torch(ROOT / "validation" / "measured" / rel)


def cuda_torch() -> list[Row]:
    """The committed CUDA ``validate torch`` runs, re-simulated from their CSVs (no GPU, no torch)."""
    from hwmodels.validate_torch import CudaStepCost, validate_steps
    from workloads.accuracy import grouped

    out = []
    pooled: list[tuple[str, float, float]] = []   # every held-out H100 run's steps: (phase, simulated, measured)
    for rel, hw, role in CUDA_RUNS:
        src = f"validation/measured/{rel}"
        d = ROOT / "validation" / "measured" / rel
        if not d.is_dir():
            out.append(row(src, hw, "validate torch (cuda)", "-", note="run not found"))
            continue
        res = validate_steps(recorded_run(rel).steps, CudaStepCost(load_gpu(hw)))
        if hw == "h100-sxm-80gb":
            pooled += [(r["phase"], r["simulated_s"], r["measured_s"]) for r in res.step_rows]
        out.append(row(src, hw, "validate torch (cuda, torch-step): per-op device times (all ops)", role,
                       res.overall.n, res.overall.wape, res.overall.mape))
        for k, s in res.per_kind.items():
            out.append(row(src, hw, f"per-op device times: {k}", role, s.n, s.wape, s.mape))
        for k, s in res.steps.items():
            out.append(row(src, hw, f"whole {k} steps (host + GPU co-executed)", role, s.n, s.wape, s.mape))
    if pooled:
        runs = sum(1 for _, hw, _ in CUDA_RUNS if hw == "h100-sxm-80gb")
        for k, s in grouped(pooled)[1].items():
            out.append(row("validation/measured/h100/validate_torch_* (pooled)", "h100-sxm-80gb",
                           f"whole {k} steps of all {runs} runs (host + GPU co-executed)", "held out",
                           s.n, s.wape, s.mape))
    return out


# pairs of committed runs of one configuration (validation/measured/h100/): another lease, or another process of
# the same lease (lease4 / lease4b)
NOISE_PAIRS = (("llama-3.1-8b", "llama-3.1-8b-lease2"), ("llama-3.1-8b", "llama-3.1-8b-lease3"),
               ("llama-3.1-8b-lease3", "llama-3.1-8b-lease4"), ("llama-3.1-8b-lease4", "llama-3.1-8b-lease4b"),
               ("llama-3.2-1b", "llama-3.2-1b-lease4"), ("llama-3.2-3b", "llama-3.2-3b-lease4"),
               ("qwen3-8b", "qwen3-8b-lease4"))


def _run_noise(pairs: tuple[tuple[str, str], ...], folder: str, hardware: str,
               keep: Callable[[str], bool]) -> list[Row]:
    """Measured against measured: run B of a configuration scored against run A as if B were a simulation
    (benchmarks/torch_run_noise.py): the floor a model of these runs is scored against. ``pairs`` name
    ``validation/measured/<folder>/validate_torch_<name>`` runs; ``keep`` picks the figures reported."""
    from torch_run_noise import step_noise

    out = []
    for a, b in pairs:
        ra, rb = (f"{folder}/validate_torch_{x}" for x in (a, b))
        da, db = (ROOT / "validation" / "measured" / r for r in (ra, rb))
        if not (da.is_dir() and db.is_dir()):
            continue
        for rec in step_noise(recorded_run(ra).steps, recorded_run(rb).steps, da, db):
            what = str(rec["compared"])
            if keep(what):
                out.append(row(f"validation/measured/{folder}/validate_torch_{b} against _{a}", hardware,
                               f"run-to-run (measured vs measured): {what}", "noise floor", int(rec["n"]),
                               float(rec["wape"]), float(rec["mape"])))
    return out


def cuda_run_noise() -> list[Row]:
    """The H100 pairs: whole steps, all ops, GEMMs and attention (the CUDA targets' figures)."""
    return _run_noise(NOISE_PAIRS, "h100", "h100-sxm-80gb",
                      lambda w: w.startswith("step") or w in ("all ops", "op kind gemm", "op kind attn_decode",
                                                              "op kind attn_prefill"))


# Held-out CPU runs of one configuration (16 layers, batch 1, prompt 128, decode 8) on this project's VM, each
# pair one after the other (docs/accuracy.md, "Host CPU": e 12:14, f 12:45, g 12:58, h 13:08, i 13:10 UTC; h and
# i back to back). Every figure is kept: the CPU targets are per op kind.
CPU_NOISE_PAIRS = tuple((f"llama-3.2-1b-l16b1p128-{a}", f"llama-3.2-1b-l16b1p128-{b}")
                        for a, b in (("e", "f"), ("f", "g"), ("g", "h"), ("h", "i"))) + (
    # the issue's own configuration (batch 4, prompt 512, decode 32, all 16 layers): 13:24-13:40 and 13:47-14:05
    ("llama-3.2-1b-b4p512d32-1", "llama-3.2-1b-b4p512d32-2"),)


def cpu_run_noise() -> list[Row]:
    return _run_noise(CPU_NOISE_PAIRS, "cpu-epyc-zen3-2c", "epyc-zen3-2c-kvm", lambda w: True)


CPU_MODEL = "llama-3.2-1b"


CPU_SPEC = "epyc-zen3-2c-kvm"  # this project's 2-vCPU AMD EPYC (Zen 3) VM, fitted by benchmarks/fit_cpu.py


def cpu_torch() -> list[Row]:
    """The built-in 1B module on this CPU, measured now and simulated from its trace."""
    try:
        from hwmodels.cpu import load_cpu
        from hwmodels.validate_torch import cpu_cost_fn, validate_steps
        from workloads.catalog import load_model
        from workloads.pytorch.measure import cpu_name
        from workloads.pytorch.runner import run_llama
    except ImportError as exc:
        return [row("cpu run", "host cpu", "PyTorch module on the CPU", "-", note=f"not available: {exc}")]
    host = cpu_name()
    run = run_llama(load_model(CPU_MODEL), device="cpu", batch=1, prompt=128, decode=4, repeats=1)
    # the host model is the catalog CPU spec `validate torch` uses by default (hwmodels/specs/cpu/), not the
    # processor's marketing name; on another machine pass its own spec through the CLI
    res = validate_steps(run.steps, cpu_cost_fn(load_cpu(CPU_SPEC)))
    out = [row(f"cpu run: {CPU_MODEL}", host, "PyTorch module on the CPU: per-op times (all ops)",
               "measured now", res.overall.n, res.overall.wape, res.overall.mape)]
    for k, s in res.per_kind.items():
        out.append(row(f"cpu run: {CPU_MODEL}", host, f"per-op times: {k}", "measured now", s.n, s.wape, s.mape))
    for k, s in res.steps.items():
        out.append(row(f"cpu run: {CPU_MODEL}", host, f"whole {k} steps", "measured now", s.n, s.wape, s.mape))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:+.3f}" if abs(v) < 10 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(rows: list[Row]) -> str:
    lines = ["# xpusim accuracy report", "",
             "Generated by `python benchmarks/accuracy.py`; how each figure was obtained: docs/accuracy.md. "
             "`wape` = sum|sim - meas| / sum meas, `mape` = mean |sim - meas| / meas; serving rows give the "
             "relative error of the statistic (`rel_err`).", "",
             "| " + " | ".join(COLUMNS) + " | note |", "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [_fmt(r.get(c)).lstrip("+") if c in ("wape", "mape") else _fmt(r.get(c)) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + f" | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def collect(data: Path, cpu: bool = False) -> list[Row]:
    sections: list[tuple[str, Callable[[], list[Row]]]] = [
        ("shared kernel files", lambda: shared_ops(data)), ("xpusim GPU measurements", lambda: kit_ops(data)),
        ("cuda torch", cuda_torch), ("cuda run-to-run noise", cuda_run_noise),
        ("cpu run-to-run noise", cpu_run_noise), ("serving", lambda: serving(data)),
        ("collectives", lambda: collectives(data)),
        ("splitwise", lambda: splitwise(data)), ("training", training)]
    if cpu:
        sections.append(("cpu torch", cpu_torch))
    rows: list[Row] = []
    for name, fn in sections:
        try:
            got = fn()
        except Exception as exc:  # one broken section must not hide the others: it is a row that says so
            got = [row(name, "-", name, "-", note=f"failed: {type(exc).__name__}: {exc}")]
            traceback.print_exc(file=sys.stderr)
        for r in got:
            sys.stdout.write(json.dumps(r) + "\n")
            sys.stdout.flush()
        rows += got
    return rows


def main() -> None:
    from xpusim.report import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for accuracy_report.{md,json}")
    ap.add_argument("--cpu", action="store_true", help="also run the built-in 1B module on this CPU (slow)")
    args = ap.parse_args()
    rows = collect(args.data, args.cpu)
    atomic_write_text(args.out / "accuracy_report.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(args.out / "accuracy_report.md", markdown(rows))


if __name__ == "__main__":
    main()
