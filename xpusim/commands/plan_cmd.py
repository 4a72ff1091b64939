"""``xpusim plan serve``: the cheapest (or lowest-power) phase-split or colocated cluster for a rate, verified
by simulation (:mod:`planners.serve`); ``--max-rate``: the highest rate a budget sustains. ``xpusim plan train``:
the fastest training layout on N GPUs (:mod:`planners.train`)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from workloads.errors import ConfigError
from xpusim.commands.tables import stdout_console


def _int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}", field=name, value=text) from None
    if not vals or min(vals) < 1:
        raise ConfigError(f"expected positive integers, got {text!r}", field=name, value=text)
    return vals


def rerun_command(v: Any, *, model: str, trace: str, rate: float, duration: float, seed: int, slo: str,
                  slo_reference: str, transfer: str, engine: str | None) -> str:
    """The ``xpusim simulate split`` command that re-runs the verified candidate ``v`` (a
    :class:`planners.serve.Verified`) at ``rate`` on the workload the planner simulated: the same trace, duration
    and seed (``load_cli_workload``), pools and TP degrees, KV transfer, engine profile and SLO; its JSON
    output's metrics equal the plan's (``tests/test_plan_serve.py``). ``repr`` keeps the rate's float exact."""
    import shlex

    from planners.serve import Layout

    cd = v.candidate
    args = ["xpusim", "simulate", "split", "--model", model, "--trace", trace, "--rate", repr(float(rate)),
            "--duration", repr(float(duration)), "--seed", str(seed)]
    roles = {role: (c, n) for role, c, n in cd.pools}
    if cd.layout is Layout.SPLIT:
        (pc, pn), (dc, dn) = roles["prefill"], roles["decode"]
        args += ["--prefill", f"{pc.machine.id}:{pn}", "--prefill-tp", str(pc.tp),
                 "--decode", f"{dc.machine.id}:{dn}", "--decode-tp", str(dc.tp), "--transfer", transfer]
    else:
        cc, cn = roles["colocated"]
        args += ["--colocated", f"{cc.machine.id}:{cn}", "--tp", str(cc.tp)]
    if engine:
        args += ["--engine", engine]
    if slo.strip() not in ("", "none"):
        args += ["--slo", slo, "--slo-reference", slo_reference]
    return " ".join(shlex.quote(a) for a in args)


def _serve_text(title: str, rows: list[tuple[str, Any]]) -> str:
    """The plan as plain text, one block per candidate (for pipes and files: no table to truncate at 80 columns).
    Lines stay under 80 characters except the cluster label, which is never cut."""
    out = [title, "slowdown: p50/p90/p99 of latency / the request alone on the SLO reference"]
    for tag, v in rows:
        cd, s = v.candidate, v.summary
        cost = "-" if cd.cost_per_hour is None else f"{cd.cost_per_hour:.2f}"
        out += ["", f"{tag}: {cd.label()}",
                f"  $/h {cost}   kW {cd.power_w / 1e3:.1f}   SLO met {v.met}"
                + ("" if v.sustained_rps is None else f"   sustained {v.sustained_rps:.2f} req/s")
                + ("" if v.failed_rps is None else f"   misses at {v.failed_rps:.2f}"),
                "  slowdown " + "  ".join(
                    f"{key.upper()} " + "/".join(f"{s[f'{key}_slowdown'][p]:.2f}" for p in ("p50", "p90", "p99"))
                    for key in ("ttft", "tbt", "e2e"))]
    return "\n".join(out)


def _compare(m: Any, workload: Any, mach: list[Any], bud: float, obj: Any, base: Any, tps: list[int], slo: Any,
             headroom: float, k: int, max_count: int, bisect_steps: int, eng: Any, transfer: Any, mode: str,
             budget: float | None, as_json: bool) -> None:
    """``--compare``: :func:`planners.serve.compare_designs`, as JSON or one line per design family."""
    from planners.serve import compare_designs

    cmp = compare_designs(m, workload, mach, bud, objective=obj, baseline=base, tps=tps, slo=slo, headroom=headroom,
                          k=k, max_count=max_count, bisect_steps=bisect_steps, engine=eng, transfer=transfer)
    if as_json:
        click.echo(json.dumps(cmp.to_dict(), default=float))
        return
    unit = "$/h" if mode == "iso-cost" else "kW"
    lines = [f"{m.name}: {mode} at {budget:g} {unit}; highest rate within the SLOs (simulated), ratio to "
             f"{cmp.baseline or 'the baseline (not sustained)'}"]
    for d in cmp.designs:
        v = d.verified
        if v is None:
            lines += ["", f"{d.family}: none within the budget ({d.note})"]
            continue
        cd = v.candidate
        cost = "-" if cd.cost_per_hour is None else f"{cd.cost_per_hour:.2f}"
        lines += ["", f"{d.family}: {d.sustained_rps:.2f} req/s"
                  + ("" if d.ratio is None else f", {d.ratio:.2f}x")
                  + ("" if v.failed_rps is None else f" (misses at {v.failed_rps:.2f})"),
                  f"  {cd.label()}", f"  $/h {cost}   kW {cd.power_w / 1e3:.1f}"]
    click.echo("\n".join(lines))


@click.command("serve")
@click.option("--model", required=True, help="catalog name, HF id or model file")
@click.option("--trace", required=True, help="azure-code | azure-conv | trace file | vLLM bench folder")
@click.option("--rate", type=float, default=None, help="requests/s to serve (not with --max-rate)")
@click.option("--max-rate", "max_rate", is_flag=True, help="find the highest rate --budget sustains")
@click.option("--budget", type=float, default=None,
              help="$/hour (--objective cost) or kW (--objective power): the max-rate budget, or a cap with --rate")
@click.option("--duration", type=float, default=30.0, show_default=True, help="seconds of arrivals simulated")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--machines", required=True, help="comma-separated machine types (dgx-a100,dgx-h100,dgx-h100-pcap)")
@click.option("--tp", "tps", default="2,4,8", show_default=True, help="TP degrees to consider")
@click.option("--slo", default="splitwise", show_default=True,
              help="none, a slowdown preset (splitwise), absolute limits in seconds (ttft_p99=2.0,tbt_p50=0.05,"
                   "e2e_p90=30), or a preset and limits comma-separated")
@click.option("--slo-reference", default="dgx-a100", show_default=True,
              help="where a request runs alone to define its slowdown, the same for every design: "
                   "<machine>[/tp<N>] (TP default: all its GPUs), or own (each pool's own instance)")
@click.option("--objective", default="cost", show_default=True, type=click.Choice(["cost", "power"]))
@click.option("--layouts", default="split,colocated", show_default=True, help="split, colocated or both")
@click.option("--k", "k", default=3, show_default=True, type=int, help="candidates verified by simulation")
@click.option("--burst/--no-burst", default=True, show_default=True,
              help="size prefill pools also by a G/G/c bound on TTFT under the trace's arrival burstiness")
@click.option("--headroom", default=1.2, show_default=True, type=float, help="capacity / demand the ILP keeps")
@click.option("--max-count", default=64, show_default=True, type=int, help="machines per pool at most")
@click.option("--rounds", default=3, show_default=True, type=int, help="ILP + simulation rounds")
@click.option("--bisect", "bisect_steps", default=3, show_default=True, type=int, help="bisection steps on load")
@click.option("--transfer", default="layerwise", show_default=True,
              type=click.Choice(["layerwise", "serialized", "none"]))
@click.option("--engine", default=None, help="engine profile (vllm, vllm-splitwise); default vLLM 0.19")
@click.option("--compare", default=None, type=click.Choice(["iso-cost", "iso-power"]),
              help="instead of a plan: the highest rate each design family sustains at --budget ($/h or kW), "
                   "and its ratio to the colocated --baseline")
@click.option("--baseline", default="dgx-h100", show_default=True, help="--compare: the colocated baseline machine")
@click.option("--json", "as_json", is_flag=True, help="print the plan, runner-ups and metrics as JSON")
def plan_serve_cmd(model: str, trace: str, rate: float | None, max_rate: bool, budget: float | None,
                   duration: float, seed: int, machines: str, tps: str, slo: str, slo_reference: str,
                   objective: str, layouts: str,
                   k: int, burst: bool, headroom: float, max_count: int, rounds: int, bisect_steps: int, transfer: str,
                   engine: str | None, compare: str | None, baseline: str, as_json: bool) -> None:
    """Plan a serving cluster (prefill/decode pools or colocated replicas) that meets the SLOs."""
    from hwmodels.engine import load_engine
    from hwmodels.machines import load_machine
    from planners.serve import Layout, Objective, plan_serve
    from sim.split import TransferMode
    from sim.split_metrics import parse_slo
    from workloads.catalog import load_model
    from xpusim.commands.serve_cmd import load_cli_workload

    if compare is not None:
        if rate is not None or max_rate or budget is None:
            raise ConfigError("--compare takes --budget ($/h for iso-cost, kW for iso-power), not --rate or "
                              "--max-rate", field="compare", value=compare)
    elif max_rate == (rate is not None):
        raise ConfigError("give either --rate or --max-rate (with --budget)", field="rate", value=rate)
    if max_rate and budget is None:
        raise ConfigError("--max-rate needs --budget ($/hour, or kW with --objective power)", field="budget")
    names = [m.strip() for m in machines.split(",") if m.strip()]
    if not names:
        raise ConfigError("no machine types given", field="machines", value=machines)
    mach = [load_machine(n) for n in names]
    try:
        lay = [Layout(v.strip()) for v in layouts.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("expected split, colocated or both", field="layouts", value=layouts) from None
    obj = Objective(objective) if compare is None else (Objective.COST if compare == "iso-cost" else Objective.POWER)
    bud = None if budget is None else (budget * 1e3 if obj is Objective.POWER else budget)   # kW -> W
    m = load_model(model)
    eng = load_engine(engine) if engine else None
    cache: dict[float, Any] = {}

    def workload(r: float) -> Any:
        if r not in cache:
            cache[r] = load_cli_workload(trace, r, duration, seed)
        return cache[r]

    if compare is not None:
        assert bud is not None
        _compare(m, workload, mach, bud, obj, load_machine(baseline), _int_list(tps, "tp"),
                 parse_slo(slo, slo_reference), headroom, k, max_count, bisect_steps, eng, TransferMode(transfer),
                 compare, budget, as_json)
        return
    plan = plan_serve(m, workload, mach, rate=rate, budget=bud, tps=_int_list(tps, "tp"),
                      slo=parse_slo(slo, slo_reference), objective=obj, headroom=headroom, k=k,
                      max_count=max_count, rounds=rounds, bisect_steps=bisect_steps, engine=eng,
                      transfer=TransferMode(transfer), layouts=lay, burst=burst)
    out = plan.to_dict()
    rerun = None
    if plan.chosen is not None:
        v = plan.chosen
        at = rate if rate is not None else (v.sustained_rps or v.candidate.rate)
        rerun = rerun_command(v, model=model, trace=trace, rate=at, duration=duration, seed=seed, slo=slo,
                              slo_reference=slo_reference, transfer=transfer, engine=engine)
        out["rerun_command"] = rerun
    if as_json:
        click.echo(json.dumps(out, default=float))
        return
    con = Console()
    title = (f"{m.name}: " + (f"{rate:g} req/s" if rate is not None else f"max rate within {budget:g}")
             + f", objective {objective}")
    rows = ([("chosen", plan.chosen)] if plan.chosen else []) + [("runner-up", v) for v in plan.runner_ups]
    if con.is_terminal:
        t = Table(title=title)
        for c in ("", "cluster", "$/h", "kW", "SLO met", "sustained req/s", "misses at", "TTFT p99 x", "TBT p99 x",
                  "E2E p99 x"):
            t.add_column(c, justify="left" if c in ("", "cluster") else "right")
        for tag, v in rows:
            cd, s = v.candidate, v.summary
            t.add_row(tag, cd.label(), "-" if cd.cost_per_hour is None else f"{cd.cost_per_hour:.2f}",
                      f"{cd.power_w / 1e3:.1f}", str(v.met),
                      "-" if v.sustained_rps is None else f"{v.sustained_rps:.2f}",
                      "-" if v.failed_rps is None else f"{v.failed_rps:.2f}",
                      *(f"{s[f'{key}_slowdown']['p99']:.2f}" for key in ("ttft", "tbt", "e2e")))
        con.print(t)
    else:
        click.echo(_serve_text(title, rows))
    if rerun is not None:
        con.print("\nre-run the chosen plan:", soft_wrap=True)
        con.print(rerun, soft_wrap=True, markup=False, highlight=False)
    if plan.chosen is None:
        con.print(f"no candidate met the SLOs in simulation after {len(plan.rounds)} rounds; "
                  "raise --headroom or --rounds")


@click.command("train")
@click.option("--model", required=True,
              help="catalog name, HF id, model file, or inline gpt:layers=..,hidden=..,heads=..,vocab=..")
@click.option("--hardware", required=True, help="GPU id or spec file")
@click.option("--cluster", required=True, help="cluster preset (selene, dgx-a100-superpod, ...) or TOML path")
@click.option("--gpus", required=True, type=int, help="GPUs to train on")
@click.option("--global-batch", required=True, type=int, help="sequences per step")
@click.option("--seq", default=2048, show_default=True, type=int, help="sequence length (tokens)")
@click.option("--top", default=5, show_default=True, type=int, help="layouts simulated (best by closed-form estimate)")
@click.option("--attention", default="flash", show_default=True, help="flash | unfused (Megatron-LM 2022)")
@click.option("--dtype", default="bf16", show_default=True,
              help="bf16 | fp16 | fp8 (Transformer Engine: fp8 GEMM inputs, bf16 the rest)")
@click.option("--memory-headroom-gib", default=0.0, show_default=True, type=float,
              help="GiB per GPU kept free beyond the memory model (CUDA context, NCCL, fragmentation)")
@click.option("--json", "as_json", is_flag=True, help="print the plan, runner-ups and search counts as JSON")
def plan_train_cmd(model: str, hardware: str, cluster: str, gpus: int, global_batch: int, seq: int, top: int,
                   attention: str, dtype: str, memory_headroom_gib: float, as_json: bool) -> None:
    """Plan a training layout: TP, PP, DP, micro-batch, virtual stages, recompute and ZeRO (simulated)."""
    from hwmodels.gpu import load_gpu
    from hwmodels.network.topology import load_cluster
    from planners.train import plan_train
    from workloads.ops import DType
    from workloads.train_ops import AttentionImpl, load_train_model
    from xpusim.commands.train_cmd import parse_choice

    if gpus < 1:
        raise ConfigError(f"must be >= 1, got {gpus}", field="gpus", value=gpus)
    spec = load_train_model(model, seq)
    gpu = load_gpu(hardware)
    cl = load_cluster(cluster, gpus=gpus)
    # the whole cluster: a NIC-aware placement may choose which of its nodes to use
    plan = plan_train(spec, gpu, cl, gpus, global_batch, seq=seq, top=top,
                      attention=parse_choice(AttentionImpl, attention, "attention"),
                      dtype=parse_choice(DType, dtype, "dtype"),
                      headroom_bytes=memory_headroom_gib * 1024**3, placement_cluster=load_cluster(cluster))
    if as_json:
        click.echo(json.dumps(plan.to_dict(), default=float))
        return
    con = stdout_console()
    t = Table(title=f"{spec.name} on {gpus} x {gpu.name}, global batch {global_batch}, seq {seq}: "
              f"{plan.enumerated} layouts, {plan.fit} fit, {plan.simulated} simulated in {plan.wall_s:.1f} s")
    for col in ("", "layout", "step s", "estimate s", "TFLOP/s/GPU", "MFU", "bubble", "GiB/GPU"):
        t.add_column(col, justify="left" if col in ("", "layout") else "right")
    for tag, c in [("chosen", plan.best)] + [("runner-up", r) for r in plan.runner_ups]:
        rep = c.chosen_report     # the chosen placement's own report (NIC-aware where it was faster)
        assert rep is not None
        t.add_row(tag, c.label(), f"{c.step_time_s:.3f}", f"{c.estimate_s:.3f}", f"{rep.tflops_per_gpu:.1f}",
                  f"{rep.mfu:.3f}", f"{rep.bubble_fraction:.3f}", f"{rep.memory.total / 1024**3:.1f}")
    con.print(t)
    pl = plan.best.placement
    if pl is not None:
        stages = "; ".join(f"stage {s}: {' + '.join(g)}" for s, g in enumerate(pl.stage_groups))
        con.print(f"NIC-aware placement (Holmes, {pl.search}, {pl.simulated} simulated): {pl.aware.step_time_s:.3f} s "
                  f"vs {pl.oblivious.step_time_s:.3f} s NIC-oblivious (Megatron order over the node list): "
                  f"gain {pl.gain:.3f}x\n  {stages}")


def register(cli: click.Group) -> None:
    @cli.group()
    def plan() -> None:
        """Plan deployments (ILP, verified by simulation)."""

    plan.add_command(plan_serve_cmd)
    plan.add_command(plan_train_cmd)
