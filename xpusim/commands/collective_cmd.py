"""``xpusim simulate collective`` and ``xpusim validate collectives``: one collective on a cluster, in
closed form or flow-level; and the closed form scored against a measured collective-timing file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from workloads.errors import ConfigError, WorkloadError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    """'1GiB' -> 1073741824, '512MB' -> 512e6, '8K' -> 8192 (K/M/G as in nccl-tests: binary), '4096' -> 4096."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"not a size: {text!r} (e.g. 1GiB, 512MB, 8K, 4096)", field="size", value=text)
    nbytes = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if nbytes < 1 or not nbytes.is_integer():
        raise ConfigError(f"a message is a whole number of bytes >= 1, got {text!r}", field="size", value=text)
    return int(nbytes)


def register(simulate_group: click.Group, validate_group: click.Group) -> None:
    simulate_group.add_command(collective)
    validate_group.add_command(collectives)


@click.command("collective")
@click.option("--op", required=True,
              help="all_reduce, reduce_scatter, all_gather, all_to_all, broadcast or send_recv")
@click.option("--size", required=True, help="message size: nccl-tests' size (1GiB, 512MB, 8K, 4096)")
@click.option("--gpus", required=True, type=int, help="GPUs in the group: the first N of the cluster, in rank order")
@click.option("--cluster", required=True, help="cluster preset (dgx-h100-superpod, ...) or TOML path")
@click.option("--algo", default="auto", show_default=True, help="ring, tree, nvls, hierarchical or auto")
@click.option("--fidelity", default="analytic", show_default=True, type=click.Choice(["analytic", "flow"]),
              help="closed form, or flow-level simulation of the decomposed collective")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def collective(op: str, size: str, gpus: int, cluster: str, algo: str, fidelity: str, as_json: bool) -> None:
    """Time, algorithm and bus bandwidth of one collective."""
    from hwmodels.network.collectives import Algorithm, CollectiveOp, collective_time, parse_enum
    from hwmodels.network.topology import load_cluster

    op_e = parse_enum(CollectiveOp, op, "op")
    algo_e = parse_enum(Algorithm, algo, "algo")
    nbytes = parse_size(size)
    if gpus < 1:
        raise ConfigError(f"must be >= 1, got {gpus}", field="gpus", value=gpus)
    cl = load_cluster(cluster, gpus=gpus)
    group = [cl.gpus[0], cl.gpus[-1]] if op_e is CollectiveOp.SEND_RECV and gpus >= 2 else None
    res = collective_time(cl, op_e, nbytes, gpus=group, algo=algo_e)
    out: dict[str, float | str] = {
        "time_s": res.time_s, "algbw_gb_per_s": res.algbw / 1e9, "busbw_gb_per_s": res.busbw / 1e9,
        "algo": res.algo.value, "protocol": res.protocol.value, "fidelity": "analytic"}
    if fidelity == "flow":
        from sim.fabric import simulate_collective_flows

        flow = simulate_collective_flows(cl, op_e.value, nbytes, res.algo.value, group=group)
        out.update({"time_s": flow.time_s, "algbw_gb_per_s": flow.algbw / 1e9, "busbw_gb_per_s": flow.busbw / 1e9,
                    "fidelity": "flow"})
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{op_e.value} of {nbytes:,} bytes on {gpus} GPUs of {cl.name} ({out['fidelity']}): "
               f"{float(out['time_s']) * 1e6:,.1f} us, algbw {float(out['algbw_gb_per_s']):.1f} GB/s, "
               f"busbw {float(out['busbw_gb_per_s']):.1f} GB/s, {out['algo']} / {out['protocol']}")


@click.command("collectives")
@click.option("--format", "fmt", required=True, help="file format: vidur-collective")
@click.option("--cluster", required=True, help="cluster preset or TOML path the file was measured on")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
@click.argument("file", type=click.Path(path_type=Path))
def collectives(fmt: str, cluster: str, as_json: bool, file: Path) -> None:
    """Collective accuracy: n, WAPE and MAPE overall and per (op, nodes x GPUs per node) of FILE."""
    from hwmodels.network.topology import load_cluster
    from hwmodels.network.validate import FORMATS, read_collective_file, validate_collectives

    if fmt not in FORMATS:
        from workloads.specfile import unknown_name

        raise unknown_name("format", fmt, FORMATS, field="format")
    load_cluster(cluster, gpus=1)  # a bad name is a ConfigError before the file is read
    if not file.is_file():
        raise WorkloadError("file not found", file=str(file))
    result = validate_collectives(read_collective_file(fmt, file), cluster, fmt=fmt)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    from xpusim.commands.tables import print_error_table

    print_error_table(f"{file.name}: {fmt} on {result.cluster}", "group", result.per_group.items(),
                      [("all", result.overall)])
