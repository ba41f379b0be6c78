"""MistralForCausalLM (Mistral-NeMo-Minitron-8B-Base/-Instruct, pruned from Mistral NeMo 12B) -> TensorRT-LLM
LLaMAForCausalLM.

Numerically a Llama: RMSNorm, SwiGLU, full-head rope, GQA, head_dim stated in config.json
(128 for the 8B, which is 4096/32; Mistral NeMo 12B's 128 is not 5120/32, so it is read, never derived). TensorRT-LLM's own
converter (LLaMAConfig.from_hugging_face, tensorrt_llm/models/llama/config.py) writes
architecture = hf_config.architectures[0], which MODEL_MAP maps to LLaMAForCausalLM, and converts the weights
with the Llama rules. Sliding-window attention is a build/runtime setting there, not a checkpoint field, so a
config stating a window is refused rather than exported as full attention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import register
from .base import TransformersModules
from .llama import Llama

if TYPE_CHECKING:
    from .config import ModelConfig


@register
class Mistral(Llama):
    hf_architecture = "MistralForCausalLM"
    model_type = "mistral"
    trt_architecture = "MistralForCausalLM"  # MODEL_MAP: LLaMAForCausalLM
    gguf_architecture = None  # llama.cpp writes Mistral as "llama": read back as Llama
    nemo_activations = ()  # a .nemo says swiglu + rmsnorm: Llama
    nemo_normalization = None

    def check_hf_config(self, raw: dict, where: str) -> None:
        window = raw.get("sliding_window")
        if window is not None:
            raise ConfigError(f"sliding_window={window!r} in {where} is not supported: the export would attend "
                              "to the whole context (Mistral-NeMo-Minitron states null)")

    def hf_config_fields(self, cfg: ModelConfig) -> dict:
        return {"sliding_window": None}  # MistralConfig's default is 4096: state full attention

    def transformers_modules(self) -> TransformersModules:
        from transformers import MistralConfig, MistralForCausalLM
        from transformers.models.mistral.modeling_mistral import (
            MistralDecoderLayer,
            MistralRMSNorm,
            MistralRotaryEmbedding,
        )

        return TransformersModules(config=MistralConfig, causal_lm=MistralForCausalLM,
                                   decoder_layer=MistralDecoderLayer, norm=MistralRMSNorm,
                                   rotary=MistralRotaryEmbedding)
