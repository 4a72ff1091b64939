"""``xpusim catalog hardware|models|clusters``: the built-in specs as a table or JSON."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from hwmodels.gpu import GIB, MIB, GPUSpec, list_gpus, load_gpu
from hwmodels.network.topology import Cluster, list_clusters, load_cluster
from workloads.catalog import list_models, load_model
from workloads.model_spec import ModelSpec
from xpusim.commands.tables import stdout_console


def gpu_row(gpu: GPUSpec) -> dict[str, Any]:
    """A GPU in the units of its spec file (TFLOP/s, GiB, GB/s), for JSON output."""
    return {
        "id": gpu.id,
        "name": gpu.name,
        "architecture": gpu.architecture.value,
        "sm_count": gpu.sm_count,
        "bf16_dense_tflops": gpu.bf16_flops / 1e12,
        "fp16_dense_tflops": gpu.fp16_flops / 1e12,
        "fp8_dense_tflops": None if gpu.fp8_flops is None else gpu.fp8_flops / 1e12,
        "fp32_tflops": gpu.fp32_flops / 1e12,
        "memory_gib": gpu.memory_bytes / GIB,
        "memory_bandwidth_gb_per_s": gpu.memory_bandwidth / 1e9,
        "l2_cache_mib": gpu.l2_cache_bytes / MIB,
        "tdp_w": gpu.tdp_w,
        "boost_clock_mhz": None if gpu.boost_clock_hz is None else gpu.boost_clock_hz / 1e6,
        "nvlink_gb_per_s": gpu.nvlink_bandwidth / 1e9,
        "pcie_gb_per_s": gpu.pcie_bandwidth / 1e9,
    }


def model_row(catalog_id: str, spec: ModelSpec) -> dict[str, Any]:
    """A model's shapes and derived sizes, for JSON output."""
    return {
        "id": catalog_id,
        "name": spec.name,
        "hf_id": spec.hf_id,
        "architecture": spec.architecture,
        "params": spec.param_count(),
        "active_params": spec.param_count(active_only=True),
        "num_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_heads": spec.num_heads,
        "num_kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "intermediate_size": spec.intermediate_size,
        "vocab_size": spec.vocab_size,
        "num_experts": spec.num_experts,
        "experts_per_token": spec.experts_per_token,
        "moe_intermediate_size": spec.moe_intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "kv_bytes_per_token_16bit": spec.kv_bytes_per_token(2),
        "source": spec.source,
    }


def cluster_row(cluster_id: str, cl: Cluster) -> dict[str, Any]:
    """A cluster preset: its node groups (node type, count, NIC) and size."""
    return {
        "id": cluster_id,
        "name": cl.name,
        "gpus": len(cl.gpus),
        "nodes": cl.num_nodes,
        "groups": [{"node": g.node.id, "nodes": g.nodes, "gpus_per_node": g.node.gpus, "nic": g.nic.id,
                    "nic_gb_per_s": g.nic.rate / 1e9} for g in cl.groups],
        "source": cl.source,
    }


def _num(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _hardware_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Built-in hardware (dense tensor-core peaks, per-direction links)")
    for col in ("hardware id", "name", "arch"):
        table.add_column(col, no_wrap=True)
    for col in ("bf16 TF", "memory GiB", "HBM GB/s", "NVLink GB/s"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["id"], r["name"], r["architecture"], _num(r["bf16_dense_tflops"]),
                      _num(r["memory_gib"]), _num(r["memory_bandwidth_gb_per_s"]),
                      _num(r["nvlink_gb_per_s"]) if r["nvlink_gb_per_s"] else "-")
    return table


def _models_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Built-in models")
    table.add_column("name", no_wrap=True)
    table.add_column("hf id", no_wrap=True)
    for col in ("params (B)", "active params (B)", "layers", "hidden", "heads/kv heads", "experts"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        experts = f"{r['num_experts']} (top-{r['experts_per_token']})" if r["num_experts"] else "-"
        table.add_row(r["id"], r["hf_id"] or "-", f"{r['params'] / 1e9:.2f}",
                      f"{r['active_params'] / 1e9:.2f}", str(r["num_layers"]), str(r["hidden_size"]),
                      f"{r['num_heads']}/{r['num_kv_heads']}", experts)
    return table


def register(catalog_group: click.Group) -> None:
    """Add ``hardware`` and ``models`` to the ``catalog`` group."""

    @catalog_group.command("hardware")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
    def hardware(as_json: bool) -> None:
        """List the built-in GPUs (hwmodels/specs/*.toml)."""
        rows = [gpu_row(load_gpu(gpu_id)) for gpu_id in list_gpus()]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            stdout_console().print(_hardware_table(rows))

    @catalog_group.command("clusters")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
    def clusters(as_json: bool) -> None:
        """List the built-in cluster presets (hwmodels/network/specs/clusters/*.toml)."""
        rows = [cluster_row(cid, load_cluster(cid)) for cid in list_clusters()]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="Built-in clusters (NIC rate: effective, per direction)")
        for col in ("cluster id", "name"):
            table.add_column(col, no_wrap=True)
        for col in ("GPUs", "nodes", "node types x count (NIC GB/s)"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in rows:
            groups = ", ".join(f"{g['node']} x{g['nodes']} ({g['nic']} {_num(g['nic_gb_per_s'])})" for g in r["groups"])
            table.add_row(r["id"], r["name"], str(r["gpus"]), str(r["nodes"]), groups)
        stdout_console().print(table)

    @catalog_group.command("models")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
    def models(as_json: bool) -> None:
        """List the built-in models (workloads/models/*.toml)."""
        rows = [model_row(model_id, load_model(model_id)) for model_id in list_models()]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            stdout_console().print(_models_table(rows))
