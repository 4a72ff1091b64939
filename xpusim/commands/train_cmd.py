"""``xpusim simulate train``: one training step of a Megatron-style layout on a cluster."""

from __future__ import annotations

import json
from typing import Any

import click

from workloads.specfile import unknown_name


def register(simulate_group: click.Group) -> None:
    simulate_group.add_command(simulate_train)


_COMM_TRACKS = {"TPF": (0, "TP collectives"), "TPB": (0, "TP collectives"), "SF": (1, "pipeline sends"),
                "SB": (1, "pipeline sends"), "DP": (2, "DP reduction"), "EMB": (2, "DP reduction")}


def train_chrome_trace(report: Any) -> str:
    """Chrome/Perfetto trace: a track per pipeline stage with every micro-batch's forward (F) and backward
    (B) of each model chunk, and per stage three communication tracks: its TP collectives (one summarised
    span per chunk: their sum from the chunk's start, as they run between its kernels), its point-to-point
    sends (forward activation / backward gradient) and its DP gradient buckets' reductions (with the
    tied-embedding all-reduce), each span at the simulated start and end."""
    ev: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "pipeline stages"}},
                                {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "communication"}}]
    stages = sorted({e[0] for e in report.events})
    for s in stages:
        ev.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": s, "args": {"name": f"stage {s}"}})
        for k, name in sorted(set(_COMM_TRACKS.values())):
            ev.append({"ph": "M", "name": "thread_name", "pid": 2, "tid": 3 * s + k,
                       "args": {"name": f"stage {s} {name}"}})
    for s, kind, mb, chunk, start, end in report.events:
        c = f".c{chunk}" if chunk else ""
        if kind in ("F", "B"):
            ev.append({"ph": "X", "pid": 1, "tid": s, "name": f"{kind}{mb}{c}",
                       "cat": "forward" if kind == "F" else "backward", "ts": start / 1e3, "dur": (end - start) / 1e3,
                       "args": {"micro_batch": mb, "chunk": chunk}})
            continue
        k, _ = _COMM_TRACKS[kind]
        name, cat, args = {
            "TPF": (f"TP F{mb}{c}", "tp", {"micro_batch": mb, "chunk": chunk}),
            "TPB": (f"TP B{mb}{c}", "tp", {"micro_batch": mb, "chunk": chunk}),
            "SF": (f"send F{mb}{c}", "pp_send", {"micro_batch": mb, "chunk": chunk, "direction": "forward"}),
            "SB": (f"send B{mb}{c}", "pp_send", {"micro_batch": mb, "chunk": chunk, "direction": "backward"}),
            "DP": (f"DP bucket {mb}{c}", "dp_reduce", {"bucket": mb, "chunk": chunk}),
            "EMB": ("embedding all-reduce", "dp_reduce", {}),
        }[kind]
        ev.append({"ph": "X", "pid": 2, "tid": 3 * s + k, "name": name, "cat": cat, "ts": start / 1e3,
                   "dur": (end - start) / 1e3, "args": args})
    return json.dumps({"traceEvents": ev, "displayTimeUnit": "ms"})


def parse_choice(cls: Any, value: str, field: str) -> Any:
    try:
        return cls(value.lower())
    except ValueError:
        raise unknown_name(field, value, [e.value for e in cls], field=field) from None


@click.command("train")
@click.option("--model", required=True,
              help="catalog name, HF id, model file, or inline gpt:layers=..,hidden=..,heads=..,vocab=..")
@click.option("--seq", default=2048, show_default=True, type=int, help="sequence length (tokens)")
@click.option("--hardware", required=True, help="GPU id or spec file")
@click.option("--cluster", required=True, help="cluster preset (dgx-a100-superpod, ...) or TOML path")
@click.option("--gpus", required=True, type=int)
@click.option("--tp", default=1, show_default=True, type=int)
@click.option("--pp", default=1, show_default=True, type=int)
@click.option("--dp", default=1, show_default=True, type=int)
@click.option("--cp", default=1, show_default=True, type=int,
              help="context parallelism: the sequence split over this many GPUs")
@click.option("--cp-impl", default="ulysses", show_default=True,
              help="ulysses (all-to-all, DeepSpeed-Ulysses) | ring (Megatron-Core ring attention)")
@click.option("--global-batch", required=True, type=int, help="sequences per step")
@click.option("--micro-batch", default=1, show_default=True, type=int)
@click.option("--recompute", default="none", show_default=True, help="none | selective | full")
@click.option("--sequence-parallel", is_flag=True, help="Megatron sequence parallelism (needs tp > 1)")
@click.option("--schedule", default="1f1b", show_default=True, help="gpipe | 1f1b | interleaved")
@click.option("--virtual-stages", default=1, show_default=True, type=int, help="model chunks per stage (interleaved)")
@click.option("--zero", default=0, show_default=True, type=int, help="ZeRO stage 0-3 over the DP group")
@click.option("--attention", default="flash", show_default=True, help="flash | unfused (Megatron-LM 2022)")
@click.option("--dtype", default="bf16", show_default=True,
              help="bf16 | fp16 | fp8 (Transformer Engine: fp8 GEMM inputs, bf16 the rest)")
@click.option("--timeline", type=click.Path(dir_okay=False), default=None, help="Chrome/Perfetto trace JSON")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def simulate_train(model: str, seq: int, hardware: str, cluster: str, gpus: int, tp: int, pp: int, dp: int,
                   cp: int, cp_impl: str, global_batch: int, micro_batch: int, recompute: str,
                   sequence_parallel: bool, schedule: str, virtual_stages: int, zero: int, attention: str,
                   dtype: str, timeline: str | None, as_json: bool) -> None:
    """Simulate one training step: step time, TFLOP/s per GPU, MFU, bubble, exposed communication, memory."""
    from hwmodels.gpu import load_gpu
    from hwmodels.network.topology import load_cluster
    from sim.training import simulate_training
    from workloads.ops import DType
    from workloads.train_ops import (
        AttentionImpl,
        CPImpl,
        Recompute,
        Schedule,
        TrainLayout,
        check_layout,
        load_train_model,
    )
    from xpusim.report import atomic_write_text

    spec = load_train_model(model, seq)
    lay = TrainLayout(tp=tp, pp=pp, dp=dp, micro_batch=micro_batch, global_batch=global_batch, seq=seq,
                      sequence_parallel=sequence_parallel, recompute=parse_choice(Recompute, recompute, "recompute"),
                      schedule=parse_choice(Schedule, schedule, "schedule"), virtual_stages=virtual_stages, zero=zero,
                      attention=parse_choice(AttentionImpl, attention, "attention"),
                      dtype=parse_choice(DType, dtype, "dtype"),
                      cp=cp, cp_impl=parse_choice(CPImpl, cp_impl, "cp_impl"))
    check_layout(spec, lay, gpus)
    gpu = load_gpu(hardware)
    cl = load_cluster(cluster, gpus=gpus)
    rep = simulate_training(spec, lay, gpu, cl, record_events=timeline is not None)
    out = rep.summary()
    if timeline is not None:
        atomic_write_text(timeline, train_chrome_trace(rep))
    if as_json:
        click.echo(json.dumps(out, default=float))
        return
    click.echo(f"{spec.name} on {gpus} x {gpu.name} (tp {tp}, pp {pp}, dp {dp}"
               f"{f', cp {cp} ({lay.cp_impl.value})' if cp > 1 else ''}, {lay.schedule.value}"
               f"{f' x{lay.virtual_stages}' if lay.chunks > 1 else ''}, recompute {lay.recompute.value}"
               f"{', SP' if sequence_parallel else ''}{f', ZeRO-{zero}' if zero else ''})")
    click.echo(f"  step time          {rep.step_time_s:.3f} s")
    click.echo(f"  model TFLOP/s/GPU  {rep.tflops_per_gpu:.1f} (MFU {rep.mfu:.3f}); with recompute "
               f"{rep.hardware_tflops_per_gpu:.1f} (HFU {rep.hfu:.3f})")
    click.echo(f"  pipeline bubble    {rep.bubble_fraction:.3f}")
    click.echo("  exposed comm (s)   " + ", ".join(f"{k} {v:.3f}" for k, v in rep.exposed_comm_s.items()))
    click.echo("  memory GiB/GPU     " + ", ".join(f"{k} {v:.1f}" for k, v in rep.memory.to_gib().items()))
