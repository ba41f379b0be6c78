"""PretrainedConfig / PretrainedModel with the signatures of tensorrt_llm/models/modeling_utils.py @01ea6d79."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from typing import Optional, Union

from .._calls import record
from ..mapping import Mapping


@dataclass
class QuantConfig:
    quant_algo: Optional[str] = None
    kv_cache_quant_algo: Optional[str] = None
    group_size: int = 128
    smoothquant_val: float = 0.5
    clamp_val: Optional[list] = None
    use_meta_recipe: bool = False
    has_zero_point: bool = False
    pre_quant_scale: bool = False
    exclude_modules: Optional[list] = None

    @classmethod
    def from_dict(cls, config: dict):
        return cls(**config)

    def to_dict(self):
        return asdict(self)


POSITION_EMBEDDING_TYPES = ("learned_absolute", "rope_gptj", "rope_gpt_neox", "long_rope", "alibi",
                            "alibi_with_scale", "relative", "chatglm", "yarn", "mrope", "deferred")


class PretrainedConfig:
    def __init__(self, *, architecture: str, dtype: str, hidden_size: int, num_hidden_layers: int,
                 num_attention_heads: int, vocab_size: Optional[int] = None, hidden_act: str = "gelu",
                 logits_dtype: str = "float32", norm_epsilon: float = 1e-5,
                 position_embedding_type: str = "learned_absolute", max_position_embeddings: Optional[int] = None,
                 rotary_embedding_dim: Optional[int] = None, num_key_value_heads: Optional[int] = None,
                 intermediate_size: Optional[int] = None, mapping: Optional[Union[Mapping, dict]] = None,
                 quantization: Optional[Union[QuantConfig, dict]] = None, use_parallel_embedding: bool = False,
                 embedding_sharding_dim: int = 0, head_size: Optional[int] = None, qk_layernorm: bool = False,
                 runtime_defaults=None, **kwargs):
        if position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise KeyError(position_embedding_type)  # PositionEmbeddingType.from_string
        self.architecture, self.dtype, self.vocab_size = architecture, dtype, vocab_size
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.hidden_act = num_attention_heads, hidden_act
        self.logits_dtype, self.norm_epsilon = logits_dtype, norm_epsilon
        self.position_embedding_type = position_embedding_type
        self.max_position_embeddings = max_position_embeddings
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.mapping = Mapping.from_dict(mapping) if isinstance(mapping, dict) else (mapping or Mapping())
        self.quantization = (QuantConfig.from_dict(quantization) if isinstance(quantization, dict)
                             else (quantization or QuantConfig()))
        self.use_parallel_embedding, self.embedding_sharding_dim = use_parallel_embedding, embedding_sharding_dim
        self.head_size = head_size or hidden_size // num_attention_heads
        self.qk_layernorm, self.runtime_defaults = qk_layernorm, runtime_defaults
        self.rotary_embedding_dim = rotary_embedding_dim or kwargs.get(
            "rotary_dim", int(self.head_size * kwargs.get("rotary_pct", 1.0)))
        for key, value in kwargs.items():  # the real class sets unknown keys as attributes, with a warning
            setattr(self, key, value)

    @classmethod
    def from_dict(cls, config: dict):
        from . import MODEL_MAP

        return getattr(MODEL_MAP[config["architecture"]], "config_class", cls)(**config)

    @classmethod
    def from_json_file(cls, config_file: str):
        record("PretrainedConfig.from_json_file", config_file=config_file)
        with open(config_file) as f:
            return cls.from_dict(json.load(f))

    def set_rank(self, rank: int):
        record("PretrainedConfig.set_rank", rank=rank)
        self.mapping.rank = rank

    def to_dict(self):
        out = copy.deepcopy(self.__dict__)
        out["mapping"] = self.mapping.to_dict()
        out["mapping"].pop("rank")
        out["quantization"] = self.quantization.to_dict()
        return out


class PretrainedModel:
    def __init__(self, config: PretrainedConfig):
        self.config = config
        self.weight_names: list[str] = []

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, rank: Optional[int] = None, config: Optional[PretrainedConfig] = None,
                        *, preprocess_weights_hook=None):
        from safetensors import safe_open

        if config is None:
            config = PretrainedConfig.from_json_file(os.path.join(ckpt_dir, "config.json"))
        if rank is not None:
            config.set_rank(rank)
        weights_path = os.path.join(ckpt_dir, f"rank{config.mapping.rank}.safetensors")
        assert os.path.isfile(weights_path)
        record(f"{cls.__name__}.from_checkpoint", ckpt_dir=ckpt_dir, rank=config.mapping.rank)
        model = cls(config)
        with safe_open(weights_path, "pt") as f:
            model.weight_names = sorted(f.keys())
        return model
