"""``xpusim simulate split``: phase-split (prefill / decode pools) serving, with the colocated comparison."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from xpusim.commands.tables import stdout_console


@click.command("split")
@click.option("--model", required=True, help="catalog name, HF id or model file")
@click.option("--trace", required=True, help="azure-code | azure-conv | trace file | vLLM bench folder")
@click.option("--rate", type=float, default=None, help="requests/s")
@click.option("--duration", type=float, default=None, help="seconds of arrivals")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prefill", "prefill_spec", default=None, help="prefill pool <machine>:<count> (dgx-h100:2)")
@click.option("--decode", "decode_spec", default=None, help="decode pool <machine>:<count> (dgx-a100:3)")
@click.option("--tp", default=None, type=int,
              help="GPUs per instance in every pool not given its own (default 8)")
@click.option("--prefill-tp", default=None, type=int, help="GPUs per prefill instance (default --tp)")
@click.option("--decode-tp", default=None, type=int, help="GPUs per decode instance (default --tp)")
@click.option("--mixed", "mixed_spec", default=None,
              help="mixed (overflow) pool <machine>:<count>: takes arrivals while every prefill instance has a full "
                   "iteration waiting, and decodes no decode instance has KV room for")
@click.option("--mixed-tp", default=None, type=int, help="GPUs per mixed instance (default --tp)")
@click.option("--transfer", default="layerwise", show_default=True,
              type=click.Choice(["layerwise", "serialized", "none"]))
@click.option("--router", default="jsq", show_default=True, type=click.Choice(["jsq", "round-robin"]),
              help="jsq: join the shortest queue by tokens")
@click.option("--engine", default=None, help="engine profile (vllm, vllm-splitwise); default vLLM 0.19")
@click.option("--slo", default=None,
              help="SLOs: a slowdown preset (splitwise), absolute limits in seconds (ttft_p99=2.0,tbt_p50=0.05,"
                   "e2e_p90=30), or both comma-separated")
@click.option("--slo-reference", default="dgx-a100", show_default=True,
              help="where the request runs alone for the slowdowns: <machine>[/tp<N>] (TP default: all its GPUs), "
                   "or own (each pool's own instance)")
@click.option("--colocated", default=None,
              help="also (or only, without --prefill/--decode) run the colocated baseline on <machine>:<count> "
                   "at --tp, router least-outstanding-tokens")
@click.option("--max-num-seqs", default=256, show_default=True, type=int)
@click.option("--max-num-batched-tokens", default=2048, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def simulate_split_cmd(model: str, trace: str, rate: float | None, duration: float | None, seed: int,
                       prefill_spec: str | None, decode_spec: str | None, tp: int | None, prefill_tp: int | None,
                       decode_tp: int | None, mixed_spec: str | None, mixed_tp: int | None, transfer: str,
                       router: str, engine: str | None, slo: str | None,
                       slo_reference: str, colocated: str | None, max_num_seqs: int,
                       max_num_batched_tokens: int, as_json: bool) -> None:
    """Serve a trace on a prefill pool and a decode pool (Splitwise-style), KV moved over the fabric."""
    import dataclasses

    from hwmodels.engine import load_engine
    from sim.config import RouterKind, ServeConfig
    from sim.split import MixedPool, SplitConfig, SplitRouter, TransferMode, parse_pool, simulate_split
    from sim.split_metrics import parse_slo, summarize_colocated, summarize_split
    from workloads.catalog import load_model
    from workloads.errors import ConfigError
    from xpusim.commands.serve_cmd import load_cli_workload

    if (prefill_spec is None) != (decode_spec is None):
        raise ConfigError("give both --prefill and --decode (or neither, with --colocated)",
                          field="prefill" if prefill_spec is None else "decode")
    if prefill_spec is None and colocated is None:
        raise ConfigError("give --prefill and --decode, or --colocated", field="prefill")
    tp = 8 if tp is None else tp
    pre = None if prefill_spec is None else parse_pool(prefill_spec, tp if prefill_tp is None else prefill_tp,
                                                       "prefill")
    dec = None if decode_spec is None else parse_pool(decode_spec, tp if decode_tp is None else decode_tp, "decode")
    col = parse_pool(colocated, tp, "colocated") if colocated else None
    eng = load_engine(engine) if engine else None
    m = load_model(model)
    reqs = load_cli_workload(trace, rate, duration, seed)
    serve = ServeConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    preset = parse_slo(slo, slo_reference)
    out: dict[str, Any] = {}
    if pre is not None and dec is not None:
        mixed = None if mixed_spec is None else MixedPool(parse_pool(mixed_spec, tp if mixed_tp is None else mixed_tp,
                                                                      "mixed"))
        cfg = SplitConfig(pre, dec, TransferMode(transfer), SplitRouter(router), serve, eng, mixed)
        out["split"] = summarize_split(simulate_split(m, reqs, cfg), preset)
    if col is not None:
        from sim.serving import simulate_serving
        from sim.split import step_model

        cfg = SplitConfig(col, col, TransferMode(transfer), SplitRouter(router), serve, eng)
        ccfg = dataclasses.replace(serve, tp=tp, replicas=col.instances, router=RouterKind.LEAST_OUTSTANDING_TOKENS,
                                   iteration_overhead_s=cfg.iteration_overhead_s)
        step = step_model(m, col, cfg)
        res = simulate_serving(m, col.machine.effective_gpu, reqs, ccfg, step_model=step)
        out["colocated"] = summarize_colocated(res, col.machine, col.count, preset, step, eng)
    if as_json:
        click.echo(json.dumps(out, default=float))
        return
    t = Table(title=f"{m.name}, {len(reqs)} requests")
    t.add_column("layout")
    for c in ("TTFT p50/p99 (s)", "TBT p50/p99 (s)", "E2E p99 (s)", "req/s", "$/h", "kW", "SLO met"):
        t.add_column(c, justify="right")
    for name, s in out.items():
        cp = s["cost_power"]
        label = (f"split {s['prefill']['machine']}:{s['prefill']['count']} tp{s['prefill']['tp']} -> "
                 f"{s['decode']['machine']}:{s['decode']['count']} tp{s['decode']['tp']}") if name == "split" \
            else f"colocated {s['machine']}:{s['count']} tp{s['tp']}"
        t.add_row(label, f"{s['ttft_s']['p50']:.3f}/{s['ttft_s']['p99']:.3f}",
                  f"{s['tbt_s']['p50']:.4f}/{s['tbt_s']['p99']:.4f}", f"{s['e2e_s']['p99']:.2f}",
                  f"{s['throughput']['requests_per_s']:.2f}",
                  "-" if cp["cost_per_hour_usd"] is None else f"{cp['cost_per_hour_usd']:.2f}",
                  f"{cp['power_kw']:.1f}", str(s["slo"]["met"]) if "slo" in s else "-")
    stdout_console().print(t)


def register(simulate_group: click.Group) -> None:
    simulate_group.add_command(simulate_split_cmd)
