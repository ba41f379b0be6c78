"""The route the streamed GGUF reader (gguf.py) replaced: transformers dequantizes the whole file into memory.

Kept only as the baseline that tests and benchmarks/gguf_export.py compare the streamed reader against
(bit for bit in float32); nothing in the tool reads GGUF through it. Memory = the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trt_minitron.archs.config import ModelConfig
from trt_minitron.errors import CheckpointError, MissingDependencyError
from trt_minitron.sources.base import TensorInfo
from trt_minitron.tensors.info import narrow


class InMemorySource:
    """A state dict already in memory (GGUF dequantized by transformers). Memory = the model."""

    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor], description: str, tokenizer):
        self.config, self.description, self._state, self._tokenizer = config, description, state, tokenizer

    def tensors(self) -> dict[str, TensorInfo]:
        return {n: TensorInfo(tuple(t.shape), t.dtype) for n, t in self._state.items()}

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return narrow(self._state[name], dim, start, stop)

    def write_tokenizer(self, dst: Path) -> list[str]:
        before = {p.name for p in dst.iterdir()}
        self._tokenizer.save_pretrained(dst)
        return sorted({p.name for p in dst.iterdir()} - before)

    def close(self) -> None:
        self._state = {}


def open_gguf(path: Path) -> InMemorySource:
    """GGUF is block-quantized; transformers dequantizes it to float32 (needs `gguf`, `accelerate`)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise MissingDependencyError("reading .gguf needs the `gguf` package: pip install 'trt-minitron[gguf]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{path}: transformers cannot load this GGUF file ({e})") from None
    hf = model.config.to_dict()
    hf["architectures"] = [type(model).__name__]  # GGUF-derived configs carry architectures=None
    config = ModelConfig.from_hf(hf, where=str(path))
    state = {n: t for n, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # an alias of embed_tokens
    return InMemorySource(config, state, f"GGUF file {path} (dequantized to float32)", tokenizer)
