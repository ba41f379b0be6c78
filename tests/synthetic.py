"""Random Hugging Face checkpoints with real model shapes, written one tensor at a time.

For benchmarks and memory tests (a Minitron-4B-shaped checkpoint without a download); values are
random, so they say nothing about accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trt_minitron.archs import get_arch
from trt_minitron.archs.config import ModelConfig
from trt_minitron.sources.base import TensorInfo
from trt_minitron.tensors.stwriter import write_safetensors

# Hyper-parameters from the model cards / NeMo configs (see ../shared/reference/nemo.md section 4).
PRESETS: dict[str, dict] = {
    "minitron-4b": {"architectures": ["NemotronForCausalLM"], "hidden_size": 3072, "intermediate_size": 9216,
                    "num_hidden_layers": 32, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
                    "hidden_act": "relu2", "norm_eps": 1e-5, "vocab_size": 256000, "max_position_embeddings": 4096,
                    "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "tie_word_embeddings": False,
                    "bos_token_id": 2, "eos_token_id": 3, "torch_dtype": "bfloat16"},
    "minitron-8b": {"architectures": ["NemotronForCausalLM"], "hidden_size": 4096, "intermediate_size": 16384,
                    "num_hidden_layers": 32, "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128,
                    "hidden_act": "relu2", "norm_eps": 1e-5, "vocab_size": 256000, "max_position_embeddings": 4096,
                    "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "tie_word_embeddings": False,
                    "bos_token_id": 2, "eos_token_id": 3, "torch_dtype": "bfloat16"},
    "llama-3.1-minitron-4b-width": {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 3072, "intermediate_size": 9216,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": 128256, "max_position_embeddings": 131072,
        "rope_theta": 500000.0, "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": 128001,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}, "torch_dtype": "bfloat16"},
}


def write_synthetic_hf(out: Path, hf_config: dict, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """config.json + model.safetensors with random weights of the config's shapes; memory ~ one tensor."""
    cfg = ModelConfig.from_hf(hf_config)
    shapes = get_arch(cfg.architecture).hf_tensors(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    gen = torch.Generator().manual_seed(seed)

    def random(shape: tuple[int, ...]) -> torch.Tensor:
        return (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(dtype)

    entries = [(name, TensorInfo(shape, dtype), lambda s=shape: random(s)) for name, shape in shapes.items()]
    write_safetensors(out / "model.safetensors", entries)
    return out
