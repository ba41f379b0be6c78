"""transformers models for calibration, built from trt-minitron's ModelConfig and filled from any Source.

transformers never reads the source's config.json (which may lack `model_type`, or not exist: .nemo, GGUF):
its config comes from our ModelConfig (`to_hf`, model_type from the architecture registry), and weights come
from the Source tensor by tensor, under their Hugging Face names.

Two shapes. The whole model (`quantize --whole-model`). And a one-layer shell: the architecture's CausalLM
with num_hidden_layers=1 holding one decoder layer of the source, with a tiny zero embedding and lm_head
(SHELL_VOCAB rows). ModelOpt's `quantize` and its exporters run on the shell unchanged, so a layer is
calibrated and exported by the same code as inside the whole model (tests/test_quant_layerwise.py compares
the two tensor for tensor).
"""

from __future__ import annotations

import torch

from ..archs import get_arch
from ..archs.config import ModelConfig
from ..sources.base import Source

SHELL_VOCAB = 512  # the shell's embedding rows: enough for ModelOpt's exporters, a multiple of 64 (no AWQ padding)
ATTENTION = "sdpa"  # transformers' default, as from_pretrained chose before quantize built models itself
EMBED_BLOCK_BYTES = 64 << 20  # embedding rows are read in blocks of at most this many bytes


def calibration_dtype(device: str) -> torch.dtype:
    """float32 on CPU (no bfloat16 matmul rounding in the calibrated ranges), bfloat16 on CUDA."""
    return torch.bfloat16 if device == "cuda" else torch.float32


def hf_config(cfg: ModelConfig, **overrides):
    """The architecture's transformers config for `cfg` (plus `overrides`), with `architectures` set
    (ModelOpt's unified exporter needs it) and sdpa attention."""
    hf = {**cfg.to_hf(), **overrides}
    architectures = hf.pop("architectures")
    hf.pop("model_type")  # the config class states its own
    config = get_arch(cfg.architecture).transformers_modules().config(**hf)
    config.architectures = architectures
    config._attn_implementation = ATTENTION
    return config


def _on_device(model: torch.nn.Module, config, device: str) -> None:
    """Rebuild the rotary embedding (its buffers are computed, not loaded) and check nothing is left on meta."""
    modules = get_arch(config.architectures[0]).transformers_modules()
    model.model.rotary_emb = modules.rotary(config=config).to(device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors never loaded: {left[:5]}")


def load_whole_model(source: Source, device: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The whole model, every weight from `source` in `dtype` (default: calibration_dtype). Memory: the whole model."""
    cfg = source.config
    dtype = dtype or calibration_dtype(device)
    config = hf_config(cfg)
    with torch.device("meta"):
        model = get_arch(cfg.architecture).transformers_modules().causal_lm(config)
    names = get_arch(cfg.architecture).hf_tensors(cfg)
    model.load_state_dict({n: source.read(n).to(device=device, dtype=dtype) for n in names}, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    _on_device(model, config, device)
    return model.eval()


def layer_shell(source: Source, layer: int, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A one-layer CausalLM whose `model.layers[0]` holds decoder layer `layer` of `source` in `dtype`.

    Memory: that layer, plus SHELL_VOCAB x hidden zeros for its embedding and lm_head."""
    cfg = source.config
    config = hf_config(cfg, num_hidden_layers=1, vocab_size=SHELL_VOCAB, tie_word_embeddings=False)
    with torch.device("meta"):
        shell = get_arch(cfg.architecture).transformers_modules().causal_lm(config)
    pre = f"model.layers.{layer}."
    state = {f"model.layers.0.{n}": source.read(pre + n).to(device=device, dtype=dtype)
             for n in shell.model.layers[0].state_dict()}
    for name, t in shell.state_dict().items():
        if not name.startswith("model.layers."):  # the shell's own embedding, final norm, lm_head
            state[name] = torch.zeros(t.shape, device=device, dtype=dtype)
    shell.load_state_dict(state, assign=True)
    _on_device(shell, config, device)
    return shell.eval()


def embedding_rows(source: Source, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """model.embed_tokens(ids) in `dtype` ([*ids.shape, hidden]), reading only the row blocks that hold an id."""
    name = get_arch(source.config.architecture).embedding
    info = source.tensors()[name]
    rows, hidden = info.shape
    step = max(1, EMBED_BLOCK_BYTES // max(1, info.nbytes // rows))
    flat = ids.reshape(-1)
    out = torch.empty(flat.numel(), hidden, dtype=dtype)
    for start in range(0, rows, step):
        hit = (flat >= start) & (flat < start + step)
        if hit.any():
            block = source.read(name, 0, start, min(rows, start + step))
            out[hit] = block[flat[hit] - start].to(dtype)
    return out.reshape(*ids.shape, hidden)
