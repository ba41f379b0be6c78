"""LlamaForCausalLM (Llama-3.1-Minitron-4B Width/Depth, Llama-3.1-8B, SmolLM2) -> TensorRT-LLM LLaMAForCausalLM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import register
from .base import ATTENTION_LINEARS, MLP_LINEARS, Arch, TransformersModules, copy, fused_qkv, split_cols, split_rows

if TYPE_CHECKING:
    from .config import ModelConfig


@register
class Llama(Arch):
    hf_architecture = "LlamaForCausalLM"
    model_type = "llama"
    trt_architecture = "LlamaForCausalLM"  # MODEL_MAP: LLaMAForCausalLM
    hidden_acts = ("silu",)
    norm_eps_keys = ("rms_norm_eps",)
    gated = True
    norm = "rmsnorm"
    trt_hidden_act = "silu"
    per_layer = {
        "input_layernorm.weight": copy("input_layernorm.weight"),
        "attention.qkv.weight": fused_qkv("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                          "self_attn.v_proj.weight"),
        "attention.dense.weight": split_cols("self_attn.o_proj.weight"),
        "post_layernorm.weight": copy("post_attention_layernorm.weight"),
        "mlp.fc.weight": split_rows("mlp.gate_proj.weight"),  # TRT fc = activated branch = HF gate_proj
        "mlp.gate.weight": split_rows("mlp.up_proj.weight"),  # TRT gate = linear branch = HF up_proj
        "mlp.proj.weight": split_cols("mlp.down_proj.weight"),
    }
    final_norm = {"weight": copy("model.norm.weight")}
    trt_bias_flags = {"mlp_bias": MLP_LINEARS, "attn_bias": ATTENTION_LINEARS}  # LLaMAConfig
    gguf_architecture = "llama"
    gguf_permuted_qk = True
    nemo_activations = ("swiglu", "fast-swiglu")
    nemo_normalization = "rmsnorm"
    modelopt_decoder_type = "llama"

    def trt_config_fields(self, cfg: ModelConfig) -> dict:
        # LLaMAConfig.to_dict fields (tensorrt_llm/models/llama/config.py).
        return {**self.bias_flags(self.trt_bias_flags), "residual_mlp": False}

    def transformers_modules(self) -> TransformersModules:
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

        return TransformersModules(config=LlamaConfig, causal_lm=LlamaForCausalLM, decoder_layer=LlamaDecoderLayer,
                                   norm=LlamaRMSNorm, rotary=LlamaRotaryEmbedding)
