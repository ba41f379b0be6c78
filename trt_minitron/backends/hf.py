"""`hf` backend: transformers AutoModelForCausalLM, batched with left padding.

MODEL is a Hugging Face folder or a `.gguf` file (dequantised by transformers; needs gguf).
float32 on CPU, bfloat16 on GPU unless --dtype says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..archs.config import load_json
from ..errors import ConfigError, MissingDependencyError, one_line
from .base import Clock, Generation, LocalBackend, Sampling, TokenCallback, decode, split_at_end


class _Streamer:
    """transformers streamer: put() gets the prompt first, then each step's [B] new tokens."""

    def __init__(self, clock: Clock, on_token: TokenCallback | None):
        self.clock, self.on_token, self.calls = clock, on_token, 0

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 1:
            return  # the prompt
        self.clock.first()
        if self.on_token is not None:
            for row, tok in enumerate(value.reshape(-1).tolist()):
                self.on_token(row, int(tok))

    def end(self) -> None:
        pass


def _split_gguf(model: str | Path) -> tuple[Path, str | None]:
    p = Path(model)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ConfigError(f"GGUF file {p} does not exist")
        return p.parent, p.name
    if not (p / "config.json").is_file():
        raise ConfigError(f"{p} is neither a Hugging Face model folder (no config.json) nor a .gguf file")
    cfg = load_json(p / "config.json")
    if "pretrained_config" in cfg and "build_config" in cfg:
        raise ConfigError(f"{p} is a TensorRT-LLM engine folder, not a Hugging Face model; use --backend trtllm {p}")
    if isinstance(cfg.get("architecture"), str) and "architectures" not in cfg and "model_type" not in cfg:
        raise ConfigError(f"{p} is a TensorRT-LLM checkpoint, not a Hugging Face model; use --backend torch {p} "
                          "(or the Hugging Face folder it was exported from)")
    return p, None


class HFBackend(LocalBackend):
    """transformers model; generate() pads on the left and lets transformers derive position ids."""

    name = "hf"

    def __init__(self, model: str | Path, *, device: str = "auto", dtype: str = "auto",
                 tokenizer: str | Path | None = None):
        from transformers import AutoModelForCausalLM

        folder, gguf = _split_gguf(model)
        if gguf:
            try:
                import gguf as _  # noqa: F401
            except ImportError:
                raise MissingDependencyError("loading a .gguf file needs the gguf package: "
                                             "pip install 'trt-minitron[gguf]'") from None
        self._set_up(folder, device, dtype, tokenizer, gguf)
        self.model = str(model)
        kwargs = {"gguf_file": gguf} if gguf else {}
        try:
            self.net = AutoModelForCausalLM.from_pretrained(str(folder), dtype=self.dtype, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"transformers cannot load {model}: {one_line(e, 300)}") from None
        self.net.to(self.device).eval()

    @torch.inference_mode()
    def generate(self, batch: list[list[int]], sampling: Sampling,
                 on_token: TokenCallback | None = None) -> list[Generation]:
        """Generate for a batch of token-id prompts; one Generation per prompt, in order."""
        ids, mask = self._batch(batch, sampling)
        mask = mask.long()
        if not sampling.greedy:
            torch.manual_seed(sampling.seed)
        clock = Clock(self.device)
        streamer = _Streamer(clock, on_token) if sampling.num_beams == 1 else None
        out = self.net.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=sampling.max_new_tokens,
            do_sample=not sampling.greedy, num_beams=sampling.num_beams,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_k=sampling.top_k if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None,
            eos_token_id=self.end_id, pad_token_id=self.pad_id, streamer=streamer,
        )
        latency = clock.stop()
        gens = []
        for i, row in enumerate(out[:, ids.shape[1]:].tolist()):
            toks, reason = split_at_end(row, {self.end_id}, sampling.max_new_tokens)
            gens.append(Generation(prompt_tokens=len(batch[i]), tokens=toks, text=decode(self.tokenizer, toks),
                                   finish_reason=reason, batch_latency_s=latency, ttft_s=clock.ttft))
        return gens
