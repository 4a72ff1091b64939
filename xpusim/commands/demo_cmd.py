"""``xpusim demo``: the main job on built-in defaults, no files needed.

Part 1 serves a synthetic Azure-conversation workload (length and burstiness fitted to the Azure LLM
inference trace 2023, shipped in ``workloads.traces``) with Llama-3.1-8B on two
replicas, then asks the what-if question a capacity planner asks: the same load on other GPUs of the catalog.
Part 2 is a small ``xpusim plan serve`` (:func:`planners.serve.plan_serve`): the cheapest phase-split or
colocated Llama-2-70B cluster of DGX-A100 / DGX-H100 / 70 %-capped DGX-H100 machines that serves the synthetic
Azure conversation workload at 30 req/s within Splitwise's SLOs (Patel et al., ISCA 2024), each candidate
verified by simulating 20 s of arrivals.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

MODEL, TRACE, RATE, DURATION_S, REPLICAS, TP, SEED = "llama-3.1-8b", "azure-conv", 8.0, 300.0, 2, 1, 0
WHAT_IF = ("a100-sxm-80gb", "h100-sxm-80gb", "h200-sxm-141gb", "l40s")
SLO_TTFT_S, SLO_TPOT_S = 2.0, 0.1
# the planner part: small enough to stay well under a minute with part 1 on two cores (k candidates, each
# simulated once, a missed one bisected once on load)
PLAN_MODEL, PLAN_RATE, PLAN_DURATION_S = "llama-2-70b", 30.0, 20.0
PLAN_MACHINES, PLAN_TPS = ("dgx-a100", "dgx-h100", "dgx-h100-pcap"), (2, 4, 8)
PLAN_K, PLAN_ROUNDS, PLAN_BISECT = 3, 2, 1


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="results/demo", show_default=True,
              help="folder for summary.json and requests.csv of the H100 run")
def demo(out: str) -> None:
    """Serve Llama-3.1-8B on four GPUs (what-if), then plan a phase-split Llama-2-70B cluster for 30 req/s."""
    from hwmodels.gpu import load_gpu
    from sim.config import ServeConfig
    from sim.metrics import SLO, summarize
    from sim.serving import simulate_serving
    from workloads.catalog import load_model
    from workloads.traces import load_workload
    from xpusim.report import write_outputs

    console = Console()
    model = load_model(MODEL)
    reqs = load_workload(TRACE, rate=RATE, duration_s=DURATION_S, seed=SEED)
    cfg = ServeConfig(tp=TP, replicas=REPLICAS)
    console.print(f"[bold]xpusim demo[/bold]: {model.name}, {cfg.replicas} replicas x TP{cfg.tp}, "
                  f"{len(reqs)} requests of the synthetic {TRACE} workload at {RATE} req/s "
                  f"for {DURATION_S:.0f} s; SLO TTFT <= {SLO_TTFT_S} s, TPOT <= {SLO_TPOT_S * 1e3:.0f} ms")
    table = Table(title="What if the replicas ran on ...")
    for col in ("GPU", "TTFT p50 s", "TTFT p99 s", "TPOT p50 ms", "TPOT p99 ms", "out tok/s", "in SLO",
                "KV blocks"):
        if col == "GPU":
            table.add_column(col, no_wrap=True)
        else:
            table.add_column(col, justify="right")
    slo = SLO(ttft_s=SLO_TTFT_S, tpot_s=SLO_TPOT_S)
    written = []
    for hw in WHAT_IF:
        gpu = load_gpu(hw)
        res = simulate_serving(model, gpu, reqs, cfg)
        s = summarize(res, slo)
        if hw == "h100-sxm-80gb":
            written = write_outputs(out, s, res, None)
        table.add_row(hw, f"{s['ttft_s']['p50']:.3f}", f"{s['ttft_s']['p99']:.3f}",
                      f"{s['tpot_s']['p50'] * 1e3:.1f}", f"{s['tpot_s']['p99'] * 1e3:.1f}",
                      f"{s['throughput']['output_tokens_per_s']:.0f}", f"{s['goodput']['fraction']:.1%}",
                      f"{s['kv_cache']['blocks_per_replica']}")
    console.print(table)
    for p in written:  # the H100 run's files
        console.print(f"wrote {p}")
    _plan_part(console)
    console.print("Next: xpusim plan serve --help, xpusim simulate serve --help, xpusim catalog hardware")


def _plan_part(console: Console) -> None:
    """A small ``plan serve`` on built-in data: the chosen cluster and the runner-ups with simulated metrics."""
    from hwmodels.machines import load_machine
    from planners.serve import Objective, plan_serve
    from sim.split_metrics import SPLITWISE_SLO
    from workloads.catalog import load_model
    from workloads.traces import load_workload

    model = load_model(PLAN_MODEL)
    cache: dict[float, Any] = {}

    def workload(r: float) -> Any:
        if r not in cache:
            cache[r] = load_workload(TRACE, rate=r, duration_s=PLAN_DURATION_S, seed=SEED)
        return cache[r]

    console.print(f"\n[bold]Planning[/bold] (xpusim plan serve): the cheapest {model.name} cluster of "
                  f"{', '.join(PLAN_MACHINES)} (TP {'/'.join(map(str, PLAN_TPS))}; prefill and decode pools, or "
                  f"colocated) for {TRACE} at {PLAN_RATE:g} req/s within Splitwise's SLOs; each candidate "
                  f"simulated on {PLAN_DURATION_S:g} s of arrivals")
    plan = plan_serve(model, workload, [load_machine(m) for m in PLAN_MACHINES], rate=PLAN_RATE, tps=PLAN_TPS,
                      slo=SPLITWISE_SLO, objective=Objective.COST, k=PLAN_K, rounds=PLAN_ROUNDS,
                      bisect_steps=PLAN_BISECT)
    table = Table(title=f"{model.name} at {PLAN_RATE:g} req/s: slowdown p99 vs the request alone", show_edge=False)
    for col in ("", "cluster", "$/h", "kW", "SLO", "TTFT", "TBT", "E2E"):
        table.add_column(col, justify="left" if col in ("", "cluster") else "right", no_wrap=True)
    rows = ([("chosen", plan.chosen)] if plan.chosen else []) + [("next", v) for v in plan.runner_ups]
    for tag, v in rows:
        cd, s = v.candidate, v.summary
        cluster = " + ".join(f"{role[0].upper()} {c.machine.id.removeprefix('dgx-')}:{n} tp{c.tp}"
                             for role, c, n in cd.pools)
        tried = [r for r, _ in v.bisection]
        verdict = ("met" if v.met else f"{v.sustained_rps:.3g}/s" if v.sustained_rps
                   else f"<{min(tried):.3g}/s" if tried else "missed")
        table.add_row(tag, cluster, "-" if cd.cost_per_hour is None else f"{cd.cost_per_hour:.0f}",
                      f"{cd.power_w / 1e3:.0f}", verdict,
                      *(f"{s[f'{key}_slowdown']['p99']:.2f}" for key in ("ttft", "tbt", "e2e")))
    console.print(table)
    console.print("P prefill pool, D decode pool, C colocated (machine:count TP); SLO: met, or the highest "
                  "rate found within it by bisection on load")
    if plan.chosen is None:
        console.print("no candidate met the SLOs in simulation; xpusim plan serve --rounds / --headroom")


def register(cli: click.Group) -> None:
    cli.add_command(demo)
