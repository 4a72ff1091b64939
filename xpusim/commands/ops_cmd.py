"""``xpusim validate ops``: simulate every (row, op) of a measured kernel-timing file and score it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from workloads.errors import ConfigError, WorkloadError
from workloads.measured import FORMATS, MODEL_FORMATS


def register(validate_group: click.Group, *_: click.Group) -> None:
    validate_group.add_command(ops)


@click.command("ops")
@click.option("--format", "fmt", required=True, help=f"file format: {', '.join(sorted(FORMATS))}")
@click.option("--hardware", required=True, help="GPU catalog id (a100-sxm-80gb) or spec TOML path")
@click.option("--model", default=None, help="model name or config (lss-* formats carry no shapes)")
@click.option("--tp", default=1, show_default=True, type=int, help="tensor-parallel degree (lss-* formats)")
@click.option("--stack", default=None,
              help="software stack profile (vllm, vidur, hf-eager, cublas, or a TOML path); "
                   "default: the one the format was measured under")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
@click.argument("file", type=click.Path(path_type=Path))
def ops(fmt: str, hardware: str, model: str | None, tp: int, stack: str | None, as_json: bool,
        file: Path) -> None:
    """Per-kernel accuracy: n, WAPE and MAPE overall and per op of FILE."""
    from hwmodels.gpu import load_gpu
    from hwmodels.validate_ops import validate_ops
    from workloads.measured import read_measured

    if fmt not in FORMATS:
        raise WorkloadError(f"unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}", file=str(file))
    if not file.is_file():
        raise WorkloadError("file not found", file=str(file))
    spec = None
    if fmt in MODEL_FORMATS:
        if model is None:
            raise ConfigError(f"format {fmt} carries no model shapes: give --model", field="model")
        from workloads.catalog import load_model

        spec = load_model(model)
    if tp < 1:
        raise ConfigError(f"must be >= 1, got {tp}", field="tp", value=tp)
    gpu = load_gpu(hardware)
    if stack is not None:
        from hwmodels.kernels import load_stack

        load_stack(stack)  # a bad name is a ConfigError before the file is read
    result = validate_ops(read_measured(fmt, file, spec, tp), gpu, stack=stack)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    from xpusim.commands.tables import print_error_table

    console = print_error_table(f"{file.name}: {fmt} on {gpu.name}, {result.stack} stack", "op",
                                result.per_op.items(), [("all", result.overall)])
    if result.skipped:
        console.print("skipped rows of layers this model does not have: "
                      + ", ".join(f"{k} ({v})" for k, v in result.skipped.items()))
