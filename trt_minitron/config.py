"""Model hyper-parameters, read from Hugging Face config.json in its transformers 4.x and 5.x forms.

Field names follow transformers. Values the checkpoint states are never re-derived
(head_dim in particular: Minitron-8B and Llama-3.1-Minitron-4B have head_dim != hidden/heads).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "NemotronForCausalLM")
# Activation spellings that mean relu(x)^2 (transformers, Megatron/NeMo, TensorRT-LLM).
SQUARED_RELU = ("relu2", "squared-relu", "squared_relu")


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
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def is_gated(self) -> bool:
        return self.architecture == "LlamaForCausalLM"

    @classmethod
    def from_hf_file(cls, path: Path) -> ModelConfig:
        return cls.from_hf(load_json(path), where=str(path))

    @classmethod
    def from_hf(cls, hf: dict, where: str = "config.json") -> ModelConfig:
        archs = hf.get("architectures") or []
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise ConfigError(
                f"unsupported architecture {archs or hf.get('model_type')!r} in {where}; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )

        def need(key: str, *aliases: str) -> Any:
            for k in (key, *aliases):
                if hf.get(k) is not None:
                    return hf[k]
            raise ConfigError(f"{where} lacks {key!r}")

        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        kv_heads = int(hf.get("num_key_value_heads") or heads)
        head_dim = hf.get("head_dim") or hf.get("kv_channels") or hidden // heads

        rope = dict(hf.get("rope_parameters") or {})  # transformers 5.x form
        rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        partial = float(rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
        if arch == "NemotronForCausalLM" and "partial_rotary_factor" not in rope and hf.get(
            "partial_rotary_factor"
        ) is None:
            partial = float(hf.get("rope_percent", 0.5))  # NemotronConfig default
        scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)

        act = str(need("hidden_act", "hidden_activation"))
        if arch == "LlamaForCausalLM" and act != "silu":
            raise ConfigError(f"unsupported hidden_act {act!r} for LlamaForCausalLM in {where}; supported: silu")
        if arch == "NemotronForCausalLM":
            if act not in SQUARED_RELU:
                raise ConfigError(f"unsupported hidden_act {act!r} for NemotronForCausalLM in {where}; "
                                  "supported: relu2 (squared ReLU)")
            act = "relu2"
        for flag in ("attention_bias", "mlp_bias"):
            if hf.get(flag):
                raise ConfigError(f"{flag}=true in {where} is not supported (Minitron models have no linear biases)")

        cfg = cls(
            architecture=arch,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_hidden_layers=int(need("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=int(head_dim),
            hidden_act=act,
            norm_eps=float(need("rms_norm_eps", "norm_eps", "layer_norm_eps")),
            max_position_embeddings=int(hf.get("max_position_embeddings") or 4096),
            rope_theta=rope_theta,
            partial_rotary_factor=partial,
            rope_scaling=_rope_scaling(scaling, where),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            torch_dtype=hf.get("torch_dtype") or hf.get("dtype"),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "config") -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads={self.num_key_value_heads} in {where}")
        if self.rotary_dim % 2 or self.rotary_dim == 0:
            raise ConfigError(f"rotary dim head_dim*partial_rotary_factor={self.head_dim}*"
                              f"{self.partial_rotary_factor} must be a positive even number in {where}")

    def to_hf(self) -> dict:
        """config.json for transformers (4.x form, which 5.x also reads)."""
        d: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": "llama" if self.architecture == "LlamaForCausalLM" else "nemotron",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "attention_bias": False,
            "mlp_bias": False,
        }
        if self.torch_dtype:
            d["torch_dtype"] = self.torch_dtype
        if self.architecture == "LlamaForCausalLM":
            d["rms_norm_eps"] = self.norm_eps
        else:
            d["norm_eps"] = self.norm_eps
            d["partial_rotary_factor"] = self.partial_rotary_factor
        if self.rope_scaling:
            rs = asdict(self.rope_scaling)
            if self.rope_scaling.rope_type != "llama3":
                rs = {"rope_type": rs["rope_type"], "factor": rs["factor"]}
            d["rope_scaling"] = rs
        return d


def load_json(path: Path) -> dict:
    """A JSON config file, or a one-line ConfigError saying why it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {Path(path).name} at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None


def _rope_scaling(raw: dict | None, where: str) -> RopeScaling | None:
    if not raw:
        return None
    kind = raw.get("rope_type", raw.get("type", "default"))
    if kind == "default":
        return None
    if kind == "llama3":
        return RopeScaling(
            rope_type="llama3",
            factor=float(raw.get("factor", 8.0)),
            low_freq_factor=float(raw.get("low_freq_factor", 1.0)),
            high_freq_factor=float(raw.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(raw.get("original_max_position_embeddings", 8192)),
        )
    if kind == "linear":
        return RopeScaling(rope_type="linear", factor=float(raw["factor"]))
    raise ConfigError(f"unsupported rope scaling type {kind!r} in {where}; supported: default, llama3, linear")
