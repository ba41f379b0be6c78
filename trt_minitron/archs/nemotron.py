"""NemotronForCausalLM (Minitron-4B/8B, Nemotron-4) -> TensorRT-LLM GPTForCausalLM.

layernorm1p gammas are stored zero-centred; TensorRT-LLM's GPT LayerNorm has no 1p flag, so +1 is
folded in at conversion. Squared ReLU makes the MLP non-gated: HF up_proj is TRT mlp.fc, no mlp.gate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import register
from .base import LINEARS, Arch, TransformersModules, copy, fused_qkv, plus_one, split_cols, split_rows

if TYPE_CHECKING:
    from .config import ModelConfig


@register
class Nemotron(Arch):
    hf_architecture = "NemotronForCausalLM"
    model_type = "nemotron"
    trt_architecture = "GPTForCausalLM"  # with gpt_variant "nemotron"
    trt_aliases = ("NemotronForCausalLM",)  # MODEL_MAP maps it to GPTForCausalLM too
    # Activation spellings that mean relu(x)^2 (transformers, Megatron/NeMo, TensorRT-LLM).
    hidden_acts = ("relu2", "squared-relu", "squared_relu")
    norm_eps_keys = ("norm_eps", "layer_norm_eps", "rms_norm_eps")
    partial_rotary = True
    default_rotary_fraction = 0.5  # transformers' NemotronConfig default
    rotary_fraction_aliases = ("rope_percent",)
    gated = False
    norm = "layernorm"
    trt_hidden_act = "squared-relu"
    per_layer = {
        "input_layernorm.weight": plus_one("input_layernorm.weight"),
        "input_layernorm.bias": copy("input_layernorm.bias"),
        "attention.qkv.weight": fused_qkv("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                          "self_attn.v_proj.weight"),
        "attention.dense.weight": split_cols("self_attn.o_proj.weight"),
        "post_layernorm.weight": plus_one("post_attention_layernorm.weight"),
        "post_layernorm.bias": copy("post_attention_layernorm.bias"),
        "mlp.fc.weight": split_rows("mlp.up_proj.weight"),  # non-gated: up_proj -> fc
        "mlp.proj.weight": split_cols("mlp.down_proj.weight"),
    }
    final_norm = {"weight": plus_one("model.norm.weight"), "bias": copy("model.norm.bias")}
    trt_bias_flags = {"bias": LINEARS}  # GPTConfig: one flag for every linear (norms always have biases)
    rounding_offsets = dict.fromkeys(Arch.hf_norm_weights, 1.0)  # layernorm1p: the export rounds gamma + 1
    gguf_architecture = "nemotron"
    gguf_norm_offset = 1.0  # written as gamma + 1 (NemotronModel.modify_tensors)
    gguf_norm_eps_keys = ("layer_norm_epsilon", "layer_norm_rms_epsilon")
    nemo_activations = ("squared-relu", "squared_relu")
    nemo_normalization = "layernorm1p"
    modelopt_decoder_type = "gpt"  # ModelOpt exports Nemotron through its GPT path ("nemotron" raises)

    def trt_config_fields(self, cfg: ModelConfig) -> dict:
        # GPTConfig.to_dict fields (tensorrt_llm/models/gpt/config.py); gpt_variant is an extra
        # attribute for releases that predate it.
        return {
            "gpt_variant": "nemotron",
            **self.bias_flags(self.trt_bias_flags),
            "rotary_pct": cfg.partial_rotary_factor,
            "q_scaling": 1.0,
            "apply_query_key_layer_scaling": False,
            "embedding_scale": None,
            "inner_layernorm": False,
            "norm_before_bmm1": False,
        }

    def transformers_modules(self) -> TransformersModules:
        from transformers import NemotronConfig, NemotronForCausalLM
        from transformers.models.nemotron.modeling_nemotron import (
            NemotronDecoderLayer,
            NemotronLayerNorm1P,
            NemotronRotaryEmbedding,
        )

        return TransformersModules(config=NemotronConfig, causal_lm=NemotronForCausalLM,
                                   decoder_layer=NemotronDecoderLayer, norm=NemotronLayerNorm1P,
                                   rotary=NemotronRotaryEmbedding)
