"""ModelOpt's unified Hugging Face checkpoint (`quantize --format hf`): its labels and per-linear tensors, mapped onto
quant_formats.py's one dequantization rule per format.

Written from ModelOpt 0.47 (modelopt/torch/export/unified_export_hf.py `_export_quantized_weight`,
quant_utils.py `postprocess_state_dict`, `process_layer_quant_config`, convert_hf_config.py):
  labels   hf_quant_config.json {"quantization": {quant_algo, kv_cache_quant_algo, group_size, has_zero_point,
           exclude_modules}}, and config.json quantization_config {quant_method "modelopt", quant_algo, ignore,
           kv_cache_scheme {"type": "float", "num_bits": 8}}. TensorRT-LLM's PyTorch backend reads hf_quant_config.json
           first (tensorrt_llm/_torch/model_config.py ModelConfig.from_pretrained, load_modelopt_quant_config), vLLM
           either (vllm/model_executor/layers/quantization/modelopt.py ModelOptQuantConfigBase.from_config); both match
           exclude_modules / ignore with fnmatch against module names.
  tensors  per quantized linear m: m.weight (INT4 packed two output rows per uint8), m.weight_scale, m.weight_scale_2,
           m.input_scale (per-tensor scales squeezed to 0-d), m.pre_quant_scale (absent where the export folded it into
           the norm that feeds m, AWQ only: quant_utils.fuse_prequant_layernorm); per attention
           self_attn.k_proj.k_scale and self_attn.v_proj.v_scale (FP8 KV cache: amax / 448 each, not clamped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import torch

from ..errors import ConfigError
from ..tensors.info import TensorInfo
from .quant_formats import ASF, PQS, WEIGHT, WSF, WSF2, QuantFormat, format_for_algo

HF_QUANT_CONFIG = "hf_quant_config.json"
# The unified checkpoint's name for each quant_formats.py tensor of a linear.
NAMES = {WEIGHT: "weight", WSF: "weight_scale", WSF2: "weight_scale_2", ASF: "input_scale", PQS: "pre_quant_scale"}
K_SCALE, V_SCALE = "k_proj.k_scale", "v_proj.v_scale"  # under model.layers.{i}.self_attn.
KV_ALGOS = ("FP8",)
# kv_cache_scheme of config.json -> kv_cache_quant_algo (convert_hf_config.py writes FP8 as this dict).
KV_SCHEMES = {("float", 8): "FP8"}


@dataclass(frozen=True)
class Label:
    """What a unified checkpoint says it is: one reading of hf_quant_config.json and config.json together."""

    quant_algo: str | None
    kv_cache_quant_algo: str | None
    group_size: int | None
    exclude_modules: tuple[str, ...]
    has_zero_point: bool
    files: tuple[str, ...]  # which files state it

    def describe(self) -> str:
        kv = f" + {self.kv_cache_quant_algo} KV cache" if self.kv_cache_quant_algo else ""
        group = f" (group {self.group_size})" if self.group_size else ""
        return f"{self.quant_algo}{group}{kv}"

    def excludes(self, module: str) -> bool:
        return any(module == p or fnmatchcase(module, p) for p in self.exclude_modules)


def read_label(folder: Path, config: dict) -> tuple[Label, list[str]]:
    """The checkpoint's label and what is wrong with it: the two files disagreeing, a quantization_config that is not
    ModelOpt's. Those are failures of the checkpoint (consumers would read one or the other), not bad input."""
    problems: list[str] = []
    stated: dict[str, dict] = {}
    path = folder / HF_QUANT_CONFIG
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        q = doc.get("quantization") if isinstance(doc, dict) else None
        if not isinstance(q, dict):
            raise ConfigError(f"{path}: expected {{\"quantization\": {{...}}}}")
        stated[HF_QUANT_CONFIG] = {"quant_algo": q.get("quant_algo"), "kv_cache_quant_algo": q.get("kv_cache_quant_algo"),
                                   "group_size": q.get("group_size"), "exclude_modules": q.get("exclude_modules") or [],
                                   "has_zero_point": bool(q.get("has_zero_point"))}
    inline = config.get("quantization_config")
    if inline is not None:
        if not isinstance(inline, dict):
            raise ConfigError(f"{folder}/config.json: quantization_config must be an object")
        if str(inline.get("quant_method", "")).lower() != "modelopt":
            problems.append(f"config.json quantization_config has quant_method {inline.get('quant_method')!r}, not "
                            "'modelopt': vLLM and TensorRT-LLM would not read it as ModelOpt's")
        scheme = inline.get("kv_cache_scheme")
        kv = KV_SCHEMES.get((scheme.get("type"), scheme.get("num_bits"))) if isinstance(scheme, dict) else scheme
        stated["config.json"] = {"quant_algo": inline.get("quant_algo"), "kv_cache_quant_algo": kv,
                                 "group_size": inline.get("group_size"), "exclude_modules": inline.get("ignore") or [],
                                 "has_zero_point": bool(inline.get("has_zero_point"))}
    if not stated:
        raise ConfigError(f"{folder} has neither {HF_QUANT_CONFIG} nor a quantization_config in config.json")
    merged = {}
    for field in next(iter(stated.values())):
        # config.json's quantization_config leaves group_size out (convert_hf_config.py): absent is not a disagreement.
        values = {f: s[field] for f, s in stated.items() if field != "group_size" or s[field] is not None}
        if len({json.dumps(sorted(v) if field == "exclude_modules" else v) for v in values.values()}) > 1:
            problems.append(f"{field} disagrees: " + ", ".join(f"{v!r} in {f}" for f, v in values.items()))
        merged[field] = next(iter(values.values()), None)
    algo, kv, group = merged["quant_algo"], merged["kv_cache_quant_algo"], merged["group_size"]
    if kv is not None and kv not in KV_ALGOS:
        raise ConfigError(f"{folder}: kv_cache_quant_algo {kv!r} is not one verify can judge ({', '.join(KV_ALGOS)})")
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group <= 0):
        raise ConfigError(f"{folder}: group_size {group!r} must be a positive integer")
    return Label(algo, kv, group, tuple(merged["exclude_modules"]), merged["has_zero_point"], tuple(stated)), problems


def label_format(label: Label, where: str) -> tuple[QuantFormat | None, list[str]]:
    """The format the label names (None for a KV-cache-only label) and what about it cannot be right."""
    problems = []
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
