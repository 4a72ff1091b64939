"""``xpusim validate torch``: run the built-in Llama-style module for real, simulate its traced graph, score.

Needs PyTorch (``pip install 'xpusim[torch]'``). ``--device cpu`` costs the trace with the host CPU
model (``hwmodels/specs/cpu/``; ``--cpu`` picks the spec); ``--device cuda`` with the catalog GPU
whose name matches the device's (``NVIDIA H200`` -> ``h200-sxm-141gb``) or ``--hardware``. The CUDA
path has not been run on a GPU by the tests (the CI has none).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click

from workloads.errors import ConfigError

# substrings of torch.cuda.get_device_name() -> catalog id (the most specific first)
GPU_NAMES = (("H200", "h200-sxm-141gb"), ("H100", "h100-sxm-80gb"), ("B200", "b200-sxm-180gb"),
             ("A100", "a100-sxm-80gb"), ("L40S", "l40s"), ("RTX 4090", "rtx-4090"), ("RTX A6000", "rtx-a6000"))


def register(validate_group: click.Group, *_: click.Group) -> None:
    validate_group.add_command(torch_cmd)


def gpu_id_for(device_name: str) -> str:
    for key, gpu in GPU_NAMES:
        if key.lower() in device_name.lower():
            return gpu
    raise ConfigError(f"no catalog GPU matches {device_name!r}; give --hardware", field="hardware",
                      value=device_name)


def _write_csv(path: Path, rows: list[dict[str, Any]], prov: dict[str, Any]) -> None:
    """Rows under '# key: value' provenance lines, written atomically (nothing half-written)."""
    from xpusim.report import atomic_write_text

    buf = io.StringIO(newline="")
    for k, v in prov.items():
        buf.write(f"# {k}: {v}\n")
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


@click.command("torch")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--model", default="llama-3.2-1b", show_default=True, help="catalog model or HF config.json")
@click.option("--batch", default=4, show_default=True, type=int)
@click.option("--prompt", default=512, show_default=True, type=int, help="prompt tokens per sequence")
@click.option("--decode", default=32, show_default=True, type=int, help="decode steps after the prefill")
@click.option("--layers", default=None, type=int, help="build only this many layers (quick runs)")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="default: fp32 on the CPU, bf16 on CUDA")
@click.option("--repeats", default=3, show_default=True, type=int, help="timed runs of each step (median)")
@click.option("--threads", default=1, show_default=True, type=int,
              help="CPU intra-op threads (1: robust on a shared machine, see docs/torch.md)")
@click.option("--cpu", "cpu_spec", default="epyc-zen3-2c-kvm", show_default=True,
              help="CPU spec id or TOML path (the host model)")
@click.option("--hardware", default=None, help="catalog GPU for --device cuda (default: detected)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="folder for ops.csv and steps.csv (measured vs simulated, with provenance)")
@click.option("--from", "from_dir", type=click.Path(path_type=Path), default=None,
              help="re-simulate a recorded CUDA run (a --out folder) instead of running anything")
@click.option("--stack", "gpu_stack", default="torch-step", show_default=True,
              help="CUDA: software stack of the memory-bound kernels (hwmodels/stacks/)")
@click.option("--host", "host_spec", default="h200-xeon-torch2.11", show_default=True,
              help="CUDA: host dispatch profile of eager PyTorch (hwmodels/specs/host/)")
@click.option("--no-clock-context", "no_clock_context", is_flag=True,
              help="CUDA: cost each kernel at the clock it holds alone, not at the step's power-limited clock")
def torch_cmd(device: str, model: str, batch: int, prompt: int, decode: int, layers: int | None,
              dtype: str | None, repeats: int, threads: int, cpu_spec: str, hardware: str | None, as_json: bool,
              out: Path | None, from_dir: Path | None, gpu_stack: str, host_spec: str, no_clock_context: bool) -> None:
    """Run a built-in Llama-style model for real and compare per-op and step times with the simulation."""
    if from_dir is not None:
        _rescore(from_dir, hardware, gpu_stack, host_spec, as_json, out, no_clock_context)
        return
    for name, v, low in (("batch", batch, 1), ("prompt", prompt, 1), ("decode", decode, 0),
                         ("repeats", repeats, 1), ("threads", threads, 1)):
        if v < low:
            raise ConfigError(f"must be >= {low}, got {v}", field=name, value=v)
    if layers is not None and layers < 1:
        raise ConfigError(f"must be >= 1, got {layers}", field="layers", value=layers)
    from workloads.catalog import load_model

    spec = load_model(model)
    try:
        import torch
    except ImportError as exc:
        raise ConfigError("needs PyTorch: pip install 'xpusim[torch]'", field="device", value=device) from exc
    from hwmodels.validate_torch import CudaStepCost, cpu_cost_fn, validate_steps

    mismatch: list[str] = []
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("no CUDA device is available", field="device", value=device)
        from hwmodels.gpu import load_gpu

        gpu = load_gpu(hardware or gpu_id_for(torch.cuda.get_device_name()))
        cost: Any = CudaStepCost(gpu, stack=gpu_stack, host=host_spec,
                                 clock_context=False if no_clock_context else None)
        target = gpu.id
    else:
        from hwmodels.cpu import load_cpu, spec_mismatch
        from workloads.pytorch.measure import host_cpu_facts

        cpu = load_cpu(cpu_spec)
        cost = cpu_cost_fn(cpu, threads)
        target = cpu.id
        mismatch = spec_mismatch(cpu, host_cpu_facts())
        if mismatch:
            click.echo(f"note: this host is not the machine CPU spec '{cpu.id}' describes ({'; '.join(mismatch)}); "
                       f"its measured constants are that machine's. Measure this one (~3 min): python "
                       f"benchmarks/fit_cpu.py DIR --spec-out host.toml, then --cpu host.toml", err=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    from workloads.pytorch.runner import run_llama

    run = run_llama(spec, device=device, dtype=dtype or ("fp32" if device == "cpu" else "bf16"), batch=batch,
                    prompt=prompt, decode=decode, repeats=repeats, threads=threads if device == "cpu" else None,
                    num_layers=layers)
    result = validate_steps(run.steps, cost)
    prov = dict(run.provenance, simulated_on=target, unmatched_ops=result.unmatched)
    if mismatch:   # only a CPU run has one
        prov["spec_host_mismatch"] = "; ".join(mismatch)
    if out is not None:
        _write_csv(out / "ops.csv", result.op_rows, prov)
        _write_csv(out / "steps.csv", result.step_rows, prov)
    _report(result, f"{spec.name} on {device} ({prov.get('cpu') if device == 'cpu' else prov.get('gpu')}) "
                    f"vs {target}", as_json)


def _rescore(from_dir: Path, hardware: str | None, gpu_stack: str, host_spec: str, as_json: bool,
             out: Path | None, no_clock_context: bool = False) -> None:
    """``--from DIR``: the recorded run's ops and step times, simulated again (no torch, no GPU needed)."""
    from hwmodels.gpu import load_gpu
    from hwmodels.validate_torch import CudaStepCost, validate_steps
    from workloads.measured_xpusim import read_validate_torch

    run = read_validate_torch(from_dir)
    if run.provenance.get("device", "cuda") != "cuda":
        raise ConfigError("--from re-simulates CUDA runs only", field="from", value=str(from_dir))
    gpu_id = hardware or run.provenance.get("simulated_on") or gpu_id_for(run.provenance.get("gpu", ""))
    gpu = load_gpu(gpu_id)
    cost = CudaStepCost(gpu, stack=gpu_stack, host=host_spec, clock_context=False if no_clock_context else None)
    result = validate_steps(run.steps, cost)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        prov = dict(run.provenance, simulated_on=gpu.id, resimulated_from=str(from_dir), stack=gpu_stack,
                    host=host_spec, clock_context=cost.clock_context)
        _write_csv(out / "ops.csv", result.op_rows, prov)
        _write_csv(out / "steps.csv", result.step_rows, prov)
    _report(result, f"{run.provenance.get('model', from_dir)} recorded on {run.provenance.get('gpu', '?')} "
                    f"vs {gpu.id}", as_json)


def _report(result: Any, title: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    from xpusim.commands.tables import print_error_table

    print_error_table(title, "what", [(f"op {name}", s) for name, s in result.per_kind.items()],
                      [("all ops", result.overall), *((f"step {name}", s) for name, s in result.steps.items())])
