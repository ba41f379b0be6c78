"""`model_config.yaml` (NeMo 1.x, mcore GPT) -> ModelConfig.

Absent keys take NeMo's own defaults (megatron_gpt_model.py): bias True, position embeddings
learned_absolute, shared embeddings True, rotary_percentage 1.0, rotary_base 10000. Anything the
HF Nemotron/Llama math cannot express raises ConfigError instead of converting to a wrong model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...archs import arch_for_nemo, supported
from ...archs.base import LINEARS
from ...archs.config import ModelConfig, RopeScaling
from ...errors import ConfigError

# model_config.yaml flags that switch biases on -> the TensorRT-LLM linears they cover (the .nemo reader maps weights
# only: an arch with biases is not read from a .nemo, and a .nemo with biases is refused by the arch's check).
NEMO_BIAS_FLAGS = {"bias": LINEARS, "qkv_bias": ("attention.qkv",)}


@dataclass(frozen=True)
class NemoModel:
    """What model_config.yaml says, before the tokenizer and weights fill in vocab and dtype."""

    architecture: str
    fields: dict  # ModelConfig keyword arguments, minus vocab_size / bos / eos / torch_dtype
    gated: bool
    make_vocab_size_divisible_by: int
    tp: int
    pp: int
    tokenizer: dict


def _get(cfg: dict, key: str, default: Any = None) -> Any:
    v = cfg.get(key)
    return default if v is None else v


def parse_model_config(raw: Any, where: str) -> NemoModel:
    """Read a model_config.yaml dict (or a training config with a `model:` section)."""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "num_layers" not in raw:
        raw = raw["model"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} is not a YAML mapping")
    cfg = raw

    def need(key: str) -> Any:
        if cfg.get(key) is None:
            raise ConfigError(f"{where} lacks {key!r}")
        return cfg[key]

    def as_int(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}={v!r} in {where} is not an integer")
        return v

    def as_float(key: str, v: Any) -> float:
        try:  # a hand-written `1e-5` is a string under YAML 1.1
            f = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if not math.isfinite(f):
            raise ConfigError(f"{key}={v!r} in {where} is not a number")
        return f

    def flag(key: str, default: bool) -> bool:
        v = cfg.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(f"{key}={v!r} in {where} must be true or false")
        return v

    if not flag("mcore_gpt", True):
        raise ConfigError(f"mcore_gpt: false in {where}: legacy (non-Megatron-core) NeMo GPT checkpoints are not "
                          "supported; Minitron/Nemotron-4 .nemo files are mcore")
    hidden = as_int("hidden_size", need("hidden_size"))
    heads = as_int("num_attention_heads", need("num_attention_heads"))
    groups = as_int("num_query_groups", _get(cfg, "num_query_groups", heads))
    # Megatron's own default for kv_channels is hidden/heads; a stated value always wins.
    head_dim = as_int("kv_channels", _get(cfg, "kv_channels", hidden // heads))
    layers = as_int("num_layers", need("num_layers"))
    ffn = as_int("ffn_hidden_size", need("ffn_hidden_size"))

    act = str(_get(cfg, "activation", "gelu"))
    norm = str(_get(cfg, "normalization", "layernorm"))
    if norm == "layernorm" and flag("layernorm_zero_centered_gamma", False):
        norm = "layernorm1p"  # the same norm, spelled as mcore spells it
    arch = arch_for_nemo(act)
    if arch is None:
        raise ConfigError(f"unsupported activation {act!r} in {where}; supported: {', '.join(supported('nemo'))}")
    if norm != arch.nemo_normalization:
        raise ConfigError(f"activation={act!r} with normalization={norm!r} in {where} is not supported; "
                          f"{act} models must use {arch.nemo_normalization} ({arch.hf_architecture})")

    # NeMo's bias switches (default for 'bias' when absent: true), held to the biases the arch declares.
    arch.check_bias_flags({name: flag(name, default) for name, default in (("bias", True), ("qkv_bias", False))},
                          NEMO_BIAS_FLAGS, f"{where} (NeMo's default for 'bias' when absent is true)", "{flag}: {value}")
    pos = str(_get(cfg, "position_embedding_type", "learned_absolute"))
    if pos != "rope":
        raise ConfigError(f"position_embedding_type={pos!r} in {where} is not supported (NeMo default when absent "
                          "is learned_absolute); supported: rope")
    if flag("rotary_interleaved", False):
        raise ConfigError(f"rotary_interleaved: true in {where} is not supported (HF and TensorRT-LLM rotate halves)")

    scaling = None
    if cfg.get("seq_len_interpolation_factor") is not None:
        scaling = RopeScaling(rope_type="linear",
                              factor=as_float("seq_len_interpolation_factor", cfg["seq_len_interpolation_factor"]))
    if flag("scale_positional_embedding", False):
        if scaling is not None:
            raise ConfigError(f"{where} sets both seq_len_interpolation_factor and scale_positional_embedding")
        # NeMo's apply_rope_scaling defaults (Llama-3.1); read overrides when the yaml has them.
        scaling = RopeScaling(
            rope_type="llama3",
            factor=as_float("scale_factor", _get(cfg, "scale_factor", 8.0)),
            low_freq_factor=as_float("low_freq_factor", _get(cfg, "low_freq_factor", 1.0)),
            high_freq_factor=as_float("high_freq_factor", _get(cfg, "high_freq_factor", 4.0)),
            original_max_position_embeddings=as_int("old_context_len", _get(cfg, "old_context_len", 8192)),
        )

    seq = _get(cfg, "encoder_seq_length", 512)
    fields = dict(
        architecture=arch.hf_architecture,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=head_dim,
        hidden_act=arch.hidden_acts[0],
        norm_eps=as_float("layernorm_epsilon", _get(cfg, "layernorm_epsilon", 1e-5)),
        max_position_embeddings=as_int("max_position_embeddings", _get(cfg, "max_position_embeddings", seq)),
        rope_theta=as_float("rotary_base", _get(cfg, "rotary_base", 10000.0)),
        partial_rotary_factor=as_float("rotary_percentage", _get(cfg, "rotary_percentage", 1.0)),
        rope_scaling=scaling,
        tie_word_embeddings=flag("share_embeddings_and_output_weights", True),
    )
    if heads % groups:
        raise ConfigError(f"num_attention_heads={heads} is not a multiple of num_query_groups={groups} in {where}")
    tok = cfg.get("tokenizer") if isinstance(cfg.get("tokenizer"), dict) else {}
    return NemoModel(
        architecture=arch.hf_architecture, fields=fields, gated=arch.gated,
        make_vocab_size_divisible_by=as_int("make_vocab_size_divisible_by",
                                            _get(cfg, "make_vocab_size_divisible_by", 128)),
        tp=as_int("tensor_model_parallel_size", _get(cfg, "tensor_model_parallel_size", 1)),
        pp=as_int("pipeline_model_parallel_size", _get(cfg, "pipeline_model_parallel_size", 1)),
        tokenizer=tok,
    )


def build_config(m: NemoModel, vocab_size: int, torch_dtype: str | None, bos: int | None, eos: int | None,
                 where: str) -> ModelConfig:
    cfg = ModelConfig(**m.fields, vocab_size=vocab_size, torch_dtype=torch_dtype, bos_token_id=bos,
                      eos_token_id=eos)
    cfg.validate(where)
    return cfg
