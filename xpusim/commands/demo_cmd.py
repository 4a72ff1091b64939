"""``xpusim demo``: the main job on built-in defaults, no files needed.

Serves a synthetic Azure-conversation workload (length and burstiness fitted to the Azure LLM
inference trace 2023, shipped in ``workloads.traces``) with Llama-3.1-8B on two replicas, then asks
the what-if question a capacity planner asks: the same load on other GPUs of the catalog.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

MODEL, TRACE, RATE, DURATION_S, REPLICAS, TP, SEED = "llama-3.1-8b", "azure-conv", 8.0, 300.0, 2, 1, 0
WHAT_IF = ("a100-sxm-80gb", "h100-sxm-80gb", "h200-sxm-141gb", "l40s")
SLO_TTFT_S, SLO_TPOT_S = 2.0, 0.1


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="results/demo", show_default=True,
              help="folder for summary.json and requests.csv of the H100 run")
def demo(out: str) -> None:
    """Serve Llama-3.1-8B (2 replicas, Azure-conversation load at 8 req/s for 5 min) on four GPUs."""
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
    console.print("Next: xpusim simulate serve --help, xpusim catalog hardware, xpusim validate ops --help")


def register(cli: click.Group) -> None:
    cli.add_command(demo)
