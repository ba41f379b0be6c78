"""PretrainedConfig, DecoderLayerList and PretrainedModel as in tensorrt_llm/models/modeling_utils.py.

Source: NVIDIA/TensorRT-LLM tensorrt_llm/models/modeling_utils.py, index file id 1189552800 (a 1.x version with
cp-rank remapping and preprocess_weights; the index gives no commit for it), and @01ea6d79 for the
PretrainedConfig signature. What the real code does and the fake copies:
  - from_checkpoint(ckpt_dir, rank=None, config=None, *, preprocess_weights_hook=None) reads
    rank{mapping.rank}.safetensors (asserting it exists), builds cls(config) and calls load(weights);
  - load(): every not-yet-initialised parameter of the module tree must be in the file, else
    RuntimeError("Required but not provided tensors:{...}"); lm_head.weight may be absent when a
    vocab_embedding.weight is present (embedding sharing); then `param.value = weights[name]` per
    parameter, where a wrong shape raises, re-raised as RuntimeError("Encounter error '...' for parameter '...'");
  - DecoderLayerList builds one layer per global index in mapping.pp_layers(num_hidden_layers), held in a
    ModuleList, so a pipeline rank's tensors are named transformer.layers.{local index}.
  - the model class's __post_init__ (metaclass PostInitCaller) calls quantization.quantize(self, config.quantization),
    which swaps in the quantized linear layers and the KV-cache scales (quantization/ here);
  - preprocess_weights(weights, config) runs between reading and loading: separate K and V cache scales become
    kv_cache_scaling_factor = max(k, v), kv_cache_rcp_scaling_factor is added; for W4A16_AWQ / W4A8_AWQ the int8
    (out/2, in) weight is transposed, re-laid out for the mixed GEMM and viewed as the model dtype (in, out/4),
    weights_scaling_factor transposed to (in/group, out) in the model dtype, prequant_scaling_factor reshaped to
    (1, in); W4A8 folds weights_scaling_factor_2 and activation_scaling_factor into a new alpha (1,) float32 and
    puts activation_scaling_factor back; FP8 views int8 weights as fp8 and drops lm_head scales of an unquantized
    lm_head. Here only names, shapes and dtypes are transformed, the same way.
Deliberately stricter than the real code: names in the file that the model does not have are an error
(the real load() only logs "Provided but not required tensors"), unless preprocess_weights itself produced them
(W4A8 puts activation_scaling_factor back on column linears too, which only RowLinear declares: the real load
warns; recorded here as a "load.warning" call); and every tensor must already be in the dtype the parameter
declares (the checkpoint dtype unless a quantized layer says otherwise; the real Parameter setter's dtype handling
was not read). Only safetensors headers are read (shapes and dtypes), never tensor data.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from typing import Optional, Union

from .._calls import record
from ..mapping import Mapping
from ._layers import Module, ModuleList


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
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I8": "int8", "U8": "uint8",
                      "F8_E4M3": "fp8"}


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


class DecoderLayerList(ModuleList):
    def __init__(self, cls, config: PretrainedConfig):
        self.layer_list = config.mapping.pp_layers(config.num_hidden_layers)
        super().__init__([cls(config, idx) for idx in self.layer_list])


def check_no_moe(config: PretrainedConfig) -> None:
    moe = getattr(config, "moe", None)
    experts = moe.get("num_experts", 0) if isinstance(moe, dict) else getattr(moe, "num_experts", 0)
    if experts:
        raise NotImplementedError("fake models: MoE layers are not modelled")


class PostInitCaller(type):
    def __call__(cls, *args, **kwargs):
        obj = type.__call__(cls, *args, **kwargs)
        obj.__post_init__()
        return obj


class PretrainedModel(Module, metaclass=PostInitCaller):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.config = config

    def __post_init__(self):
        from ..quantization.quantize import quantize

        quantize(self, self.config.quantization)

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter a checkpoint must provide for this rank."""
        return dict(self.named_parameters())

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, rank: Optional[int] = None, config: Optional[PretrainedConfig] = None,
                        *, preprocess_weights_hook=None):
        from safetensors import safe_open

        if config is None:
            config = PretrainedConfig.from_json_file(os.path.join(ckpt_dir, "config.json"))
        if rank is not None:
            config.set_rank(rank)
        rank = config.mapping.rank
        weights_path = os.path.join(ckpt_dir, f"rank{rank}.safetensors")
        assert os.path.isfile(weights_path)
        record(f"{cls.__name__}.from_checkpoint", ckpt_dir=ckpt_dir, rank=rank)
        with safe_open(weights_path, "pt") as f:
            headers = {}
            for name in f.keys():
                sl = f.get_slice(name)
                headers[name] = (tuple(sl.get_shape()), SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype()))
        headers, produced = preprocess_weights(headers, config)
        model = cls(config)
        model.load(headers, produced)
        return model

    def load(self, weights: dict[str, tuple[tuple[int, ...], str]], produced: frozenset = frozenset()) -> None:
        """Check `weights` (name -> (shape, dtype)) against the module tree, as the real load() does."""
        expected = self.expected_tensors()
        dtypes = dict(self.named_parameter_dtypes())
        sharing = any(k.endswith("vocab_embedding.weight") for k in weights)
        required = {n for n in expected if not (n.endswith("lm_head.weight") and n not in weights and sharing)}
        missing = required - set(weights)
        if missing:
            raise RuntimeError(f"Required but not provided tensors:{missing}")
        extra = set(weights) - required
        if extra - produced:
            raise RuntimeError(f"fake load (stricter than the real warning): Provided but not required tensors: "
                               f"{extra - produced}")
        if extra:
            record("load.warning", provided_but_not_required=sorted(extra))
        for name, shape in expected.items():
            if name not in weights:
                continue
            got_shape, got_dtype = weights[name]
            if got_shape != shape:
                raise RuntimeError(f"Encounter error 'The value updated is not the same shape as the original. "
                                   f"Updated: {got_shape}, original: {shape}' for parameter '{name}'")
            want = dtypes[name] or self.config.dtype
            if got_dtype != want:
                raise RuntimeError(f"fake load (stricter): parameter '{name}' is {got_dtype}, expected {want}")


def preprocess_weights(weights: dict, config: PretrainedConfig) -> tuple[dict, frozenset]:
    """modeling_utils.preprocess_weights on (shape, dtype) headers; also returns the names it wrote."""
    w, produced = dict(weights), set()
    for name in [n for n in w if n.endswith(".k_cache_scaling_factor")]:
        v_name, kv_name = (name.replace("k_cache_scaling_factor", s) for s in ("v_cache_scaling_factor",
                                                                             "kv_cache_scaling_factor"))
        if v_name not in w:
            raise AssertionError(f"{v_name} not found")
        w[kv_name] = w.pop(name)
        del w[v_name]
        produced.add(kv_name)
    for name in [n for n in w if n.endswith(".kv_cache_scaling_factor")]:
        rcp = name.replace("kv_cache_scaling_factor", "kv_cache_rcp_scaling_factor")
        if rcp not in w:
            w[rcp] = w[name]
            produced.add(rcp)
    algo, dtype = config.quantization.quant_algo, config.dtype
    if algo in ("W4A16_AWQ", "W4A8_AWQ"):
        for name, (shape, dt) in list(w.items()):
            if name.endswith("weight") and dt == "int8":
                w[name] = ((shape[1], shape[0] // 2), dtype)  # (in, out/2) bytes viewed as 16-bit words
            if name.endswith("weights_scaling_factor"):
                w[name] = ((shape[1], shape[0]), dtype)
            if name.endswith("prequant_scaling_factor"):
                w[name] = ((1, shape[-1]), dt)
        if algo == "W4A8_AWQ":
            for name in [n for n in w if n.endswith("weights_scaling_factor")]:
                asf = w.pop(name.replace("weights_scaling_factor", "activation_scaling_factor"))
                w.pop(name.replace("weights_scaling_factor", "weights_scaling_factor_2"))
                w[name.replace("weights_scaling_factor", "alpha")] = ((1,), "float32")
                w[name.replace("weights_scaling_factor", "activation_scaling_factor")] = asf
                produced.update({name.replace("weights_scaling_factor", s) for s in ("alpha",
                                                                                   "activation_scaling_factor")})
    elif algo == "FP8":
        for name, (shape, dt) in list(w.items()):
            if name.endswith("weight") and dt == "int8":
                w[name] = (shape, "fp8")
        if "lm_head.weight" in w and w["lm_head.weight"][1] != "fp8":
            w.pop("lm_head.weights_scaling_factor", None)
            w.pop("lm_head.activation_scaling_factor", None)
    return w, frozenset(produced)
