"""quantize(model, quant_config) as tensorrt_llm/quantization/quantize.py (index file id 235018984) does it for the
algorithms modelled here: every ColumnLinear / RowLinear whose name matches no exclude_modules pattern (fnmatchcase;
the default list when the config gives none) becomes the algorithm's quantized layer (fp8_quantize,
smooth_quantize_ootb, weight_only_groupwise_quantize with group_size, pre_quant_scale and use_w4a8_awq from the
config), then kv_cache_quantize adds kv_cache_scaling_factor and kv_cache_rcp_scaling_factor, (1,) float32, to every
Attention for an FP8 or INT8 KV cache. Other algorithms are not modelled and raise."""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..models._layers import Attention, ColumnLinear, RowLinear
from .layers import FP8Linear, Int8SmoothQuantLinear, WeightOnlyGroupwiseQuantLinear
from .mode import MODELED, QuantAlgo

DEFAULT_EXCLUDE = ["*lm_head", "*router", "*vocab_embedding", "*position_embedding", "*block_embedding",
                   "*shared_expert_gate", "*fused_a"]


def _quant_layer(algo: str, linear, cfg):
    row = isinstance(linear, RowLinear)
    args = (linear.in_features, linear.out_features)
    if algo == QuantAlgo.FP8:
        return FP8Linear(*args, bias=linear.bias, tp_size=linear.tp_size, row=row)
    if algo == QuantAlgo.W8A8_SQ_PER_CHANNEL:
        return Int8SmoothQuantLinear(*args, bias=linear.bias, tp_size=linear.tp_size, row=row)
    return WeightOnlyGroupwiseQuantLinear(*args, group_size=cfg.group_size, pre_quant_scale=cfg.pre_quant_scale,
                                          bias=linear.bias, tp_size=linear.tp_size,
                                          use_w4a8_awq=algo == QuantAlgo.W4A8_AWQ, row=row)


def quantize(model, quant_config):
    algo = quant_config.quant_algo
    if algo is not None:
        if algo not in MODELED:
            raise NotImplementedError(f"fake quantize: quant_algo {algo} is not modelled")
        exclude = quant_config.exclude_modules or DEFAULT_EXCLUDE
        for name, module, parent in list(model.named_modules_with_parent()):
            if isinstance(module, (ColumnLinear, RowLinear)) and not any(fnmatchcase(name, p) for p in exclude):
                parent.replace_child(name.rsplit(".", 1)[-1], _quant_layer(algo, module, quant_config))
    if quant_config.kv_cache_quant_algo is not None:
        for _, module, _ in model.named_modules_with_parent():
            if isinstance(module, Attention):
                module.param("kv_cache_scaling_factor", (1,), "float32")
                module.param("kv_cache_rcp_scaling_factor", (1,), "float32")
    return model
