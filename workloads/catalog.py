"""The model catalog: a ``ModelSpec`` by catalog name, HuggingFace id, or HuggingFace ``config.json``.

The built-in catalog is one TOML file per model in ``workloads/models/``::

    [model]
    name = "Llama-3.1-8B"                # display name; its normalised form must be the file stem
    hf_id = "meta-llama/Llama-3.1-8B"
    aliases = ["llama3.1-8b"]            # more names it answers to
    source = "https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json"
    [config]                             # the HuggingFace config.json keys, verbatim
    architectures = ["LlamaForCausalLM"]
    hidden_size = 4096
    ...

so one parser, :func:`model_from_hf_config`, serves catalog files and downloaded ``config.json`` files
alike. Names are matched case-, space- and underscore-insensitively. The ``[model]`` table is strict
(an unknown key is an error); the ``[config]`` table, like a real ``config.json``, may carry keys that
do not change the shapes (token ids, dropout, init ranges) and those are ignored. The keys that do
change shapes are read and checked, and a value the model cannot represent is an error naming it.
"""

from __future__ import annotations

import builtins
import functools
import logging
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.errors import ConfigError
from workloads.model_spec import Activation, ModelSpec, Norm, Position
from workloads.specfile import (
    closest,
    get_number,
    get_str,
    normalise_name,
    read_json,
    read_toml,
    reject_unknown,
)

log = logging.getLogger(__name__)

_MODEL_KEYS = {"name", "hf_id", "aliases", "source"}
_MISSING = object()

# model_type (config.json) -> the architecture class it implies, for configs without "architectures".
_MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "opt": "OPTForCausalLM",
    "bloom": "BloomForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}

_ACTIVATIONS = {
    "silu": Activation.SILU,
    "swish": Activation.SILU,
    "gelu": Activation.GELU,
    "gelu_new": Activation.GELU,
    "gelu_fast": Activation.GELU,
    "gelu_pytorch_tanh": Activation.GELU,
    "relu": Activation.RELU,
}


# ---- reading one config ----------------------------------------------------------------------
class _Config:
    """A HuggingFace config dict plus where it came from, with typed, error-naming getters."""

    def __init__(self, cfg: Mapping[str, Any], *, file: str, section: str) -> None:
        self.cfg, self.file, self.section = cfg, file, section

    def where(self, key: str) -> str:
        return f"{self.section}.{key}" if self.section else key

    def int(self, *keys: str, default: Any = _MISSING) -> Any:
        """The first of ``keys`` present (HF names one value differently per family), as an int > 0."""
        for key in keys:
            if key in self.cfg and self.cfg[key] is not None:
                return get_number(self.cfg, key, file=self.file, section=self.section, integer=True)
        if default is _MISSING:
            raise ConfigError("missing required key", file=self.file, field=self.where(keys[0]))
        return default

    def bool(self, key: str, default: bool) -> bool:
        value = self.cfg.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", file=self.file,
                              field=self.where(key), value=value)
        return value

    def activation(self, key: str, default: str) -> Activation:
        name = self.cfg.get(key) or default
        name = get_str({key: name}, key, file=self.file, section=self.section)
        if name not in _ACTIVATIONS:
            raise ConfigError(f"unsupported activation {name!r}; known: {', '.join(sorted(_ACTIVATIONS))}",
                              file=self.file, field=self.where(key), value=name)
        return _ACTIVATIONS[name]

    def require(self, ok: builtins.bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(message, file=self.file, field=self.where(key), value=self.cfg.get(key))


def _architecture(c: _Config) -> str:
    archs = c.cfg.get("architectures")
    if archs is not None:
        if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
            raise ConfigError(f"must be a non-empty list of class names, got {archs!r}", file=c.file,
                              field=c.where("architectures"), value=archs)
        return archs[0]
    model_type = c.cfg.get("model_type")
    if isinstance(model_type, str) and model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    if model_type is not None:
        raise ConfigError(f"unsupported model_type {model_type!r}; supported: {', '.join(_MODEL_TYPES)}",
                          file=c.file, field=c.where("model_type"), value=model_type)
    raise ConfigError("missing required key (or 'model_type')", file=c.file, field=c.where("architectures"))


_Parser = Callable[[_Config], dict[str, Any]]
_PARSERS: dict[str, _Parser] = {}


def _parser(*architectures: str) -> Callable[[_Parser], _Parser]:
    def register(fn: _Parser) -> _Parser:
        for arch in architectures:
            if arch in _PARSERS:
                raise ValueError(f"duplicate parser for architecture {arch!r}")
            _PARSERS[arch] = fn
        return fn
    return register


def _heads(c: _Config, hidden: int, heads: int) -> int:
    c.require(hidden % heads == 0, "num_attention_heads",
              f"hidden size {hidden} is not a multiple of the head count {heads}")
    return hidden // heads


@_parser("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen3ForCausalLM",
         "Qwen3MoeForCausalLM")
def _llama_family(c: _Config) -> dict[str, Any]:
    """Pre-norm RMSNorm, RoPE, gated SiLU MLP, GQA; Qwen3 adds per-head q/k RMSNorm; MoE variants."""
    arch = _architecture(c)
    hidden = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    kv_heads = c.int("num_key_value_heads", default=heads)
    c.require(heads % kv_heads == 0, "num_key_value_heads",
              f"{heads} attention heads are not a multiple of {kv_heads} KV heads")
    head_dim = c.int("head_dim", default=0) or _heads(c, hidden, heads)
    attn_bias = c.bool("attention_bias", False)
    fields: dict[str, Any] = {
        "num_layers": c.int("num_hidden_layers"), "hidden_size": hidden, "num_heads": heads,
        "num_kv_heads": kv_heads, "head_dim": head_dim, "intermediate_size": c.int("intermediate_size"),
        "vocab_size": c.int("vocab_size"), "max_position_embeddings": c.int("max_position_embeddings"),
        "gated_mlp": True, "norm": Norm.RMS, "position": Position.ROPE,
        "activation": c.activation("hidden_act", "silu"),
        "tied_embeddings": c.bool("tie_word_embeddings", False),
        "qkv_bias": attn_bias, "out_bias": attn_bias, "mlp_bias": c.bool("mlp_bias", False),
        "qk_norm": arch.startswith("Qwen3"),
    }
    if arch == "MixtralForCausalLM":
        fields.update(num_experts=c.int("num_local_experts"), experts_per_token=c.int("num_experts_per_tok"),
                      moe_intermediate_size=fields["intermediate_size"])
    elif arch == "Qwen3MoeForCausalLM":
        c.require(c.int("decoder_sparse_step", default=1) == 1, "decoder_sparse_step",
                  "only every-layer MoE (decoder_sparse_step = 1) is supported")
        c.require(not c.cfg.get("mlp_only_layers"), "mlp_only_layers",
                  "dense layers inside a MoE model are not supported")
        fields.update(num_experts=c.int("num_experts"), experts_per_token=c.int("num_experts_per_tok"),
                      moe_intermediate_size=c.int("moe_intermediate_size"))
    if fields.get("num_experts"):
        c.require(fields["experts_per_token"] <= fields["num_experts"], "num_experts_per_tok",
                  f"top-k {fields['experts_per_token']} exceeds {fields['num_experts']} experts")
    if c.cfg.get("sliding_window") and c.bool("use_sliding_window", True):
        log.info("%s: sliding_window=%s ignored; the KV cache is modelled as full attention",
                 c.file, c.cfg["sliding_window"])
    return fields


@_parser("OPTForCausalLM")
def _opt(c: _Config) -> dict[str, Any]:
    """OPT: learned positions with 2 reserved rows, pre-LayerNorm, ReLU MLP of width ffn_dim, biases."""
    hidden = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    c.require(c.int("word_embed_proj_dim", default=hidden) == hidden, "word_embed_proj_dim",
              f"an embedding projection (word_embed_proj_dim != hidden_size {hidden}) is not supported")
    c.require(c.bool("do_layer_norm_before", True), "do_layer_norm_before",
              "post-LayerNorm OPT (opt-350m) is not supported")
    bias = c.bool("enable_bias", True)
    return {
        "num_layers": c.int("num_hidden_layers"), "hidden_size": hidden, "num_heads": heads,
        "num_kv_heads": heads, "head_dim": _heads(c, hidden, heads), "intermediate_size": c.int("ffn_dim"),
        "vocab_size": c.int("vocab_size"),
        "max_position_embeddings": c.int("max_position_embeddings"), "position_offset": 2,
        "gated_mlp": False, "norm": Norm.LAYER, "position": Position.LEARNED,
        "activation": c.activation("activation_function", "relu"),
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "qkv_bias": bias, "out_bias": bias, "mlp_bias": bias,
    }


@_parser("BloomForCausalLM")
def _bloom(c: _Config) -> dict[str, Any]:
    """BLOOM: ALiBi (no position table), LayerNorm incl. one after the embedding, 4h GELU MLP, biases."""
    hidden = c.int("hidden_size", "n_embed")
    heads = c.int("n_head", "num_attention_heads")
    return {
        "num_layers": c.int("n_layer", "num_hidden_layers"), "hidden_size": hidden, "num_heads": heads,
        "num_kv_heads": heads, "head_dim": _heads(c, hidden, heads), "intermediate_size": 4 * hidden,
        "vocab_size": c.int("vocab_size"), "max_position_embeddings": c.int("seq_length", default=2048),
        "gated_mlp": False, "norm": Norm.LAYER, "position": Position.ALIBI, "activation": Activation.GELU,
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "qkv_bias": True, "out_bias": True, "mlp_bias": True,
    }


@_parser("GPT2LMHeadModel")
def _gpt2(c: _Config) -> dict[str, Any]:
    """GPT-2 / GPT-3 style: learned positions, pre-LayerNorm, non-gated GELU MLP (n_inner or 4h), biases."""
    hidden = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    return {
        "num_layers": c.int("n_layer", "num_hidden_layers"), "hidden_size": hidden, "num_heads": heads,
        "num_kv_heads": heads, "head_dim": _heads(c, hidden, heads),
        "intermediate_size": c.int("n_inner", default=4 * hidden), "vocab_size": c.int("vocab_size"),
        "max_position_embeddings": c.int("n_positions", "max_position_embeddings"),
        "gated_mlp": False, "norm": Norm.LAYER, "position": Position.LEARNED,
        "activation": c.activation("activation_function", "gelu_new"),
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "qkv_bias": True, "out_bias": True, "mlp_bias": True,
    }


def model_from_hf_config(cfg: dict, *, name: str, file: str, section: str = "",
                         hf_id: str | None = None, aliases: tuple[str, ...] = (),
                         source: str = "") -> ModelSpec:
    """Build a ModelSpec from a HuggingFace ``config.json`` dict.

    ``file`` (and ``section``, e.g. ``"config"`` for a catalog TOML) name where the dict came from in
    every error. Unsupported architectures and missing keys raise ``ConfigError``.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"must be a JSON object / TOML table, got {type(cfg).__name__}", file=file,
                          field=section or None)
    c = _Config(cfg, file=file, section=section)
    arch = _architecture(c)
    if arch not in _PARSERS:
        raise ConfigError(f"unsupported architecture {arch!r}; supported: {', '.join(sorted(_PARSERS))}",
                          file=file, field=c.where("architectures"), value=arch)
    fields = _PARSERS[arch](c)
    if hf_id is None:
        path_name = cfg.get("_name_or_path")
        hf_id = path_name if isinstance(path_name, str) and path_name else None
    return ModelSpec(name=name, architecture=arch, hf_id=hf_id, aliases=tuple(aliases),
                     source=source or file, **fields)


# ---- the catalog -------------------------------------------------------------------------------
def _models_dir() -> Path:
    return Path(str(resources.files("workloads") / "models"))


def list_models() -> list[str]:
    """Catalog ids of the built-in models (file stems, e.g. ``llama-3.1-8b``), sorted."""
    return sorted(p.stem for p in _models_dir().glob("*.toml"))


def _load_catalog_file(path: Path) -> ModelSpec:
    file = str(path)
    data = read_toml(path)
    reject_unknown(data, {"model", "config"}, file=file)
    for section in ("model", "config"):
        if not isinstance(data.get(section), dict):
            raise ConfigError("missing required table", file=file, field=f"[{section}]")
    m = data["model"]
    reject_unknown(m, _MODEL_KEYS, file=file, section="model")
    name = get_str(m, "name", file=file, section="model")
    hf_id = get_str(m, "hf_id", file=file, section="model", default=None)
    source = get_str(m, "source", file=file, section="model")
    aliases = m.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"must be a list of strings, got {aliases!r}", file=file, field="model.aliases",
                          value=aliases)
    return model_from_hf_config(data["config"], name=name, file=file, section="config", hf_id=hf_id,
                                aliases=tuple(aliases), source=source)


def _lookup_keys(spec: ModelSpec, stem: str) -> set[str]:
    keys = {stem, normalise_name(spec.name), *(normalise_name(a) for a in spec.aliases)}
    if spec.hf_id:
        keys.add(normalise_name(spec.hf_id))
        keys.add(normalise_name(spec.hf_id.rsplit("/", 1)[-1]))
    return keys


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """Every name a built-in model answers to (normalised) -> its catalog id. A clash is an error."""
    index: dict[str, str] = {}
    for stem in list_models():
        path = _models_dir() / f"{stem}.toml"
        spec = _load_catalog_file(path)
        if normalise_name(spec.name) != stem:
            raise ConfigError(f"name {spec.name!r} does not match the file name {stem!r}", file=str(path),
                              field="model.name", value=spec.name)
        for key in _lookup_keys(spec, stem):
            other = index.setdefault(key, stem)
            if other != stem:
                raise ConfigError(f"name {key!r} is already taken by catalog model '{other}'",
                                  file=str(path), field="model.aliases", value=key)
    return index


def _from_cluster_config(cfg: dict, file: str) -> ModelSpec | None:
    """An LLMServingSim cluster config (``nodes[].instances[].model_name``) names its model by HF id."""
    nodes = cfg.get("nodes")
    if not isinstance(nodes, list) or "architectures" in cfg or "model_type" in cfg:
        return None
    names = {inst.get("model_name") for node in nodes if isinstance(node, dict)
             for inst in node.get("instances", []) if isinstance(inst, dict)}
    names.discard(None)
    if len(names) != 1:
        raise ConfigError(f"a cluster config must name exactly one model, found {sorted(map(str, names))}",
                          file=file, field="nodes.instances.model_name")
    (model_name,) = names
    log.info("%s is a cluster config; loading its model %r from the catalog", file, model_name)
    return load_model(str(model_name))


def _load_path(path: Path) -> ModelSpec:
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConfigError("directory has no config.json", file=str(path))
        path = path / "config.json"
    if path.suffix == ".toml":
        return _load_catalog_file(path)
    cfg = read_json(path)
    if isinstance(cfg, dict):
        spec = _from_cluster_config(cfg, str(path))
        if spec is not None:
            return spec
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return model_from_hf_config(cfg, name=name, file=str(path))


def load_model(name_or_path: str | Path) -> ModelSpec:
    """A ModelSpec by catalog name (``llama-3.1-8b``), HF id (``meta-llama/Llama-3.1-8B``), path to a
    HuggingFace ``config.json`` (or a directory holding one), or path to a catalog-format TOML."""
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or path.suffix in (".json", ".toml") or path.exists():
        return _load_path(path)
    key = normalise_name(text)
    stem = _index().get(key)
    if stem is None:
        known = list_models()
        hint = closest(key, list(_index()))
        msg = f"unknown model {text!r}; known: {', '.join(known)}"
        if hint:
            msg += f". Did you mean '{_index()[hint]}'?"
        raise ConfigError(msg, field="model", value=text)
    return _load_catalog_file(_models_dir() / f"{stem}.toml")
