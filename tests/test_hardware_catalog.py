"""The hardware catalog (hwmodels/specs/*.toml): every file loads, figures match their datasheets,
bad files fail with an error naming the file and the key, and the CLI lists them."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwmodels.gpu import GIB, MIB, Architecture, list_gpus, load_gpu
from workloads.errors import ConfigError
from workloads.ops import DType
from xpusim.cli import cli

SPECS = Path(__file__).resolve().parents[1] / "hwmodels" / "specs"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured"
REQUIRED = {"a100-sxm-80gb", "h100-sxm-80gb", "h200-sxm-141gb", "b200-sxm-180gb", "rtx-4090", "rtx-a6000",
            "l40s"}


def test_catalog_lists_the_required_devices() -> None:
    assert REQUIRED <= set(list_gpus())


@pytest.mark.parametrize("gpu_id", list_gpus())
def test_every_catalog_file_loads(gpu_id: str) -> None:
    gpu = load_gpu(gpu_id)
    assert gpu.id == gpu_id
    assert gpu.source_file.endswith(f"{gpu_id}.toml")
    assert gpu.bf16_flops > gpu.fp32_flops > 0
    assert gpu.memory_bandwidth > gpu.pcie_bandwidth > 0


@pytest.mark.parametrize("gpu_id", list_gpus())
def test_every_figure_names_its_source(gpu_id: str) -> None:
    """Each `key = value` line carries a comment (the source tag or the reason), and the header names
    the sources."""
    text = (SPECS / f"{gpu_id}.toml").read_text()
    assert re.search(r"^# Sources?:", text, re.MULTILINE), "header must list the sources"
    for line in text.splitlines():
        if re.match(r"^\s*[a-z0-9_]+\s*=\s*-?[0-9]", line):
            assert "#" in line, f"{gpu_id}: no source comment on {line!r}"


# (id, bf16 TF, fp8 TF or None, memory GiB, GB/s, L2 MiB, SMs, NVLink GB/s/dir, PCIe GB/s/dir, TDP W)
DATASHEET = [
    # NVIDIA A100 datasheet + A100 whitepaper: 312 TF dense, 2039 GB/s, 40 MB L2, 108 SMs,
    # NVLink 600 GB/s and PCIe Gen4 64 GB/s bidirectional, 400 W.
    ("a100-sxm-80gb", 312.0, None, 80, 2039, 40, 108, 300, 32, 400),
    # H100 whitepaper (SXM5): 989.4 TF bf16, 1978.9 TF fp8 dense, 50 MB L2, 132 SMs; datasheet
    # 3.35 TB/s, NVLink 900 GB/s and PCIe Gen5 128 GB/s bidirectional, 700 W.
    ("h100-sxm-80gb", 989.4, 1978.9, 80, 3350, 50, 132, 450, 64, 700),
    # H200 datasheet: 141 GB at 4.8 TB/s, 1979/3958 TF with sparsity (halved), NVLink 900, 700 W;
    # L2 60 MiB as CUDA reports it on our H200 (validation/measured/h200/provenance.json: l2_bytes).
    ("h200-sxm-141gb", 989.4, 1978.9, 141, 4800, 60, 132, 450, 64, 700),
    # HGX/DGX B200 datasheets per GPU: 2.25 PF bf16 / 4.5 PF fp8 dense, 180 GB, 8 TB/s, NVLink 1.8 TB/s,
    # 1000 W; 148 SMs and 126 MB L2 from Chips and Cheese's B200 article.
    ("b200-sxm-180gb", 2250, 4500, 180, 8000, 126, 148, 900, 64, 1000),
    # Ada whitepaper, RTX 4090: 165.2 TF bf16 with FP32 accumulate, 330.3 fp8 (FP32 acc.), 24 GB,
    # 1008 GB/s, 72 MB L2, 128 SMs, 450 W, no NVLink, PCIe Gen4.
    ("rtx-4090", 165.2, 330.3, 24, 1008, 72, 128, 0, 32, 450),
    # GA102 whitepaper / RTX A6000 datasheet: 154.8 TF, 48 GB, 768 GB/s, 6 MB L2, 84 SMs,
    # NVLink bridge 112.5 GB/s bidirectional, 300 W.
    ("rtx-a6000", 154.8, None, 48, 768, 6, 84, 56.25, 32, 300),
    # L40S datasheet: 362.05 TF bf16, 733 TF fp8 dense, 48 GB, 864 GB/s, 568 tensor cores = 142 SMs,
    # no NVLink, PCIe Gen4 64 GB/s bidirectional, 350 W; AD102 96 MB L2 (Ada whitepaper).
    ("l40s", 362.05, 733, 48, 864, 96, 142, 0, 32, 350),
]


@pytest.mark.parametrize("gpu_id,bf16,fp8,mem,bw,l2,sms,nvlink,pcie,tdp", DATASHEET)
def test_catalog_matches_datasheets(gpu_id: str, bf16: float, fp8: float | None, mem: float, bw: float,
                                    l2: float, sms: int, nvlink: float, pcie: float, tdp: float) -> None:
    """Figures as published (sources per row above), converted to SI once at load: TFLOP/s x 1e12,
    GiB x 2^30, GB/s x 1e9, MiB x 2^20."""
    g = load_gpu(gpu_id)
    assert g.bf16_flops == pytest.approx(bf16 * 1e12)
    assert g.peak_flops(DType.BF16) == g.bf16_flops
    assert (g.fp8_flops is None) == (fp8 is None)
    if fp8 is not None:
        assert g.fp8_flops == pytest.approx(fp8 * 1e12)
    assert g.memory_bytes == mem * GIB
    assert g.memory_bandwidth == pytest.approx(bw * 1e9)
    assert g.l2_cache_bytes == l2 * MIB
    assert g.sm_count == sms
    assert g.nvlink_bandwidth == pytest.approx(nvlink * 1e9)
    assert g.pcie_bandwidth == pytest.approx(pcie * 1e9)
    assert g.tdp_w == tdp


def test_fp8_falls_back_to_fp16_where_absent() -> None:
    a100 = load_gpu("a100-sxm-80gb")
    assert a100.peak_flops(DType.FP8) == a100.fp16_flops


def test_interconnect_is_pcie_without_nvlink() -> None:
    assert load_gpu("rtx-4090").interconnect_bandwidth == pytest.approx(32e9)
    assert load_gpu("h100-sxm-80gb").interconnect_bandwidth == pytest.approx(450e9)


def test_rtx4090_bf16_peak_is_consistent_with_a_measured_gemm() -> None:
    """The catalog uses 165.2 TF (Ada whitepaper, BF16 with FP32 accumulate, dense), not the 82.6 TF
    sometimes quoted. Measured: Llama-3.1-8B gate_up GEMM, 2048 tokens x 4096 x 28672 (2 x 14336),
    bf16 on an RTX 4090 (lss_rtx4090/tp1_dense.csv, LLMServingSim profiler, vLLM 0.19): FLOP =
    2 x 2048 x 4096 x 28672 = 4.81e11 in ~2.9 ms = ~166 TFLOP/s > 82.6. A GEMM may reach the peak
    (boost clocks above the 2520 MHz rating) but not exceed it by more than ~10 %."""
    path = SHARED / "lss_rtx4090" / "tp1_dense.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["layer"] == "gate_up_proj" and r["tokens"] == "2048"]
    assert rows
    achieved = 2 * 2048 * 4096 * 28672 / (float(rows[0]["time_us"]) * 1e-6)
    peak = load_gpu("rtx-4090").bf16_flops
    assert 82.6e12 < achieved < 1.1 * peak


def test_rtx4090_memory_is_near_what_cuda_reports() -> None:
    """memory_gib is the datasheet "24 GB" read as GiB; CUDA reported 25,250,627,584 B on the RTX 4090
    of the vLLM run (meta.json hardware.device_total_memory_bytes): within 3 % below it."""
    path = SHARED / "vllm_rtx4090_llama31_8b" / "meta.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    reported = json.loads(path.read_text())["hardware"]["device_total_memory_bytes"]
    catalog = load_gpu("rtx-4090").memory_bytes
    assert 0.97 * catalog < reported <= catalog


# ---- bad files --------------------------------------------------------------------------------
def _write_variant(tmp_path: Path, edit: Callable[[str], str]) -> Path:
    text = (SPECS / "h100-sxm-80gb.toml").read_text()
    path = tmp_path / "bad-gpu.toml"
    path.write_text(edit(text))
    return path


def _set(key: str, value: str | None) -> Callable[[str], str]:
    """An edit that sets ``key = value`` in a spec text (or deletes the line when value is None)."""
    def edit(text: str) -> str:
        line = "" if value is None else f"{key} = {value}"
        return re.sub(rf"^{key} = .*$", line, text, flags=re.MULTILINE)
    return edit


def _expect_error(path: Path, field: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_gpu(path)
    err = info.value
    assert err.file == str(path)
    assert err.field == field
    assert str(path) in str(err) and field in str(err)
    return err


def test_load_by_path(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda t: t.replace('name = "NVIDIA H100 SXM5 80GB"', 'name = "My H100"'))
    gpu = load_gpu(path)
    assert gpu.name == "My H100" and gpu.id == "bad-gpu"
    assert load_gpu(str(path)).bf16_flops == pytest.approx(989.4e12)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda t: t.replace("sm_count = 132", "sm_count = 132\nsm_cuont = 1"))
    err = _expect_error(path, "gpu.sm_cuont")
    assert "sm_count" in str(err)  # the closest known key is suggested


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, _set("memory_bandwidth_gb_per_s", None))
    _expect_error(path, "gpu.memory_bandwidth_gb_per_s")


def test_missing_links_table_is_an_error(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda t: t.split("[links]")[0])
    _expect_error(path, "[links]")


@pytest.mark.parametrize("value", ["0", "-989.4"])
def test_zero_or_negative_value_is_an_error(tmp_path: Path, value: str) -> None:
    path = _write_variant(tmp_path, _set("bf16_dense_tflops", value))
    err = _expect_error(path, "gpu.bf16_dense_tflops")
    assert err.value == float(value)


def test_negative_link_is_an_error_but_zero_nvlink_is_none(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, _set("nvlink_gb_per_s", "0"))
    assert load_gpu(path).nvlink_bandwidth == 0
    path = _write_variant(tmp_path, _set("nvlink_gb_per_s", "-1"))
    _expect_error(path, "links.nvlink_gb_per_s")


def test_wrong_architecture_is_an_error(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda t: t.replace('architecture = "hopper"', 'architecture = "volta"'))
    err = _expect_error(path, "gpu.architecture")
    assert "volta" in str(err)
    for arch in Architecture:
        assert arch.value in str(err)


def test_non_number_is_an_error(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda t: t.replace("tdp_w = 700", 'tdp_w = "700"'))
    _expect_error(path, "gpu.tdp_w")


def test_unknown_name_lists_known_names_and_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        load_gpu("h100-sxm")
    msg = str(info.value)
    assert "Did you mean 'h100-sxm-80gb'" in msg
    for gpu_id in list_gpus():
        assert gpu_id in msg


def test_names_are_case_and_underscore_insensitive() -> None:
    assert load_gpu("H100_SXM_80GB").id == "h100-sxm-80gb"


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_hardware_table() -> None:
    result = CliRunner().invoke(cli, ["catalog", "hardware"])
    assert result.exit_code == 0, result.output
    for header in ("hardware id", "arch", "bf16 TF", "memory GiB", "HBM GB/s", "NVLink GB/s"):
        assert header in result.output
    for gpu_id in list_gpus():
        assert gpu_id in result.output
    assert "989.4" in result.output


def test_cli_hardware_json() -> None:
    result = CliRunner().invoke(cli, ["catalog", "hardware", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["id"] for r in rows] == list_gpus()
    h100 = next(r for r in rows if r["id"] == "h100-sxm-80gb")
    assert h100["bf16_dense_tflops"] == pytest.approx(989.4)
    assert h100["memory_gib"] == 80 and h100["nvlink_gb_per_s"] == pytest.approx(450)


# CUDA C++ Programming Guide, Technical Specifications per Compute Capability: shared memory per SM
# (KiB) for compute capability 8.0 (A100), 8.6 (GA102: RTX A6000), 8.9 (AD102: RTX 4090, L40S),
# 9.0 (H100, H200), 10.0 (B200).
SMEM_KIB = {"a100-sxm-80gb": 164, "rtx-a6000": 100, "rtx-4090": 100, "l40s": 100, "h100-sxm-80gb": 228,
            "h200-sxm-141gb": 228, "b200-sxm-180gb": 228}


@pytest.mark.parametrize("gpu_id", sorted(SMEM_KIB))
def test_shared_memory_per_sm_from_compute_capability(gpu_id: str) -> None:
    assert load_gpu(gpu_id).smem_per_sm_bytes == SMEM_KIB[gpu_id] * 1024


def test_shared_memory_per_sm_is_optional(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, _set("smem_per_sm_kib", None))
    assert load_gpu(path).smem_per_sm_bytes is None
    path = _write_variant(tmp_path, _set("smem_per_sm_kib", "0"))
    _expect_error(path, "gpu.smem_per_sm_kib")
