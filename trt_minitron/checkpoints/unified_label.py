"""What a ModelOpt unified Hugging Face checkpoint says it is: hf_quant_config.json and config.json's
quantization_config read together, without torch (serve and the LLM API backend read it too).

Written from ModelOpt 0.47 (modelopt/torch/export/unified_export_hf.py `_write_hf_export_config`,
convert_hf_config.py `convert_hf_quant_config_format`): hf_quant_config.json {"quantization": {quant_algo,
kv_cache_quant_algo, group_size, has_zero_point, exclude_modules}}, and config.json quantization_config {quant_method
"modelopt", quant_algo, ignore, kv_cache_scheme {"type": "float", "num_bits": 8} for FP8}. TensorRT-LLM's PyTorch
backend reads hf_quant_config.json first (tensorrt_llm/_torch/model_config.py ModelConfig.from_pretrained,
load_modelopt_quant_config), vLLM either (vllm/model_executor/layers/quantization/modelopt.py
ModelOptQuantConfigBase.from_config); both match exclude_modules / ignore with fnmatch against module names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import ConfigError

HF_QUANT_CONFIG = "hf_quant_config.json"
# kv_cache_scheme of config.json -> kv_cache_quant_algo (convert_hf_config.py writes FP8 as this dict).
KV_SCHEMES = {("float", 8): "FP8"}
_FILE_NAMES = {HF_QUANT_CONFIG: HF_QUANT_CONFIG, "config.json": "config.json quantization_config"}


@dataclass(frozen=True)
class Label:
    """What a unified checkpoint says it is: one reading of hf_quant_config.json and config.json together."""

    quant_algo: str | None
    kv_cache_quant_algo: str | None
    group_size: int | None
    exclude_modules: tuple[str, ...]
    has_zero_point: bool
    files: tuple[str, ...]  # which files state it: HF_QUANT_CONFIG, "config.json"

    def describe(self) -> str:
        kv = f" + {self.kv_cache_quant_algo} KV cache" if self.kv_cache_quant_algo else ""
        group = f" (group {self.group_size})" if self.group_size else ""
        return f"{self.quant_algo}{group}{kv}"

    def source(self) -> str:
        """Where it was read, for messages: "hf_quant_config.json and config.json quantization_config"."""
        return " and ".join(_FILE_NAMES[f] for f in self.files)

    def excludes(self, module: str) -> bool:
        return any(module == p or fnmatchcase(module, p) for p in self.exclude_modules)


def _algo(value, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string or null, found {value!r}")


def _kv_scheme(scheme, where: str) -> str | None:
    """quantization_config.kv_cache_scheme as ModelOpt writes it: the FP8 dict, or the algorithm's name."""
    if scheme is None or isinstance(scheme, str):
        return scheme
    if isinstance(scheme, dict) and (scheme.get("type"), scheme.get("num_bits")) in KV_SCHEMES:
        return KV_SCHEMES[(scheme.get("type"), scheme.get("num_bits"))]
    raise ConfigError(f"{where}: kv_cache_scheme {scheme!r} is not one ModelOpt writes (FP8: num_bits 8, type float)")


def read_label(folder: Path, config: dict) -> tuple[Label | None, list[str]]:
    """The checkpoint's label (None when neither file states a ModelOpt quantization) and what is wrong with it: the
    two files disagreeing, a quantization_config beside hf_quant_config.json that is not ModelOpt's. Those are
    failures of the checkpoint (consumers would read one or the other); unreadable files are a ConfigError."""
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
            raise ConfigError(f"{path} has no \"quantization\" object; is it ModelOpt's {HF_QUANT_CONFIG}?")
        stated[HF_QUANT_CONFIG] = {"quant_algo": _algo(q.get("quant_algo"), f"{path} quant_algo"),
                                   "kv_cache_quant_algo": _algo(q.get("kv_cache_quant_algo"), f"{path} kv_cache_quant_algo"),
                                   "group_size": q.get("group_size"), "exclude_modules": q.get("exclude_modules") or [],
                                   "has_zero_point": bool(q.get("has_zero_point"))}
    inline = config.get("quantization_config")
    if inline is not None:
        where = f"{folder / 'config.json'} quantization_config"
        if not isinstance(inline, dict):
            raise ConfigError(f"{where} must be an object")
        if str(inline.get("quant_method", "")).lower() == "modelopt":
            kv = _kv_scheme(inline.get("kv_cache_scheme"), where) if "kv_cache_scheme" in inline else \
                _algo(inline.get("kv_cache_quant_algo"), f"{where}.kv_cache_quant_algo")
            stated["config.json"] = {"quant_algo": _algo(inline.get("quant_algo"), f"{where}.quant_algo"),
                                     "kv_cache_quant_algo": kv, "group_size": inline.get("group_size"),
                                     "exclude_modules": inline.get("ignore") or [],
                                     "has_zero_point": bool(inline.get("has_zero_point"))}
        elif stated:
            problems.append(f"config.json quantization_config has quant_method {inline.get('quant_method')!r}, not "
                            "'modelopt': vLLM and TensorRT-LLM would not read it as ModelOpt's")
    if not stated:
        return None, problems
    merged = {}
    for field in next(iter(stated.values())):
        # config.json's quantization_config leaves group_size out (convert_hf_config.py): absent is not a disagreement.
        values = {f: s[field] for f, s in stated.items() if field != "group_size" or s[field] is not None}
        if len({json.dumps(sorted(v) if field == "exclude_modules" else v) for v in values.values()}) > 1:
            problems.append(f"{field} disagrees: " + ", ".join(f"{v!r} in {f}" for f, v in values.items()))
        merged[field] = next(iter(values.values()), None)
    group = merged["group_size"]
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group <= 0):
        raise ConfigError(f"{folder}: group_size {group!r} must be a positive integer")
    return Label(merged["quant_algo"], merged["kv_cache_quant_algo"], group, tuple(merged["exclude_modules"]),
                 merged["has_zero_point"], tuple(stated)), problems
