"""PluginConfig with the fields, defaults and value choices of tensorrt_llm/plugin/plugin.py @c20322ff.

The real class is a pydantic model (keyword-only construction, "enable"/"disable" strings mapped to
True / False-or-None). Unknown fields are an error here; the real model ignores them.
"""

from __future__ import annotations

from .._calls import record

_DTYPE = ("auto", "float16", "float32", "bfloat16", "int32", None)  # DefaultPluginDtype
_GEMM = ("auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4", None)
_FP8 = ("fp8", None)

# name -> (default, allowed values; bool means "a bool")
FIELDS: dict[str, tuple[object, object]] = {
    "dtype": ("float16", str),
    "bert_attention_plugin": ("auto", _DTYPE),
    "gpt_attention_plugin": ("auto", _DTYPE),
    "gemm_plugin": (None, _GEMM),
    "gemm_swiglu_plugin": (None, _FP8),
    "fp8_rowwise_gemm_plugin": (None, _DTYPE),
    "qserve_gemm_plugin": (None, _DTYPE),
    "identity_plugin": (None, _DTYPE),
    "nccl_plugin": ("auto", _DTYPE),
    "lora_plugin": (None, _DTYPE),
    "dora_plugin": (False, bool),
    "weight_only_groupwise_quant_matmul_plugin": (None, _DTYPE),
    "weight_only_quant_matmul_plugin": (None, _DTYPE),
    "smooth_quant_plugins": (True, bool),
    "smooth_quant_gemm_plugin": (None, _DTYPE),
    "layernorm_quantization_plugin": (None, _DTYPE),
    "rmsnorm_quantization_plugin": (None, _DTYPE),
    "quantize_per_token_plugin": (False, bool),
    "quantize_tensor_plugin": (False, bool),
    "moe_plugin": ("auto", _DTYPE),
    "mamba_conv1d_plugin": ("auto", _DTYPE),
    "low_latency_gemm_plugin": (None, _FP8),
    "low_latency_gemm_swiglu_plugin": (None, _FP8),
    "gemm_allreduce_plugin": (None, ("float16", "bfloat16", None)),
    "context_fmha": (True, bool),
    "bert_context_fmha_fp32_acc": (False, bool),
    "paged_kv_cache": (None, (True, False, None)),  # Optional[bool]
    "remove_input_padding": (True, bool),
    "norm_quant_fusion": (False, bool),
    "reduce_fusion": (False, bool),
    "user_buffer": (False, bool),
    "tokens_per_block": (32, int),
    "use_paged_context_fmha": (True, bool),
    "use_fp8_context_fmha": (True, bool),
    "fuse_fp4_quant": (False, bool),
    "multiple_profiles": (False, bool),
    "paged_state": (True, bool),
    "streamingllm": (False, bool),
    "manage_weights": (False, bool),
    "use_fused_mlp": (True, bool),
    "pp_reduce_scatter": (False, bool),
}


def _check(name: str, value):
    if name not in FIELDS:
        raise TypeError(f"PluginConfig has no field {name!r}")
    allowed = FIELDS[name][1]
    if value == "enable":
        value = True
    elif value == "disable":
        value = False if allowed is bool else None
    if allowed is bool or allowed is int or allowed is str:
        if not isinstance(value, allowed) or (allowed is int and isinstance(value, bool)):
            raise ValueError(f"PluginConfig.{name} must be {allowed.__name__}, got {value!r}")
    elif value not in allowed or isinstance(value, bool) and True not in allowed:
        raise ValueError(f"PluginConfig.{name}={value!r}; allowed: {allowed}")
    return value


class PluginConfig:
    def __init__(self, **data):
        for name, (default, _) in FIELDS.items():
            object.__setattr__(self, name, default)
        for name, value in data.items():
            object.__setattr__(self, name, _check(name, value))
        record("PluginConfig", **data)

    def __setattr__(self, name, value):  # validate_assignment=True
        object.__setattr__(self, name, _check(name, value))

    def model_dump(self, mode: str = "python") -> dict:
        return {name: getattr(self, name) for name in FIELDS}

    def model_copy(self, update: dict | None = None, deep: bool = False) -> PluginConfig:
        return PluginConfig(**{**self.model_dump(), **(update or {})})
