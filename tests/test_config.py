"""ModelConfig reads both transformers config forms and refuses what would change the maths silently."""

import pytest

from trt_minitron.archs.config import ModelConfig, RopeScaling
from trt_minitron.errors import ConfigError

LLAMA_31_MINITRON_4B_WIDTH_4X = {  # the 4.x form real Minitron configs use
    "architectures": ["LlamaForCausalLM"], "hidden_size": 3072, "intermediate_size": 9216,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
}


def test_llama_4x_and_5x_forms_give_the_same_config():
    five = dict(LLAMA_31_MINITRON_4B_WIDTH_4X)
    scaling = five.pop("rope_scaling")
    theta = five.pop("rope_theta")
    five["rope_parameters"] = {**scaling, "rope_theta": theta}
    a, b = ModelConfig.from_hf(LLAMA_31_MINITRON_4B_WIDTH_4X), ModelConfig.from_hf(five)
    assert a == b
    assert a.head_dim == 128 and a.hidden_size // a.num_attention_heads == 96  # stated, never derived
    assert a.rope_theta == 500000.0
    assert a.rope_scaling == RopeScaling(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=8192)


def test_nemotron_minitron_8b_shape_and_partial_rotary_in_both_forms():
    four = {"architectures": ["NemotronForCausalLM"], "hidden_size": 4096, "intermediate_size": 16384,
            "num_hidden_layers": 32, "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128,
            "hidden_act": "relu2", "norm_eps": 1e-5, "vocab_size": 256000, "max_position_embeddings": 4096,
            "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    five = {k: v for k, v in four.items() if k not in ("rope_theta", "partial_rotary_factor")}
    five["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default", "partial_rotary_factor": 0.5}
    a, b = ModelConfig.from_hf(four), ModelConfig.from_hf(five)
    assert a == b
    assert (a.head_dim, a.rotary_dim, a.rope_scaling) == (128, 64, None)


def test_kv_channels_is_read_when_head_dim_is_absent():
    cfg = {"architectures": ["NemotronForCausalLM"], "hidden_size": 4096, "intermediate_size": 16384,
           "num_hidden_layers": 2, "num_attention_heads": 48, "num_key_value_heads": 8, "kv_channels": 128,
           "hidden_act": "relu2", "norm_eps": 1e-5, "vocab_size": 256000}
    assert ModelConfig.from_hf(cfg).head_dim == 128


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope scaling type 'yarn'"),
    ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
    ({"attention_bias": True}, "attention_bias=true"),
    ({"architectures": ["Qwen2ForCausalLM"]}, "unsupported architecture"),
])
def test_unsupported_maths_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**LLAMA_31_MINITRON_4B_WIDTH_4X, **change})
