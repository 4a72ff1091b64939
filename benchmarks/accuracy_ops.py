"""Per-kernel accuracy on every shared measured file: one JSON line per file (``validate ops --json``).

Run: ``python benchmarks/accuracy_ops.py [--data ../shared/data]``. The ``held_out`` flag says whether
the file was left out of its family's calibration fit (``benchmarks/fit_kernels.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hwmodels.gpu import load_gpu
from hwmodels.validate_ops import validate_ops
from workloads.measured import read_measured

DEFAULT_DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class SharedFile:
    format: str
    path: str            # relative to the data folder
    hardware: str
    model: str | None = None
    tp: int = 1
    fitted: bool = False  # used by the family's calibration fit
    kit: bool = False     # measured by xpusim's own kit: ``path`` is relative to ``validation/measured/``
    stack: str | None = None  # the software stack it ran under, where not its format's (validate_ops' default)


SHARED_FILES: tuple[SharedFile, ...] = (
    SharedFile("vidur-mlp", "measured/vidur_a100/Llama-2-7b-hf/mlp.csv", "a100-sxm-80gb", fitted=True),
    SharedFile("vidur-mlp", "measured/vidur_a100/Meta-Llama-3-8B/mlp.csv", "a100-sxm-80gb"),
    SharedFile("vidur-mlp", "measured/vidur_a100/Llama-2-70b-hf/mlp.csv", "a100-sxm-80gb"),
    SharedFile("vidur-mlp", "measured/vidur_a100/CodeLlama-34b-Instruct-hf/mlp.csv", "a100-sxm-80gb"),
    SharedFile("llmcompass-matmul", "measured/llmcompass_a100/matmul_A100.csv", "a100-sxm-80gb", fitted=True),
    SharedFile("vidur-attention", "measured/lss_a6000/meta-llama_Llama-3.1-8B_tp1_attention.csv", "rtx-a6000",
               fitted=True),
    SharedFile("lss-layers", "measured/lss_a6000/meta-llama_Llama-3.1-8B_tp1_layers.csv", "rtx-a6000",
               "llama-3.1-8b", fitted=True),
    SharedFile("lss-dense", "measured/lss_rtx4090/tp1_dense.csv", "rtx-4090", "llama-3.1-8b", fitted=True),
    SharedFile("lss-attention", "measured/lss_rtx4090/tp1_attention.csv", "rtx-4090", "llama-3.1-8b",
               fitted=True),
)


# Measured with benchmarks/collect_cuda.py and committed with their provenance (validation/measured/<gpu>/).
KIT_DIR = ROOT / "validation" / "measured"
KIT_FILES: tuple[SharedFile, ...] = (
    # gemm.csv fits nothing: the Hopper GEMM constants are the published-figure ones (hopper.toml says why)
    SharedFile("xpusim-gemm", "h200/gemm.csv", "h200-sxm-141gb", kit=True),
    SharedFile("xpusim-attention", "h200/attention.csv", "h200-sxm-141gb", fitted=True, kit=True),
    # the same SDPA grid with cuDNN's backend first: PyTorch's default dispatch on Hopper, the `torch` stack
    # (its [attention_cudnn] table was fitted on it)
    SharedFile("xpusim-attention", "h200/attention_cudnn.csv", "h200-sxm-141gb", fitted=True, kit=True,
               stack="torch"),
    SharedFile("xpusim-memory-ops", "h200/memory_ops.csv", "h200-sxm-141gb", fitted=True, kit=True),
    SharedFile("xpusim-steps", "h200/steps.csv", "h200-sxm-141gb", kit=True),
    # SDPA (cuDNN and flash) and GEMM calls timed by the profiler's device time (and by events, unused here):
    # with attention_cudnn.csv / attention.csv the fit's data for the Hopper [attention_cudnn] / [attention_fa2]
    SharedFile("xpusim-kernel-times", "h200/kernel_times.csv", "h200-sxm-141gb", fitted=True, kit=True),
    # the same kit on an H100 SXM: nothing is fitted on it (held out for the Hopper constants)
    SharedFile("xpusim-gemm", "h100/gemm.csv", "h100-sxm-80gb", kit=True),
    SharedFile("xpusim-attention", "h100/attention.csv", "h100-sxm-80gb", kit=True),
    SharedFile("xpusim-attention", "h100/attention_cudnn.csv", "h100-sxm-80gb", kit=True, stack="torch"),
    SharedFile("xpusim-memory-ops", "h100/memory_ops.csv", "h100-sxm-80gb", kit=True),
    SharedFile("xpusim-steps", "h100/steps.csv", "h100-sxm-80gb", kit=True),
    SharedFile("xpusim-kernel-times", "h100/kernel_times.csv", "h100-sxm-80gb", kit=True),
)
FIT_FILES = SHARED_FILES + KIT_FILES   # what the fit scripts may use (those marked fitted)


def file_path(f: SharedFile, data: Path = DEFAULT_DATA) -> Path:
    return (KIT_DIR if f.kit else data) / f.path


def load_shared(f: SharedFile, data: Path = DEFAULT_DATA):  # type: ignore[no-untyped-def]
    from workloads.catalog import load_model

    model = load_model(f.model) if f.model else None
    return read_measured(f.format, file_path(f, data), model, f.tp)


def run(data: Path = DEFAULT_DATA) -> list[dict]:
    out = []
    for f in SHARED_FILES:
        res = validate_ops(load_shared(f, data), load_gpu(f.hardware))
        d = res.to_dict()
        d["file"] = f.path
        d["held_out"] = not f.fitted
        out.append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"shared data not found at {args.data}")
    for d in run(args.data):
        sys.stdout.write(json.dumps(d) + "\n")


if __name__ == "__main__":
    main()
