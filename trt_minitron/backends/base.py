"""One generation protocol for every backend (trtllm, hf, torch) and the helpers they share.

Backends take token ids, not text, so that the summarize loop tokenizes once per backend with the
backend's own tokenizer and every backend sees exactly the prompt the others see.

Token-count rule (same as TensorRT-LLM's `sequence_lengths - input_length`): the generated tokens
of a row are those before its first end token; the end token and the padding after it are not
counted and not returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch

from ..errors import ConfigError
from ..options import check_sampling

TokenCallback = Callable[[int, int], None]  # (row, token id), called as tokens are produced


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """Decoding settings of one generate() call; greedy unless temperature > 0 (TensorRT-LLM's top_k=1 default is
    greedy too). Built from the command's options (generate: GenerateOptions, summarize: SummarizeOptions)."""

    max_new_tokens: int = 100
    temperature: float = 0.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.num_beams == 1 and (self.temperature <= 0.0 or self.top_k == 1)

    def validate(self) -> None:
        """Reject settings no backend can honour."""
        check_sampling(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, temperature=self.temperature,
                       top_p=self.top_p, top_k=self.top_k)


@dataclass(kw_only=True)
class Generation:
    """One generated sequence (beam 0) with the timing of the batch it was generated in."""

    prompt_tokens: int
    tokens: list[int]  # generated ids, end token and padding excluded
    text: str
    finish_reason: str  # "stop" (end token) or "length" (max_new_tokens reached)
    batch_latency_s: float = 0.0  # wall time of the whole generate() call, device synchronised
    ttft_s: float | None = None  # time to first token of the batch, when the backend can tell
    extra: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)


@runtime_checkable
class Backend(Protocol):
    """What summarize/generate need from a backend."""

    name: str  # "hf", "torch" or "trtllm"
    model: str  # the path it was opened from
    tokenizer: object  # a transformers tokenizer, left padding and left truncation
    end_id: int
    pad_id: int
    is_main: bool  # False on MPI ranks other than 0: they take part in generate() but report nothing

    def generate(self, batch: list[list[int]], sampling: Sampling,
                 on_token: TokenCallback | None = None) -> list[Generation]: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> float32 on CPU, bfloat16 on GPU."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise ConfigError(f"unknown dtype {dtype!r}; choose auto, {', '.join(table)}")
    return table[dtype]


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so that a clock read after it is meaningful."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_tokenizer(path: str | Path, gguf_file: str | None = None):
    """A transformers tokenizer set up as summarize.py does: left padding, left truncation, pad = eos if unset."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:  # pragma: no cover - transformers is a hard dependency
        raise ConfigError(f"transformers is needed to load a tokenizer: {e}") from None
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from {path}: {e}; pass --tokenizer DIR with "
                          "tokenizer.json/tokenizer_config.json (or tokenizer.model)") from None
    tok.padding_side = "left"
    tok.truncation_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ConfigError(f"the tokenizer in {path} defines no eos token; generation could not stop")
    return tok


def split_at_end(row: list[int], end_ids: set[int], max_new_tokens: int) -> tuple[list[int], str]:
    """Generated ids up to (excluding) the first end token, and why generation stopped."""
    for i, t in enumerate(row):
        if t in end_ids:
            return row[:i], "stop"
    row = row[:max_new_tokens]
    return row, "length"


def decode(tokenizer, tokens: list[int]) -> str:
    """Text of generated ids, special tokens dropped (as summarize.py decodes)."""
    return tokenizer.decode(tokens, skip_special_tokens=True)


def left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids left-padded with pad_id, and the [B, T] bool mask of real tokens."""
    if not batch or any(len(r) == 0 for r in batch):
        raise ConfigError("every prompt must have at least one token")
    width = max(len(r) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, r in enumerate(batch):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = True
    return ids, mask


def pick_next(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from [B, vocab] logits: argmax when greedy, else temperature/top-k/top-p sampling."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= sampling.top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class LocalBackend:
    """What the in-process backends (hf, torch) share: device, dtype, tokenizer, end and pad ids, the padded batch
    on the device. A subclass calls `_set_up`, then loads its model into `self.net`."""

    is_main = True

    def _set_up(self, model: str | Path, device: str, dtype: str, tokenizer: str | Path | None,
                gguf_file: str | None = None) -> None:
        self.model = str(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = load_tokenizer(tokenizer or Path(model), None if tokenizer else gguf_file)
        self.end_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)

    def _batch(self, batch: list[list[int]], sampling: Sampling) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts left-padded on the device, and the mask of real tokens (settings checked first)."""
        sampling.validate()
        ids, mask = left_pad(batch, self.pad_id)
        return ids.to(self.device), mask.to(self.device)

    def synchronize(self) -> None:
        synchronize(self.device)

    def close(self) -> None:
        del self.net


class Clock:
    """perf_counter after a device synchronise; first() records time to first token once."""

    def __init__(self, device: torch.device):
        self.device = device
        synchronize(device)
        self.t0 = time.perf_counter()
        self.ttft: float | None = None

    def first(self) -> None:
        if self.ttft is None:
            synchronize(self.device)
            self.ttft = time.perf_counter() - self.t0

    def stop(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self.t0
