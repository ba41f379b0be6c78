"""ModelOpt's unified Hugging Face checkpoint (`quantize --format hf`): the format its label names (the label itself:
unified_label.py) and its per-linear tensors, mapped onto quant_formats.py's one dequantization rule per format.

Written from ModelOpt 0.47 (modelopt/torch/export/unified_export_hf.py `_export_quantized_weight`,
quant_utils.py `postprocess_state_dict`, `process_layer_quant_config`):
  tensors  per quantized linear m: m.weight (INT4 packed two output rows per uint8), m.weight_scale, m.weight_scale_2,
           m.input_scale (per-tensor scales squeezed to 0-d), m.pre_quant_scale (absent where the export folded it into
           the norm that feeds m, AWQ only: quant_utils.fuse_prequant_layernorm); per attention
           self_attn.k_proj.k_scale and self_attn.v_proj.v_scale (FP8 KV cache: amax / 448 each, not clamped).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..tensors.info import TensorInfo
from .quant_formats import ASF, PQS, WEIGHT, WSF, WSF2, QuantFormat, format_for_algo
from .unified_label import Label

# The unified checkpoint's name for each quant_formats.py tensor of a linear.
NAMES = {WEIGHT: "weight", WSF: "weight_scale", WSF2: "weight_scale_2", ASF: "input_scale", PQS: "pre_quant_scale"}
K_SCALE, V_SCALE = "k_proj.k_scale", "v_proj.v_scale"  # under model.layers.{i}.self_attn.
KV_ALGOS = ("FP8",)  # the KV-cache formats verify can judge


def label_format(label: Label, where: str) -> tuple[QuantFormat | None, list[str]]:
    """The format the label names (None for a KV-cache-only label) and what about it cannot be right; a format verify
    cannot judge is a ConfigError."""
    problems = []
    kv = label.kv_cache_quant_algo
    if kv is not None and kv not in KV_ALGOS:
        raise ConfigError(f"{where}: kv_cache_quant_algo {kv!r} is not one verify can judge ({', '.join(KV_ALGOS)})")
    if label.quant_algo is None:
        return None, problems
    fmt = format_for_algo(label.quant_algo, where)  # an algo quant_formats.py cannot dequantize: exit 2, not a verdict
    if label.has_zero_point:
        problems.append(f"has_zero_point is true, but {label.quant_algo} as ModelOpt exports it has no zero points")
    if fmt.group_sizes:
        if label.group_size is None:
            problems.append(f"{label.quant_algo} needs a group_size, and neither label states one")
        elif label.group_size not in fmt.group_sizes:
            problems.append(f"group_size {label.group_size} is not one {label.quant_algo} takes "
                            f"({', '.join(map(str, fmt.group_sizes))})")
        else:
            fmt = type(fmt)(label.group_size)
    return fmt, problems


def linear_tensors(fmt: QuantFormat, out_features: int, in_features: int, dtype: torch.dtype) -> dict[str, TensorInfo]:
    """Unified tensor suffix -> shape/dtype of a quantized linear: quant_formats.py's tensors under their unified names,
    per-tensor scales 0-d and packed INT4 codes uint8, as ModelOpt's unified exporter stores them."""
    out = {}
    for suffix, info in fmt.linear_tensors(out_features, in_features, dtype).items():
        shape, dt = info.shape, info.dtype
        if shape == (1,):
            shape = ()
        if suffix == WEIGHT and fmt.weight_bits == 4 and dt == torch.int8:
            dt = torch.uint8
        out[NAMES[suffix]] = TensorInfo(shape, dt)
    return out


def to_format(fmt: QuantFormat, tensors: dict[str, torch.Tensor], dtype: torch.dtype,
              where: str) -> dict[str, torch.Tensor]:
    """A quantized linear's unified tensors (by unified suffix) as quant_formats.py's tensors (by its suffixes), for
    `fmt.check` and `fmt.dequantize`; tensors the checkpoint lacks stay absent."""
    weight = tensors.get("weight")
    container = fmt.linear_tensors(32, max(32, fmt.group_size or 0), dtype)[WEIGHT].dtype
    if weight is not None and weight.dtype == torch.uint8 and container == torch.int8:
        weight = weight.view(torch.int8)  # packed INT4 codes: quant_formats.py keeps them in int8 containers
    out_f, in_f = fmt._dims({WEIGHT: weight} if weight is not None else {}, where)
    out = {}
    for suffix, info in fmt.linear_tensors(out_f, in_f, dtype).items():
        t = weight if suffix == WEIGHT else tensors.get(NAMES[suffix])
        if t is not None:
            out[suffix] = t.reshape(info.shape) if t.numel() == 1 and info.shape in ((), (1,)) else t
    return out
