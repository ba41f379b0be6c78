"""A transformers-style config dict from GGUF metadata, for ModelConfig.from_hf.

The keys are the ones transformers' GGUF loader maps ({arch}.context_length, embedding_length, ...);
where llama.cpp's converter stored something else, the reason is on the line (llama3 rope scaling as
a factor tensor, a partial rotary size derived from hidden/heads). What differs per architecture (rotary, the
norm epsilon key) is asked from the Arch.
"""

from __future__ import annotations

import math

import torch

from ...archs import arch_for_gguf, supported
from ...errors import CheckpointError, ConfigError

ROPE_FREQS = "rope_freqs.weight"  # llama.cpp stores llama3 rope scaling as per-frequency factors


def check_architecture(arch: object, where: str) -> None:
    """A GGUF general.architecture some registered architecture reads (Arch.gguf_architecture), or a ConfigError."""
    if not isinstance(arch, str) or arch_for_gguf(arch) is None:
        raise ConfigError(f"{where}: GGUF architecture {arch!r} is not supported; supported: "
                          + ", ".join(f"{g} ({arch_for_gguf(g).hf_architecture})" for g in supported("gguf")))


def hf_config(meta: dict, arch: str, has_output: bool, where: str) -> dict:
    """A transformers config.json dict from GGUF metadata (the keys transformers' GGUF loader maps)."""
    target = arch_for_gguf(arch)

    def get(key: str, default=None):
        name = key.format(arch=arch)
        value = meta.get(name, default)
        text = name.endswith(".type")  # rope.scaling.type; every other key read here is a number
        if value is not None and (isinstance(value, bool) or not isinstance(value, str if text else (int, float))):
            raise CheckpointError(f"{where}: GGUF metadata {name!r} holds {type(value).__name__} {_short(value)}; "
                                  f"expected {'a string' if text else 'a number'}")
        return value

    def need(key: str):
        value = get(key)
        if value is None:
            raise CheckpointError(f"{where}: GGUF metadata lacks {key.format(arch=arch)!r}")
        return value

    hidden, heads = int(need("{arch}.embedding_length")), int(need("{arch}.attention.head_count"))
    if hidden < 1 or heads < 1:
        raise CheckpointError(f"{where}: GGUF metadata gives embedding_length {hidden}, head_count {heads}")
    if get("{arch}.expert_count"):
        raise ConfigError(f"{where}: a mixture-of-experts GGUF ({arch}.expert_count) is not supported")
    rope_dim = get("{arch}.rope.dimension_count")
    tokens = meta.get("tokenizer.ggml.tokens")
    # Without key_length, full-rotary archs have rope dim = head dim; llama.cpp writes a partial rotary size from hidden.
    head_dim = int(get("{arch}.attention.key_length") or (rope_dim if not target.partial_rotary else 0) or hidden // heads)
    hf = {
        "architectures": [target.hf_architecture],
        "model_type": target.model_type,
        "vocab_size": int(get("{arch}.vocab_size") or (len(tokens) if isinstance(tokens, list) else 0)) or None,
        "hidden_size": hidden,
        "intermediate_size": need("{arch}.feed_forward_length"),
        "num_hidden_layers": need("{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("{arch}.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "hidden_act": target.hidden_acts[0],
        "max_position_embeddings": get("{arch}.context_length"),
        "rope_theta": float(get("{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": not has_output,
        "torch_dtype": "float32",
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    if not target.partial_rotary:
        if rope_dim is not None and int(rope_dim) != head_dim:
            raise ConfigError(f"{where}: {arch}.rope.dimension_count={rope_dim} != head dim {head_dim}; "
                              f"partial rotary is not supported for {arch}")
    else:
        # llama.cpp writes rope.dimension_count = int(partial_rotary_factor * hidden) // heads: the model's
        # rotary size only when head_dim == hidden / heads (not so for Minitron-8B).
        if head_dim * heads != hidden:
            raise ConfigError(f"{where}: {arch} GGUF with head_dim {head_dim} != hidden/heads "
                              f"({hidden}/{heads}): its rope.dimension_count cannot be trusted; export the HF "
                              "or .nemo checkpoint instead")
        hf["partial_rotary_factor"] = int(need("{arch}.rope.dimension_count")) / head_dim
    eps = next((v for k in target.gguf_norm_eps_keys if (v := get(f"{{arch}}.attention.{k}")) is not None), None)
    hf[target.norm_eps_keys[0]] = eps if eps is not None else need(f"{{arch}}.attention.{target.gguf_norm_eps_keys[0]}")
    scaling = get("{arch}.rope.scaling.type")
    if scaling == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": float(need("{arch}.rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise ConfigError(f"{where}: rope scaling {scaling!r} is not supported; supported: none, linear, llama3")
    return hf


def _short(value) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 40 else text[:37] + "..."


def llama3_from_rope_freqs(factors: torch.Tensor, hf: dict, where: str) -> dict | None:
    """llama3 rope scaling that reproduces llama.cpp's rope_freqs tensor (its per-frequency factors).

    The file keeps only the factors: low/high_freq_factor are taken as Llama-3's 1 and 4, `factor` is the
    largest factor, and original_max_position_embeddings is solved from the blended band (or, when the
    band is empty, the first power of two that fits); refused unless the result reproduces every factor.
    """
    dim, base = hf["head_dim"], hf["rope_theta"]
    factor = float(factors.max())
    if factor == 1.0:
        return None
    wavelens = [2 * math.pi / float(f) for f in 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))]
    lo, hi = 1.0, 4.0
    solved = [round((lo + (hi - lo) * (1 / float(f) - 1 / factor) / (1 - 1 / factor)) * w)
              for f, w in zip(factors, wavelens) if 1.0 < float(f) < factor]
    candidates = ([sorted(solved)[len(solved) // 2]] if solved else []) + [8192] + [2**k for k in range(4, 24)]
    for old in candidates:
        want = []
        for w in wavelens:
            if w < old / hi:
                want.append(1.0)
            elif w > old / lo:
                want.append(factor)
            else:
                smooth = (old / w - lo) / (hi - lo)
                want.append(1 / ((1 - smooth) / factor + smooth))
        if factors.shape == (dim // 2,) and torch.allclose(factors, torch.tensor(want), rtol=1e-5, atol=0):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": lo, "high_freq_factor": hi,
                    "original_max_position_embeddings": old}
    raise ConfigError(f"{where}: {ROPE_FREQS} holds rope factors that no llama3 scaling with low/high_freq_factor "
                      f"1/4 and factor {factor:g} reproduces; not supported")
