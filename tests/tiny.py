"""Tiny random Hugging Face checkpoints with the shapes that catch layout bugs.

GQA (kv < heads), head_dim != hidden/heads, llama3 rope scaling, partial rotary, and layernorm1p
weights/biases that are random and non-zero (transformers initialises them to 1 and 0, which would
hide a dropped or doubled +1).
"""

from __future__ import annotations

from pathlib import Path

import torch


def _randomize_norms(model, scale: float = 0.2) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * scale)


def _save(model, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=250, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    kw.update(overrides)
    return LlamaConfig(**kw)


def make_tiny_llama(path: Path, seed: int = 0, **overrides) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    _randomize_norms(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(1.0)  # RMSNorm gammas around 1, random
    return _save(model, path)


def nemotron_config(**overrides):
    from transformers import NemotronConfig

    kw = dict(vocab_size=250, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=24, max_position_embeddings=256, norm_eps=1e-5,
              rope_theta=10000.0, partial_rotary_factor=0.5, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2)
    kw.update(overrides)
    return NemotronConfig(**kw)


def make_tiny_nemotron(path: Path, seed: int = 0, **overrides) -> Path:
    from transformers import NemotronForCausalLM

    torch.manual_seed(seed)
    model = NemotronForCausalLM(nemotron_config(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    _randomize_norms(model)  # zero-centred gammas: small, non-zero, random
    return _save(model, path)


def make_tiny(arch: str, path: Path, init: str = "randomized", seed: int = 0, **overrides) -> Path:
    """A tiny "llama" or "nemotron" with one of three initialisations:

    - "randomized": weights N(0, 0.2), norm weights random (make_tiny_llama / make_tiny_nemotron);
    - "default": transformers' own initialisation (initializer_range 0.02, norms 1 / 0): logits are small;
    - "small": initializer_range 0.02 and every norm weight N(0, 0.3), around 0 (logits of magnitude ~0.2).
    """
    if init == "randomized":
        return (make_tiny_llama if arch == "llama" else make_tiny_nemotron)(path, seed=seed, **overrides)
    from transformers import LlamaForCausalLM, NemotronForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(llama_config(initializer_range=0.02, **overrides)).eval()
    else:
        model = NemotronForCausalLM(nemotron_config(initializer_range=0.02, **overrides)).eval()
    if init == "small":
        _randomize_norms(model, scale=0.3)
    elif init != "default":
        raise ValueError(f"unknown init {init!r}")
    return _save(model, path)


def registry_config(arch, **overrides):
    """A ModelConfig of any registered architecture: GQA, head_dim != hidden/heads, partial rotary where the arch has
    it, untied."""
    from trt_minitron.archs.config import ModelConfig

    kw = dict(architecture=arch.hf_architecture, vocab_size=250, hidden_size=64, intermediate_size=96,
              num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
              hidden_act=arch.hidden_acts[0], norm_eps=1e-5, max_position_embeddings=256, rope_theta=10000.0,
              partial_rotary_factor=0.5 if arch.partial_rotary else 1.0, bos_token_id=1, eos_token_id=2)
    return ModelConfig(**{**kw, **overrides})


def make_registered(arch, path: Path, seed: int = 0, init: str = "randomized", **overrides) -> Path:
    """A random transformers model of a registered `arch`, built from the config.json `export --format hf` would
    write, saved by transformers' own save_pretrained; init "randomized" (N(0, 0.2) weights, random norms) or
    "default" (transformers' own initialisation)."""
    modules = arch.transformers_modules()
    torch.manual_seed(seed)
    model = modules.causal_lm(modules.config(**registry_config(arch, **overrides).to_hf())).eval()
    centred = bool(arch.rounding_offsets)  # layernorm1p: gammas stored around 0
    if init == "default":
        model.save_pretrained(path, safe_serialization=True)
        return path
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.2)
            if "norm" in name and name.endswith("weight") and not centred:
                p.add_(1.0)
    model.save_pretrained(path, safe_serialization=True)
    return path
