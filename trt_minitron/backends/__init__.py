"""Generation backends behind one protocol (base.Backend): trtllm (engine), hf (transformers), torch (reference),
openai (an OpenAI-compatible server, by URL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .base import Backend, Generation, Sampling

BACKENDS = ("trtllm", "hf", "torch", "openai")
__all__ = ["BACKENDS", "Backend", "BackendSpec", "Generation", "Sampling", "open_backend"]


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """One `--backend KIND MODEL` pair plus the settings every backend may need."""

    kind: str
    model: str
    device: str = "auto"
    dtype: str = "auto"
    tokenizer: str | None = None
    # trtllm runtime limits (ModelRunnerCpp.from_dir); ignored by hf/torch.
    max_batch_size: int = 8
    max_input_len: int | None = None  # None: the engine's own limit
    max_output_len: int = 100
    max_beam_width: int = 1
    # openai: MODEL is the server URL; the name it serves (default: the only one /v1/models lists).
    served_model: str | None = None
    concurrency: int = 1  # openai: requests in flight

    def validate(self) -> None:
        if self.kind not in BACKENDS:
            raise ConfigError(f"unknown backend {self.kind!r}; choose one of {', '.join(BACKENDS)}")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.kind == "openai":
            from ..serving.client import normalize_url
            normalize_url(self.model)
        elif not Path(self.model).exists():
            raise ConfigError(f"{self.kind} model path {self.model} does not exist")


def open_backend(spec: BackendSpec) -> Backend:
    """Load the model behind a spec (imports the heavy module only for the chosen kind)."""
    spec.validate()
    if spec.kind == "hf":
        from .hf import HFBackend
        return HFBackend(spec.model, device=spec.device, dtype=spec.dtype, tokenizer=spec.tokenizer)
    if spec.kind == "openai":
        from .openai import OpenAIBackend
        return OpenAIBackend(spec.model, served_model=spec.served_model, tokenizer=spec.tokenizer,
                             concurrency=spec.concurrency)
    if spec.kind == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(spec.model, device=spec.device, dtype=spec.dtype, tokenizer=spec.tokenizer)
    from .trtllm import TrtllmBackend
    return TrtllmBackend(spec.model, tokenizer=spec.tokenizer, max_batch_size=spec.max_batch_size,
                         max_input_len=spec.max_input_len, max_output_len=spec.max_output_len,
                         max_beam_width=spec.max_beam_width)
