"""Generation backends behind one protocol (base.Backend): trtllm (an engine, or an HF folder through the LLM API:
trtllm_llmapi.py), hf (transformers), torch (reference), openai (an OpenAI-compatible server, by URL, through
openai_client.py, which bench shares).

Importing this package imports no torch: each backend module is imported when a spec asks for it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..options import BackendSpec

if TYPE_CHECKING:
    from .base import Backend


def open_backend(spec: BackendSpec) -> Backend:
    """Load the model behind a spec (imports the heavy module only for the chosen kind)."""
    spec.validate()
    if spec.kind == "hf":
        from .hf import HFBackend
        return HFBackend(spec.model, device=spec.device, dtype=spec.dtype, tokenizer=spec.tokenizer)
    if spec.kind == "openai":
        from .openai import OpenAIBackend
        return OpenAIBackend(spec.model, served_model=spec.served_model, tokenizer=spec.tokenizer,
                             concurrency=spec.concurrency, timeouts=spec.request_timeout)
    if spec.kind == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(spec.model, device=spec.device, dtype=spec.dtype, tokenizer=spec.tokenizer)
    from ..trtllm.folders import model_kind

    if model_kind(Path(spec.model)) == "hf":  # TensorRT-LLM's LLM API (PyTorch backend); engines below
        from .trtllm_llmapi import LlmApiBackend
        return LlmApiBackend(spec)
    given = [f"--{n.replace('_', '-')}" for n in ("tp_size", "pp_size", "kv_cache_free_gpu_memory_fraction")
             if getattr(spec, n) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to Hugging Face folders; the engine {spec.model} carries its own "
                          "parallelism and KV-cache settings (set them at build time)")
    from .trtllm import TrtllmBackend
    return TrtllmBackend(spec.model, tokenizer=spec.tokenizer, max_batch_size=spec.max_batch_size,
                         max_input_len=spec.max_input_len, max_output_len=spec.max_output_len,
                         max_beam_width=spec.max_beam_width)
