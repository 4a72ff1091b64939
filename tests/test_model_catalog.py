"""The model catalog (workloads/models/*.toml + workloads.catalog): lookups, HF config parsing,
published parameter counts, KV-cache and FLOP figures, errors, and the CLI listing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from workloads.catalog import list_models, load_model, model_from_hf_config
from workloads.errors import ConfigError
from workloads.model_spec import Activation, Norm, Position
from workloads.specfile import read_toml
from xpusim.cli import cli

MODELS = Path(__file__).resolve().parents[1] / "workloads" / "models"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured"
REQUIRED = {"llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.1-8b",
            "llama-3.1-70b", "llama-3.2-1b", "llama-3.2-3b", "codellama-34b", "qwen3-8b", "qwen3-32b",
            "mixtral-8x7b", "qwen3-30b-a3b", "opt-13b", "opt-66b", "bloom-176b", "gpt-3-175b"}
_IDENTITY = ("name", "hf_id", "aliases", "source")


def _shapes(spec: object) -> dict:
    """A spec's fields without the identity ones (name, id, aliases, source)."""
    return {k: v for k, v in dataclasses.asdict(spec).items() if k not in _IDENTITY}  # type: ignore[arg-type]


def test_catalog_lists_the_required_models() -> None:
    assert REQUIRED <= set(list_models())


@pytest.mark.parametrize("model_id", list_models())
def test_every_catalog_model_loads_under_its_names(model_id: str) -> None:
    spec = load_model(model_id)
    assert spec.source
    assert load_model(spec.name.upper().replace("-", "_")) == spec
    if spec.hf_id:
        assert load_model(spec.hf_id) == spec
    for alias in spec.aliases:
        assert load_model(alias) == spec


def test_lookups_are_case_and_underscore_insensitive() -> None:
    assert load_model("LLAMA_3.1_8B").name == "Llama-3.1-8B"
    assert load_model("meta-llama/Llama-3.1-8B").name == "Llama-3.1-8B"
    assert load_model("meta-llama/Meta-Llama-3-8B").name == "Llama-3-8B"
    assert load_model("Qwen/Qwen3-30B-A3B").name == "Qwen3-30B-A3B"


# ---- published parameter counts --------------------------------------------------------------
# (model, published total, tolerance (relative), source). Exact counts are model.parameters() totals
# as published on model hubs; rounded figures get the tolerance of their last digit.
PARAMS = [
    ("llama-2-7b", 6_738_415_616, 0, "keras-hub llama_presets.py 'params': 6738415616 (Llama-2-7B)"),
    ("llama-2-13b", 13_015_864_320, 0, "model.parameters() of meta-llama/Llama-2-13b-hf (13.0B)"),
    ("llama-2-70b", 68_976_648_192, 0, "together-python fine-tuning table: togethercomputer/llama-2-70b"),
    ("llama-3-8b", 8_030_261_248, 0, "HF Hub safetensors count of meta-llama/Meta-Llama-3-8B (8.03B)"),
    ("llama-3.1-8b", 8_030_261_248, 0, "HF Hub safetensors count of meta-llama/Llama-3.1-8B"),
    ("llama-3.1-70b", 70_553_706_496, 0, "HF Hub safetensors count of meta-llama/Llama-3.1-70B"),
    ("llama-3.2-1b", 1_235_814_400, 0, "HF Hub safetensors count of meta-llama/Llama-3.2-1B (card: 1.23B)"),
    ("llama-3.2-3b", 3_212_749_824, 0, "HF Hub safetensors count of meta-llama/Llama-3.2-3B (card: 3.21B)"),
    ("codellama-34b", 33.7e9, 0.0015, "HF Hub: codellama/CodeLlama-34b-hf 33.7B params"),
    ("mixtral-8x7b", 46.7e9, 0.0011, "Mistral AI, 'Mixtral of experts' (2023-12-11): 46.7B total"),
    ("qwen3-8b", 8.2e9, 0.0061, "Qwen3-8B model card: 8.2B parameters"),
    ("qwen3-32b", 32.8e9, 0.0015, "Qwen3-32B model card: 32.8B parameters"),
    ("qwen3-30b-a3b", 30.5e9, 0.0017, "Qwen3-30B-A3B model card: 30.5B in total"),
    ("opt-13b", 13e9, 0.04, "Zhang et al. 2022 (OPT), Table 1: 13B (rounded to 1B)"),
    ("opt-66b", 66e9, 0.008, "Zhang et al. 2022 (OPT), Table 1: 66B (rounded to 1B)"),
    ("bloom-176b", 176_247_271_424, 0, "bigscience/bloom model card: 176,247,271,424 parameters"),
    ("gpt-3-175b", 175.0e9, 0.005, "Brown et al. 2020, Table 2.1: 175.0B (derived 174.6B, -0.23 %)"),
]


@pytest.mark.parametrize("model_id,published,rel,source", PARAMS, ids=[p[0] for p in PARAMS])
def test_parameter_count_matches_published(model_id: str, published: float, rel: float, source: str) -> None:
    """Total parameters (embeddings, all layers and experts, final norm, untied LM head) against the
    figure in ``source``; rel = 0 means the published figure is an exact count."""
    assert load_model(model_id).param_count() == pytest.approx(published, rel=rel, abs=0)


ACTIVE = [
    ("mixtral-8x7b", 12.9e9, 0.004, "Mistral AI, 'Mixtral of experts': 12.9B parameters per token"),
    # Qwen's 3.3B is a truncation: derived 3.353B (+1.6 %); non-embedding active 2.73B + input and
    # output embeddings 0.62B. Tolerance 2 % and reported as a disagreement.
    ("qwen3-30b-a3b", 3.3e9, 0.02, "Qwen3-30B-A3B model card: 3.3B activated"),
]


@pytest.mark.parametrize("model_id,published,rel,source", ACTIVE, ids=[a[0] for a in ACTIVE])
def test_active_parameters_match_published(model_id: str, published: float, rel: float, source: str) -> None:
    """Parameters one token uses: top-k experts plus the router, attention, norms, embeddings."""
    assert load_model(model_id).param_count(active_only=True) == pytest.approx(published, rel=rel)


def test_non_embedding_counts_match_qwen_cards() -> None:
    """Qwen3 model cards give non-embedding counts: 8B 6.95B, 32B 31.2B, 30B-A3B 29.9B (input
    embedding and untied LM head removed, V = 151,936)."""
    for model_id, published in (("qwen3-8b", 6.95e9), ("qwen3-32b", 31.2e9), ("qwen3-30b-a3b", 29.9e9)):
        spec = load_model(model_id)
        non_embedding = spec.param_count() - 2 * spec.vocab_size * spec.hidden_size
        assert non_embedding == pytest.approx(published, rel=0.002), model_id


# ---- KV cache and FLOPs ------------------------------------------------------------------------
@pytest.mark.parametrize("model_id,expected", [
    ("llama-2-7b", 524_288),   # 2 (K,V) x 32 layers x 32 heads x 128 x 2 B = 0.5 MiB (MHA)
    ("llama-3-8b", 131_072),   # 2 x 32 x 8 KV heads x 128 x 2 B (GQA 4:1)
    ("llama-2-70b", 327_680),  # 2 x 80 x 8 x 128 x 2 B
    ("qwen3-30b-a3b", 98_304),  # 2 x 48 x 4 x 128 x 2 B
])
def test_kv_bytes_per_token_fp16(model_id: str, expected: int) -> None:
    """KV bytes per token = 2 x layers x kv_heads x head_dim x dtype bytes (hand derivation per row)."""
    assert load_model(model_id).kv_bytes_per_token(2) == expected


def test_kv_bytes_scale_with_dtype() -> None:
    spec = load_model("llama-3-8b")
    assert spec.kv_bytes_per_token(1) * 2 == spec.kv_bytes_per_token(2)


def test_flops_per_token_is_twice_the_matmul_weights() -> None:
    """Llama-2-7B forward, one token, no context: every weight except the embedding table and the
    norms is multiplied once (2 FLOP per multiply-accumulate):
    32 x (4 x 4096^2 + 3 x 4096 x 11008) + 32000 x 4096 (LM head) = 6,607,077,376 weights, i.e.
    total 6,738,415,616 - 131,072,000 (embedding) - 266,240 (norms); FLOPs = 13,214,154,752.
    Attention adds 2 x 2 x q_size per layer per context token: 4 x 32 x 4096 = 524,288 FLOP/token."""
    spec = load_model("llama-2-7b")
    assert spec.flops_per_token(0) == 2 * 6_607_077_376
    assert spec.flops_per_token(2048) - spec.flops_per_token(0) == 524_288 * 2048
    # Kaplan et al. (2020) C ~= 2N per token with N the non-embedding parameters: within 2 %.
    assert spec.flops_per_token(0) == pytest.approx(2 * (spec.param_count() - 131_072_000), rel=0.02)


def test_moe_flops_use_active_experts_only() -> None:
    """Mixtral: a token goes through 2 of 8 experts: 32 x (attention 41,943,040 + 2 x 176,160,768
    expert + router 32,768) + LM head 131,072,000 = 12,617,777,152 + ... matmul weights; the FLOPs are
    2 x that, about 2 x 12.7B and far below 2 x 46.7B."""
    spec = load_model("mixtral-8x7b")
    per_layer = 41_943_040 + 2 * 176_160_768 + 4096 * 8
    assert spec.flops_per_token(0) == 2 * (32 * per_layer + 32000 * 4096)


# ---- architecture specifics --------------------------------------------------------------------
def test_architecture_flags() -> None:
    llama = load_model("llama-3.2-1b")
    assert llama.tied_embeddings and llama.head_dim == 64 and llama.activation is Activation.SILU
    qwen = load_model("qwen3-8b")
    assert qwen.qk_norm and not qwen.tied_embeddings and qwen.head_dim == 128
    opt = load_model("opt-13b")
    assert (opt.norm, opt.position, opt.activation) == (Norm.LAYER, Position.LEARNED, Activation.RELU)
    assert not opt.gated_mlp and opt.mlp_bias and opt.position_offset == 2 and opt.tied_embeddings
    bloom = load_model("bloom-176b")
    assert bloom.position is Position.ALIBI and bloom.intermediate_size == 4 * 14336
    gpt3 = load_model("gpt-3-175b")
    assert gpt3.position is Position.LEARNED and gpt3.activation is Activation.GELU and gpt3.hf_id is None
    mixtral = load_model("mixtral-8x7b")
    assert (mixtral.num_experts, mixtral.experts_per_token, mixtral.moe_intermediate_size) == (8, 2, 14336)
    moe = load_model("qwen3-30b-a3b")
    assert (moe.num_experts, moe.experts_per_token, moe.moe_intermediate_size) == (128, 8, 768)


def test_gpt2_small_from_its_hf_config() -> None:
    """openai-community/gpt2 config.json; 124,439,808 parameters (HF Hub 124M; the exact count of
    GPT2LMHeadModel with tied embeddings)."""
    cfg = {"architectures": ["GPT2LMHeadModel"], "n_layer": 12, "n_embd": 768, "n_head": 12,
           "n_positions": 1024, "vocab_size": 50257, "activation_function": "gelu_new", "n_inner": None}
    assert model_from_hf_config(cfg, name="gpt2", file="gpt2.json").param_count() == 124_439_808


def test_opt_125m_from_its_hf_config() -> None:
    """facebook/opt-125m: 125,239,296 parameters (OPTForCausalLM, position table 2048 + 2 rows)."""
    cfg = {"architectures": ["OPTForCausalLM"], "hidden_size": 768, "num_hidden_layers": 12,
           "num_attention_heads": 12, "ffn_dim": 3072, "vocab_size": 50272, "max_position_embeddings": 2048,
           "word_embed_proj_dim": 768, "do_layer_norm_before": True, "activation_function": "relu"}
    assert model_from_hf_config(cfg, name="opt-125m", file="opt.json").param_count() == 125_239_296


def test_model_type_stands_in_for_architectures() -> None:
    cfg = dict(read_toml(MODELS / "llama-2-7b.toml")["config"])
    del cfg["architectures"]
    spec = model_from_hf_config(cfg, name="x", file="x.json")
    assert spec.architecture == "LlamaForCausalLM"
    assert spec.param_count() == 6_738_415_616


# ---- config.json files --------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", sorted(REQUIRED))
def test_hf_config_json_gives_the_catalog_spec(tmp_path: Path, model_id: str) -> None:
    """The [config] table written out as config.json loads (by file and by directory) to the same shapes."""
    cfg = read_toml(MODELS / f"{model_id}.toml")["config"]
    folder = tmp_path / model_id
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    expected = _shapes(load_model(model_id))
    assert _shapes(load_model(folder / "config.json")) == expected
    by_dir = load_model(str(folder))
    assert _shapes(by_dir) == expected and by_dir.name == model_id


def test_measured_run_config_gives_llama31_8b() -> None:
    """The vLLM RTX 4090 run's config.json is an LLMServingSim cluster config that names its model by
    HF id (nodes[0].instances[0].model_name = meta-llama/Llama-3.1-8B); it resolves to the catalog spec."""
    path = SHARED / "vllm_rtx4090_llama31_8b" / "config.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    assert load_model(path) == load_model("llama-3.1-8b")
    assert load_model(str(path.parent)) == load_model("llama-3.1-8b")


# ---- errors ---------------------------------------------------------------------------------------
def _hf(tmp_path: Path, edit: dict, drop: tuple[str, ...] = ()) -> Path:
    cfg = dict(read_toml(MODELS / "llama-3-8b.toml")["config"])
    cfg.update(edit)
    for key in drop:
        del cfg[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _expect(path: Path, field: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_model(path)
    assert info.value.file == str(path) and info.value.field == field
    assert str(path) in str(info.value) and field in str(info.value)
    return str(info.value)


def test_unknown_model_lists_known_names_and_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        load_model("llama-3.1-9b")
    msg = str(info.value)
    assert "Did you mean 'llama-3.1-8b'" in msg
    for model_id in list_models():
        assert model_id in msg


def test_unsupported_architecture_is_an_error(tmp_path: Path) -> None:
    msg = _expect(_hf(tmp_path, {"architectures": ["MambaForCausalLM"]}), "architectures")
    assert "MambaForCausalLM" in msg and "LlamaForCausalLM" in msg


def test_missing_architecture_is_an_error(tmp_path: Path) -> None:
    _expect(_hf(tmp_path, {}, drop=("architectures", "model_type")), "architectures")


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    _expect(_hf(tmp_path, {}, drop=("hidden_size",)), "hidden_size")
    _expect(_hf(tmp_path, {}, drop=("intermediate_size",)), "intermediate_size")


@pytest.mark.parametrize("key,value", [("num_hidden_layers", 0), ("vocab_size", -5), ("hidden_size", "4096"),
                                       ("num_key_value_heads", 5), ("tie_word_embeddings", "no"),
                                       ("hidden_act", "swiglu9")])
def test_bad_values_are_errors(tmp_path: Path, key: str, value: object) -> None:
    _expect(_hf(tmp_path, {key: value}), key)


def test_moe_missing_expert_count_is_an_error(tmp_path: Path) -> None:
    cfg = dict(read_toml(MODELS / "mixtral-8x7b.toml")["config"])
    del cfg["num_local_experts"]
    path = tmp_path / "mixtral.json"
    path.write_text(json.dumps(cfg))
    _expect(path, "num_local_experts")


def test_catalog_toml_errors_name_the_section(tmp_path: Path) -> None:
    text = (MODELS / "llama-2-7b.toml").read_text()
    path = tmp_path / "m.toml"
    path.write_text(text.replace('source = "', 'licence = "x"\nsource = "'))
    _expect(path, "model.licence")
    path.write_text(text.replace("num_hidden_layers = 32", "num_hidden_layers = 0"))
    _expect(path, "config.num_hidden_layers")
    path.write_text(text.split("[config]")[0])
    _expect(path, "[config]")


def test_missing_file_and_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_model(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(tmp_path)


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_models_table() -> None:
    result = CliRunner().invoke(cli, ["catalog", "models"])
    assert result.exit_code == 0, result.output
    for header in ("name", "hf id", "params (B)", "active params (B)", "layers", "hidden", "heads/kv heads",
                   "experts"):
        assert header in result.output
    for model_id in list_models():
        assert model_id in result.output
    assert "46.70" in result.output and "12.88" in result.output and "8 (top-2)" in result.output


def test_cli_models_json() -> None:
    result = CliRunner().invoke(cli, ["catalog", "models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.output)}
    assert sorted(rows) == list_models()
    assert rows["llama-2-7b"]["params"] == 6_738_415_616
    assert rows["llama-3-8b"]["kv_bytes_per_token_16bit"] == 131_072
    assert rows["mixtral-8x7b"]["num_experts"] == 8
