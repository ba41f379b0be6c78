"""GPTConfig and GPTForCausalLM's parameter tree (the class NemotronForCausalLM maps to), written from
NVIDIA/TensorRT-LLM tensorrt_llm/models/gpt/model.py (index file id 1165511584, the config-based 1.x model) and
the GPTConfig defaults in reference/trtllm.md section 2.2 (models/gpt/config.py @6b25e1e).

Per rank: transformer.vocab_embedding (first stage), transformer.position_embedding only for learned_absolute
positions; transformer.layers.{local}: input_layernorm LayerNorm (always with bias: the layer does not pass
config.bias), attention (qkv, dense; bias = config.bias, which defaults to True), mlp from MLPFactory
(GatedMLP for gated activations, else MLP with fc and proj; never a gate for squared-relu), post_layernorm
LayerNorm; transformer.ln_f LayerNorm and lm_head ColumnLinear(hidden, pad_vocab_size(vocab, tp), bias=False)
on the last stage.
"""

from __future__ import annotations

from ._layers import MLP, Attention, ColumnLinear, Embedding, GatedMLP, LayerNorm, Module, is_gated_activation, pad_vocab_size
from .llama import _embedding
from .modeling_utils import DecoderLayerList, PretrainedConfig, PretrainedModel, check_no_moe


class GPTConfig(PretrainedConfig):
    def __init__(self, *, gpt_variant: str = "gpt2", bias: bool = True, q_scaling: float = 1.0,
                 embedding_scale=None, apply_query_key_layer_scaling: bool = False, rotary_pct: float = 1.0,
                 rotary_base: float = 10000.0, rotary_scaling=None, inner_layernorm: bool = False,
                 norm_before_bmm1: bool = False, moe=None, **kwargs):
        self.gpt_variant, self.bias, self.q_scaling = gpt_variant, bias, q_scaling
        self.embedding_scale, self.apply_query_key_layer_scaling = embedding_scale, apply_query_key_layer_scaling
        self.rotary_pct, self.rotary_base, self.rotary_scaling = rotary_pct, rotary_base, rotary_scaling
        self.inner_layernorm, self.norm_before_bmm1, self.moe = inner_layernorm, norm_before_bmm1, moe
        super().__init__(**kwargs)


class GPTDecoderLayer(Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        check_no_moe(config)
        tp, h = config.mapping.tp_size, config.hidden_size
        self.input_layernorm = LayerNorm(h)
        self.attention = Attention(hidden_size=h, num_attention_heads=config.num_attention_heads,
                                   num_kv_heads=config.num_key_value_heads, attention_head_size=config.head_size,
                                   bias=config.bias, tp_size=tp, qk_layernorm=config.qk_layernorm,
                                   inner_layernorm=config.inner_layernorm)
        ffn = config.intermediate_size or 4 * h
        mlp_class = GatedMLP if is_gated_activation(config.hidden_act) else MLP
        self.mlp = mlp_class(h, ffn, config.hidden_act, bias=config.bias, tp_size=tp,
                             inner_layernorm=config.inner_layernorm)
        self.post_layernorm = LayerNorm(h)


class GPTModel(Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        m = config.mapping
        if m.is_first_pp_rank():
            self.vocab_embedding = _embedding(config)
            if config.position_embedding_type == "learned_absolute":
                self.position_embedding = Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = DecoderLayerList(GPTDecoderLayer, config)
        if m.is_last_pp_rank():
            self.ln_f = LayerNorm(config.hidden_size)


class GPTForCausalLM(PretrainedModel):
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.transformer = GPTModel(config)
        if config.mapping.is_last_pp_rank():
            self.lm_head = ColumnLinear(config.hidden_size, pad_vocab_size(config.vocab_size, config.mapping.tp_size),
                                        bias=False, tp_size=config.mapping.tp_size)
