"""LlamaForCausalLM (Llama-3.1-Minitron-4B Width/Depth, Llama-3.1-8B, SmolLM2) -> TensorRT-LLM LLaMAForCausalLM."""

from ..config import ModelConfig
from ..mapping import Mapping
from . import register
from .base import Arch, TransformersModules, copy, fused_qkv, split_cols, split_rows


@register
class Llama(Arch):
    hf_architecture = "LlamaForCausalLM"
    trt_architecture = "LlamaForCausalLM"
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

    def trt_config(self, cfg: ModelConfig, dtype: str, mapping: Mapping) -> dict:
        # LLaMAConfig.to_dict fields (tensorrt_llm/models/llama/config.py).
        return {
            **self.common_trt_config(cfg, dtype, mapping),
            "hidden_act": "silu",
            "mlp_bias": False,
            "attn_bias": False,
            "residual_mlp": False,
        }

    def hf_layer_tensors(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        h, i = cfg.hidden_size, cfg.intermediate_size
        return {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
                "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h), "mlp.down_proj.weight": (h, i)}

    def hf_final_norm(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return {"model.norm.weight": (cfg.hidden_size,)}

    def transformers_modules(self) -> TransformersModules:
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

        return TransformersModules(config=LlamaConfig, causal_lm=LlamaForCausalLM, decoder_layer=LlamaDecoderLayer,
                                   norm=LlamaRMSNorm, rotary=LlamaRotaryEmbedding)
