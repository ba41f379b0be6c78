"""Model hyper-parameters, read from Hugging Face config.json in its transformers 4.x and 5.x forms.

Field names follow transformers. Values the checkpoint states are never re-derived
(head_dim in particular: Minitron-8B and Llama-3.1-Minitron-4B have head_dim != hidden/heads).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tensors.stheader import DuplicateKey, unique_keys
from . import find_arch, get_arch, supported


@dataclass(frozen=True, kw_only=True)
class RopeScaling:
    rope_type: str  # "llama3" or "linear"
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def to_trt(self) -> dict:
        # Old builders read rotary_scaling["type"], new ones "rope_type": write both.
        d: dict[str, Any] = {"type": self.rope_type, "rope_type": self.rope_type, "factor": self.factor}
        if self.rope_type == "llama3":
            d.update(
                low_freq_factor=self.low_freq_factor,
                high_freq_factor=self.high_freq_factor,
                original_max_position_embeddings=self.original_max_position_embeddings,
            )
        return d


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_act: str
    norm_eps: float
    max_position_embeddings: int
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 1.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    torch_dtype: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def is_gated(self) -> bool:
        return get_arch(self.architecture).gated

    @classmethod
    def from_hf_file(cls, path: Path) -> ModelConfig:
        return cls.from_hf(load_json(path), where=str(path))

    @classmethod
    def from_hf(cls, hf: dict, where: str = "config.json") -> ModelConfig:
        """Read a transformers config dict; every value is type-checked, and all bad fields are named in one line."""
        if not isinstance(hf, dict):
            raise ConfigError(f"{where} must hold a JSON object, found a {type(hf).__name__}")
        f = _Fields(hf, where)
        archs = f.get("architectures", list) or []
        arch = find_arch(archs)
        if arch is None:
            f.raise_if_bad()
            raise ConfigError(
                f"unsupported architecture {archs or hf.get('model_type')!r} in {where}; "
                f"supported: {', '.join(supported())}"
            )

        hidden = f.integer("hidden_size")
        heads = f.integer("num_attention_heads")
        kv_heads = f.integer("num_key_value_heads", default=heads)
        derived = hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 else None
        head_dim = f.integer("head_dim", "kv_channels", default=derived)

        rope = f.get("rope_parameters", dict) or {}  # transformers 5.x form
        rope_theta = f.number("rope_theta", default=10000.0, within=rope)
        partial = f.number("partial_rotary_factor", default=None, within=rope, upper=1.0)
        if partial is None:
            partial = f.number(*arch.rotary_fraction_aliases, default=arch.default_rotary_fraction, upper=1.0) \
                if arch.rotary_fraction_aliases else arch.default_rotary_fraction
        scaling = f.get("rope_scaling", dict)
        if scaling is None and rope.get("rope_type", rope.get("type", "default")) != "default":
            scaling = rope
        rope_scaling = _rope_scaling(scaling, f) if scaling else None

        act = f.text("hidden_act", "hidden_activation")
        norm_eps = f.number(*arch.norm_eps_keys)
        cfg_fields = dict(
            vocab_size=f.integer("vocab_size"),
            intermediate_size=f.integer("intermediate_size"),
            num_hidden_layers=f.integer("num_hidden_layers"),
            max_position_embeddings=f.integer("max_position_embeddings", default=4096),
            tie_word_embeddings=f.boolean("tie_word_embeddings", default=False),
            torch_dtype=f.get("torch_dtype", str) or f.get("dtype", str),
            bos_token_id=f.token_ids("bos_token_id"),
            eos_token_id=f.token_ids("eos_token_id"),
        )
        biases = {flag: f.boolean(flag, default=False) for flag in arch.hf_bias_flags}
        f.raise_if_bad()

        name = arch.hf_architecture
        if act not in arch.hidden_acts:
            raise ConfigError(f"unsupported hidden_act {act!r} for {name} in {where}; supported: "
                              f"{', '.join(arch.hidden_acts)}")
        act = arch.hidden_acts[0]
        if partial != 1.0 and not arch.partial_rotary:
            raise ConfigError(f"partial_rotary_factor={partial} in {where} is not supported for {name}, whose "
                              "TensorRT-LLM model rotates the whole head")
        arch.check_bias_flags(biases, arch.hf_bias_flags, where)
        arch.check_hf_config(hf, where)

        cfg = cls(
            architecture=arch.hf_architecture,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            hidden_act=act,
            norm_eps=norm_eps,
            rope_theta=rope_theta,
            partial_rotary_factor=partial,
            rope_scaling=rope_scaling,
            **cfg_fields,
        )
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "config") -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} in {where} must be a positive integer")
        for name in ("norm_eps", "rope_theta", "partial_rotary_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{name}={value!r} in {where} must be a positive number")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads={self.num_key_value_heads} in {where}")
        if self.rotary_dim % 2 or self.rotary_dim == 0:
            raise ConfigError(f"rotary dim head_dim*partial_rotary_factor={self.head_dim}*"
                              f"{self.partial_rotary_factor} must be a positive even number in {where}")

    def to_hf(self) -> dict:
        """config.json for transformers (4.x form, which 5.x also reads)."""
        arch = get_arch(self.architecture)
        d: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": arch.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            arch.norm_eps_keys[0]: self.norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            **arch.bias_flags(arch.hf_bias_flags),
        }
        if self.torch_dtype:
            d["torch_dtype"] = self.torch_dtype
        if arch.partial_rotary:
            d["partial_rotary_factor"] = self.partial_rotary_factor
        if self.rope_scaling:
            rs = asdict(self.rope_scaling)
            if self.rope_scaling.rope_type != "llama3":
                rs = {"rope_type": rs["rope_type"], "factor": rs["factor"]}
            d["rope_scaling"] = rs
        return {**d, **arch.hf_config_fields(self)}


def load_json(path: Path) -> dict:
    """A JSON config file holding an object, or a one-line ConfigError saying why it cannot be read. A key given
    twice is refused (json keeps the last one silently: which one was meant is a guess), and so is a byte-order
    mark (Python's json, which transformers and TensorRT-LLM read config.json with, refuses it too)."""
    try:
        raw = Path(path).read_bytes()
        if raw.startswith(b"\xef\xbb\xbf"):
            raise ConfigError(f"{path} starts with a UTF-8 byte-order mark, which transformers and TensorRT-LLM "
                              "refuse; save it as UTF-8 without one")
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise ConfigError(f"no {Path(path).name} at {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a JSON file") from None
    except DuplicateKey as e:
        raise ConfigError(f"{path} gives the key {e.key!r} twice; keep one") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found a {type(data).__name__}")
    return data




_MISSING = object()


class _Fields:
    """Typed reads of a config dict; every bad field is recorded, then reported together on one line."""

    def __init__(self, raw: dict, where: str):
        self.raw, self.where, self.bad = raw, where, []

    def _find(self, keys: tuple[str, ...], within: dict | None = None) -> tuple[str, Any]:
        for source in (within or {}, self.raw):
            for k in keys:
                if source.get(k) is not None:
                    return k, source[k]
        return keys[0], _MISSING

    def _value(self, keys: tuple[str, ...], default: Any, within: dict | None = None) -> tuple[str, Any]:
        key, value = self._find(keys, within)
        if value is _MISSING:
            if default is _MISSING:
                self.bad.append(f"lacks {keys[0]!r}")
            return key, default
        return key, value

    def get(self, key: str, kind: type) -> Any:
        """An optional value of one JSON type (None when absent or null)."""
        value = self.raw.get(key)
        if value is not None and not isinstance(value, kind):
            self.bad.append(f"{key}={value!r} must be a JSON {_JSON_NAMES[kind]}")
            return None
        return value

    def integer(self, *keys: str, default: Any = _MISSING) -> Any:
        key, value = self._value(keys, default)
        if value is _MISSING or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.bad.append(f"{key}={value!r} must be a positive integer")
        return value

    def number(self, *keys: str, default: Any = _MISSING, within: dict | None = None, upper: float = math.inf) -> Any:
        key, value = self._value(keys, default, within)
        if value is _MISSING or value is None:
            return value
        # A value may be stated twice (4.x top level and 5.x rope_parameters): check both, and that they agree.
        stated = {(w, k): src[k] for w, src in (("rope_parameters.", within or {}), ("", self.raw))
                  for k in keys if src.get(k) is not None}
        for (w, k), v in stated.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= upper or math.isinf(v):
                limit = f" at most {upper:g}" if upper < math.inf else ""
                self.bad.append(f"{w}{k}={v!r} must be a positive number{limit}")
                return value
        if len(set(stated.values())) > 1:
            self.bad.append(" and ".join(f"{w}{k}={v!r}" for (w, k), v in stated.items()) + " disagree")
        return float(value)

    def text(self, *keys: str) -> Any:
        key, value = self._value(keys, _MISSING)
        if value is not _MISSING and not isinstance(value, str):
            self.bad.append(f"{key}={value!r} must be a string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad.append(f"{key}={value!r} must be true or false (a JSON boolean, not a string or number)")
            return default
        return value

    def token_ids(self, key: str) -> Any:
        value = self.raw.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            self.bad.append(f"{key}={value!r} must be a token id or a list of token ids")
            return None
        return value

    def raise_if_bad(self) -> None:
        if self.bad:
            raise ConfigError(f"{self.where}: {'; '.join(self.bad)}")


_JSON_NAMES = {dict: "object", list: "list", str: "string"}


def _rope_scaling(raw: dict, f: _Fields) -> RopeScaling | None:
    where = f.where
    kind = raw.get("rope_type", raw.get("type", "default"))
    if kind == "default":
        return None
    sub = _Fields(raw, f"{where}: {kind} rope scaling")
    if kind == "llama3":
        scaling = RopeScaling(
            rope_type="llama3",
            factor=sub.number("factor"),
            low_freq_factor=sub.number("low_freq_factor"),
            high_freq_factor=sub.number("high_freq_factor"),
            original_max_position_embeddings=sub.integer("original_max_position_embeddings"),
        )
        sub.raise_if_bad()
        if scaling.high_freq_factor <= scaling.low_freq_factor:
            raise ConfigError(f"llama3 rope scaling in {where} needs high_freq_factor > low_freq_factor, got "
                              f"{scaling.high_freq_factor} and {scaling.low_freq_factor}")
        return scaling
    if kind == "linear":
        factor = sub.number("factor")
        sub.raise_if_bad()
        return RopeScaling(rope_type="linear", factor=factor)
    raise ConfigError(f"unsupported rope scaling type {kind!r} in {where}; supported: default, llama3, linear")
