"""``xpusim simulate serve|request`` and ``xpusim validate serve``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from workloads.errors import ConfigError
from xpusim.commands.tables import stdout_console


def _load(model: str, hardware: str):  # type: ignore[no-untyped-def]
    from hwmodels.gpu import load_gpu
    from workloads.catalog import load_model

    return load_model(model), load_gpu(hardware)


def load_cli_workload(trace: str, rate: float | None, duration: float | None, seed: int) -> list:
    """The requests of ``--trace`` (a synthetic generator needs ``--duration``); none is an error."""
    from workloads.traces import load_workload, trace_choices

    if duration is None and trace in trace_choices():
        raise ConfigError(f"the synthetic workload {trace!r} needs --duration (seconds of arrivals)",
                          field="duration")
    reqs = load_workload(trace, rate=rate, duration_s=duration, seed=seed)
    if not reqs:
        raise ConfigError("the workload has no requests", field="trace", value=trace)
    return reqs


def _metrics_table(title: str, summary: dict) -> Table:
    t = Table(title=title)
    for col in ("metric", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for key, label in (("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)"), ("itl_s", "ITL (s)"),
                       ("latency_s", "latency (s)")):
        s = summary[key]
        t.add_row(label, *(f"{s[k]:.4f}" for k in ("mean", "p50", "p90", "p99")))
    return t


@click.command("serve")
@click.option("--model", required=True, help="catalog name, HF id or model file")
@click.option("--hardware", required=True, help="GPU id or spec file")
@click.option("--tp", default=1, show_default=True, type=int)
@click.option("--pp", default=1, show_default=True, type=int)
@click.option("--replicas", default=1, show_default=True, type=int)
@click.option("--router", default="round-robin", show_default=True,
              type=click.Choice(["round-robin", "least-outstanding-tokens"]))
@click.option("--trace", required=True, help="azure-code | azure-conv | trace file | vLLM bench folder")
@click.option("--rate", type=float, default=None, help="requests/s")
@click.option("--duration", type=float, default=None, help="seconds of arrivals")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-num-seqs", default=256, show_default=True, type=int)
@click.option("--max-num-batched-tokens", default=2048, show_default=True, type=int)
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option("--slo-ttft", type=float, default=None, help="goodput SLO on TTFT (s)")
@click.option("--slo-tpot", type=float, default=None, help="goodput SLO on TPOT (s)")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="folder for summary.json, requests.csv")
@click.option("--timeline", type=click.Path(dir_okay=False), default=None, help="Chrome/Perfetto trace JSON")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def simulate_serve(model: str, hardware: str, tp: int, pp: int, replicas: int, router: str, trace: str,
                   rate: float | None, duration: float | None, seed: int, max_num_seqs: int,
                   max_num_batched_tokens: int, gpu_memory_utilization: float, slo_ttft: float | None,
                   slo_tpot: float | None, out: str | None, timeline: str | None, as_json: bool) -> None:
    """Simulate serving a request trace on replicas of a model."""
    from sim.config import RouterKind, ServeConfig
    from sim.metrics import SLO, summarize
    from sim.serving import simulate_serving
    from xpusim.report import write_outputs

    m, g = _load(model, hardware)
    cfg = ServeConfig(tp=tp, pp=pp, replicas=replicas, router=RouterKind(router), max_num_seqs=max_num_seqs,
                      max_num_batched_tokens=max_num_batched_tokens,
                      gpu_memory_utilization=gpu_memory_utilization)
    reqs = load_cli_workload(trace, rate, duration, seed)
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=as_json) as prog:
        task = prog.add_task("simulating", total=len(reqs))
        res = simulate_serving(m, g, reqs, cfg, record_timeline=timeline is not None,
                               progress=lambda done, total: prog.update(task, completed=done))
    summary = summarize(res, SLO(ttft_s=slo_ttft, tpot_s=slo_tpot))
    written = write_outputs(out, summary, res, timeline)
    if as_json:
        click.echo(json.dumps(summary, default=float))
        return
    c = stdout_console()
    c.print(_metrics_table(f"{m.name} on {replicas} x {g.name} (tp={tp}, pp={pp}), {len(reqs)} requests", summary))
    th = summary["throughput"]
    c.print(f"throughput {th['requests_per_s']:.2f} req/s, {th['output_tokens_per_s']:.0f} output tok/s; "
            f"goodput {summary['goodput']['requests_per_s']:.2f} req/s; "
            f"KV use {summary['kv_cache']['mean_utilisation']:.1%}, "
            f"{summary['kv_cache']['preemptions']} preemptions; MFU {summary['mfu']:.1%}, MBU {summary['mbu']:.1%}")
    for p in written:
        c.print(f"wrote {p}")


@click.command("request")
@click.option("--model", required=True)
@click.option("--hardware", required=True)
@click.option("--tp", default=1, show_default=True, type=int)
@click.option("--pp", default=1, show_default=True, type=int)
@click.option("--prompt", default=512, show_default=True, type=int, help="prompt tokens per request")
@click.option("--batch", default=1, show_default=True, type=int)
@click.option("--output-tokens", default=128, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
def simulate_request(model: str, hardware: str, tp: int, pp: int, prompt: int, batch: int, output_tokens: int,
                     as_json: bool) -> None:
    """Isolated latency of one batch: prefill, per-token decode, end to end."""
    from sim.isolated import request_latency

    m, g = _load(model, hardware)
    r = request_latency(m, g, tp=tp, pp=pp, prompt=prompt, batch=batch, output_tokens=output_tokens)
    d = {"prefill_s": r.prefill_s, "decode_per_token_s": r.decode_per_token_s, "e2e_s": r.e2e_s}
    if as_json:
        click.echo(json.dumps(d))
        return
    t = Table(title=f"{m.name} on {g.name} tp={tp} pp={pp}: batch {batch} x {prompt} prompt, {output_tokens} out")
    for k in d:
        t.add_column(k, justify="right")
    t.add_row(*(f"{v:.6f}" for v in d.values()))
    stdout_console().print(t)


@click.command("serve")
@click.option("--format", "fmt", type=click.Choice(["vllm-bench", "splitwise-perf"]), required=True,
              help="vllm-bench: a vLLM bench folder; splitwise-perf: SplitwiseSim's perf_model.csv")
@click.argument("run_dir", type=click.Path())
@click.option("--hardware", required=True)
@click.option("--engine", default=None,
              help="splitwise-perf: engine profile (hwmodels/specs/machines/engines.toml), default vllm-splitwise")
@click.option("--json", "as_json", is_flag=True)
def validate_serve(fmt: str, run_dir: str, hardware: str, engine: str | None, as_json: bool) -> None:
    """Replay a measured serving run and compare TTFT, TPOT and latency (vllm-bench), or score the
    isolated-batch model on SplitwiseSim's perf_model.csv (splitwise-perf: n / wape / mape per column)."""
    if fmt == "splitwise-perf":
        _validate_splitwise(run_dir, hardware, engine, as_json)
        return
    if engine is not None:
        raise ConfigError("--engine applies to --format splitwise-perf only", field="engine", value=engine)
    from sim.validation import read_meta, validate_run
    from workloads.traces import read_vllm_bench

    if not Path(run_dir).is_dir():
        raise ConfigError("not a folder", file=run_dir)
    meta = read_meta(run_dir)
    m, g = _load(meta["model"], hardware)
    reqs = read_vllm_bench(run_dir)
    metrics, res = validate_run(reqs, meta, m, g)
    if as_json:
        click.echo(json.dumps({"metrics": metrics, "requests": len(reqs), "num_gpu_blocks": {
            "measured": meta["measured_num_gpu_blocks"], "simulated": res.memory.num_blocks}}))
        return
    t = Table(title=f"{run_dir}: {len(reqs)} requests, {m.name} tp={meta['tp']} on {g.name}")
    for col in ("metric", "measured", "simulated", "rel_err"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for k, v in metrics.items():
        t.add_row(k, f"{v['measured']:.4f}", f"{v['simulated']:.4f}", f"{v['rel_err']:+.1%}")
    c = stdout_console()
    c.print(t)
    c.print(f"KV blocks: measured {meta['measured_num_gpu_blocks']}, simulated {res.memory.num_blocks}")


def _validate_splitwise(path: str, hardware: str, engine: str | None, as_json: bool) -> None:
    from hwmodels.engine import load_engine
    from hwmodels.gpu import load_gpu
    from sim.splitwise_perf import DEFAULT_ENGINE, validate_splitwise_perf
    from workloads.measured_splitwise import read_splitwise_perf
    from xpusim.commands.tables import print_error_table

    gpu = load_gpu(hardware)
    eng = load_engine(engine or DEFAULT_ENGINE)   # a bad name fails before the file is read
    res = validate_splitwise_perf(read_splitwise_perf(path), gpu, eng)
    if as_json:
        click.echo(json.dumps(res.to_dict()))
        return
    rows = [(f"{g} {col}", st) for g, cols in [("all", res.columns), *res.groups.items()]
            for col, st in cols.items()]
    out = print_error_table(f"{path}: splitwise-perf on {gpu.name}, engine {res.engine} (stack {res.stack})",
                            "group column", rows)
    for why, n in res.skipped.items():
        out.print(f"skipped {n} rows: {why}")


def register(simulate_group: click.Group, validate_group: click.Group) -> None:
    simulate_group.add_command(simulate_serve)
    simulate_group.add_command(simulate_request)
    validate_group.add_command(validate_serve)
