"""LLaMAConfig and LLaMAForCausalLM's parameter tree, written from NVIDIA/TensorRT-LLM
tensorrt_llm/models/llama/model.py (index file id 663997685, the config-based 1.x model) and the LLaMAConfig
defaults in reference/trtllm.md section 1.4 (models/llama/config.py @89fd9b7).

Per rank: transformer.vocab_embedding (first pipeline stage) = Embedding(vocab, hidden);
transformer.layers.{local}: input_layernorm RmsNorm (unless layer 0 and not use_input_layernorm_in_first_layer),
attention (qkv, dense; bias = attn_bias), mlp GatedMLP (fc, gate, proj; bias = mlp_bias), post_layernorm RmsNorm,
and residual_layernorm + residual_mlp when residual_mlp; transformer.fc when fc_after_embed;
transformer.ln_f RmsNorm and lm_head = ColumnLinear(hidden, pad_vocab_size(vocab, tp), bias=False) on the last
pipeline stage (ln_f only when use_last_layernorm).
"""

from __future__ import annotations

from ._layers import Attention, ColumnLinear, Embedding, GatedMLP, Module, RmsNorm, pad_vocab_size
from .modeling_utils import DecoderLayerList, PretrainedConfig, PretrainedModel, check_no_moe


class LLaMAConfig(PretrainedConfig):
    def __init__(self, *, mlp_bias: bool = False, attn_bias: bool = False, rotary_base: float = 10000.0,
                 rotary_scaling=None, residual_mlp: bool = False, disable_weight_only_quant_plugin: bool = False,
                 moe=None, remove_duplicated_kv_heads: bool = False, embedding_multiplier: float = 1.0,
                 attention_multiplier: float = 1.0, residual_multiplier: float = 1.0,
                 output_multiplier_scale: float = 1.0, **kwargs):
        self.mlp_bias, self.attn_bias = mlp_bias, attn_bias
        self.rotary_base, self.rotary_scaling, self.residual_mlp = rotary_base, rotary_scaling, residual_mlp
        self.disable_weight_only_quant_plugin, self.moe = disable_weight_only_quant_plugin, moe
        self.remove_duplicated_kv_heads, self.embedding_multiplier = remove_duplicated_kv_heads, embedding_multiplier
        self.attention_multiplier, self.residual_multiplier = attention_multiplier, residual_multiplier
        self.output_multiplier_scale = output_multiplier_scale
        kwargs.setdefault("fc_after_embed", False)
        kwargs.setdefault("use_input_layernorm_in_first_layer", True)
        kwargs.setdefault("use_last_layernorm", True)
        kwargs.setdefault("layer_idx_offset", 0)
        super().__init__(**kwargs)


class LLaMADecoderLayer(Module):
    def __init__(self, config: LLaMAConfig, layer_idx: int):
        super().__init__()
        check_no_moe(config)
        tp, h = config.mapping.tp_size, config.hidden_size
        if config.use_input_layernorm_in_first_layer or layer_idx > 0:
            self.input_layernorm = RmsNorm(h)
        self.attention = Attention(hidden_size=h, num_attention_heads=config.num_attention_heads,
                                   num_kv_heads=config.num_key_value_heads, attention_head_size=config.head_size,
                                   bias=config.attn_bias, tp_size=tp)
        ffn = config.intermediate_size or 4 * h
        self.mlp = GatedMLP(h, ffn, config.hidden_act, bias=config.mlp_bias, tp_size=tp)
        self.post_layernorm = RmsNorm(h)
        if config.residual_mlp:
            self.residual_layernorm = RmsNorm(h)
            self.residual_mlp = GatedMLP(h, h, config.hidden_act, bias=config.mlp_bias, tp_size=tp)


class LLaMAModel(Module):
    def __init__(self, config: LLaMAConfig):
        super().__init__()
        m = config.mapping
        if m.is_first_pp_rank():
            self.vocab_embedding = _embedding(config)
        self.layers = DecoderLayerList(LLaMADecoderLayer, config)
        if config.fc_after_embed:
            self.fc = ColumnLinear(2 * config.hidden_size, config.hidden_size, bias=True, tp_size=m.tp_size)
        if m.is_last_pp_rank() and config.use_last_layernorm:
            self.ln_f = RmsNorm(config.hidden_size)


class LLaMAForCausalLM(PretrainedModel):
    config_class = LLaMAConfig

    def __init__(self, config: LLaMAConfig):
        super().__init__(config)
        self.transformer = LLaMAModel(config)
        if config.mapping.is_last_pp_rank():
            self.lm_head = ColumnLinear(config.hidden_size, pad_vocab_size(config.vocab_size, config.mapping.tp_size),
                                        bias=False, tp_size=config.mapping.tp_size)


def _embedding(config: PretrainedConfig) -> Embedding:
    """Embedding(vocab, hidden); PretrainedModel.__post_init__'s optimize_model(use_parallel_embedding=...) makes it
    a tensor-parallel embedding when the config asks (split along embedding_sharding_dim)."""
    tp = config.mapping.tp_size if config.use_parallel_embedding else 1
    return Embedding(config.vocab_size, config.hidden_size, tp_size=tp, sharding_dim=config.embedding_sharding_dim)
