"""`torch` backend: the `verify` reference model over a TensorRT-LLM checkpoint, with a KV cache.

Runs an exported checkpoint without TensorRT-LLM. Batches are left-padded; position ids count only
real tokens (as transformers derives them from the attention mask), padding keys are masked, and
each row stops at its first end token while the others go on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from .base import Clock, Generation, LocalBackend, Sampling, TokenCallback, decode, pick_next


class TorchBackend(LocalBackend):
    """ReferenceModel.forward in a prefill + one-token-per-step decode loop."""

    name = "torch"

    def __init__(self, model: str | Path, *, device: str = "auto", dtype: str = "auto",
                 tokenizer: str | Path | None = None):
        from ..archs.config import load_json
        from ..checkpoints.reference import ReferenceModel
        from ..checkpoints.trtllm import folder_kind

        ckpt = Path(model)
        if not (ckpt / "config.json").is_file():
            raise ConfigError(f"{ckpt} is not a TensorRT-LLM checkpoint (no config.json); "
                              "make one with `trt-minitron export`")
        kind = folder_kind(load_json(ckpt / "config.json"))
        if kind is not None:
            backend = "trtllm" if "engine" in kind else "hf"
            raise ConfigError(f"{ckpt} is {kind}, not a TensorRT-LLM checkpoint: use --backend {backend} {ckpt} "
                              "(the torch backend runs `trt-minitron export` output)")
        self._set_up(ckpt, device, dtype, tokenizer)
        self.net = ReferenceModel.from_checkpoint(ckpt, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def generate(self, batch: list[list[int]], sampling: Sampling,
                 on_token: TokenCallback | None = None) -> list[Generation]:
        """Greedy or sampled decode of a batch of token-id prompts; one Generation per prompt."""
        ids, mask = self._batch(batch, sampling)
        if sampling.num_beams != 1:
            raise ConfigError("the torch backend decodes with num_beams=1 only; use --backend hf or trtllm "
                              "for beam search")
        B, T = ids.shape
        gen = torch.Generator(device=self.device).manual_seed(sampling.seed) if not sampling.greedy else None
        clock = Clock(self.device)
        cache = self.net.new_cache(B, T + sampling.max_new_tokens)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self.net.forward(ids, pos, cache=cache, key_mask=mask)[:, -1]
        next_pos = pos[:, -1:] + 1
        out = torch.full((B, sampling.max_new_tokens), self.end_id, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        n_steps = 0
        for step in range(sampling.max_new_tokens):
            tok = pick_next(logits, sampling, gen)
            tok = torch.where(done, torch.full_like(tok, self.end_id), tok)
            out[:, step] = tok
            n_steps = step + 1
            if step == 0:
                clock.first()
            if on_token is not None:
                for row, (t, d) in enumerate(zip(tok.tolist(), done.tolist())):
                    if not d and t != self.end_id:
                        on_token(row, t)
            done = done | (tok == self.end_id)
            if bool(done.all()) or step + 1 == sampling.max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.bool, device=self.device)], 1)
            logits = self.net.forward(tok[:, None], next_pos, cache=cache, key_mask=mask)[:, -1]
            next_pos = next_pos + 1
        latency = clock.stop()
        gens = []
        for i, row in enumerate(out[:, :n_steps].tolist()):
            toks = row[: row.index(self.end_id)] if self.end_id in row else row
            reason = "stop" if self.end_id in row else "length"
            gens.append(Generation(prompt_tokens=len(batch[i]), tokens=toks, text=decode(self.tokenizer, toks),
                                   finish_reason=reason, batch_latency_s=latency, ttft_s=clock.ttft))
        return gens
