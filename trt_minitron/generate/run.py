"""The `generate` command's logic: tokenize prompts, run one backend, print completions (optionally streamed)."""

from __future__ import annotations

from typing import TextIO

from ..backends import open_backend
from ..backends.base import Generation, Sampling
from ..errors import ConfigError
from ..options import GenerateOptions


def encode(tokenizer, text: str, chat: bool) -> list[int]:
    """Prompt ids: the chat template when asked (it writes its own special tokens), else the tokenizer default."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("--chat: this tokenizer has no chat template")
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


class _Printer:
    """Streams one row's text: decodes all tokens so far and prints what is new (keeps multi-byte chars whole)."""

    def __init__(self, tokenizer, out: TextIO):
        self.tokenizer, self.out, self.tokens, self.shown = tokenizer, out, [], ""

    def __call__(self, row: int, token: int) -> None:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # an incomplete UTF-8 sequence: wait for the next token
        self.out.write(text[len(self.shown):])
        self.out.flush()
        self.shown = text


def _summary(g: Generation) -> str:
    speed = g.num_tokens / g.batch_latency_s if g.batch_latency_s > 0 else float("nan")
    ttft = f", first token {g.ttft_s:.3f} s" if g.ttft_s is not None else ""
    return f"[{g.prompt_tokens} prompt tokens, {g.num_tokens} generated ({g.finish_reason}), " \
           f"{g.batch_latency_s:.3f} s, {speed:.1f} tokens/s{ttft}]"


def run_generate(opts: GenerateOptions, out: TextIO) -> list[Generation]:
    """Entry point of `trt-minitron generate`: returns the generations (empty on MPI ranks other than 0)."""
    opts.validate()
    sampling = Sampling(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_k=opts.top_k,
                        top_p=opts.top_p, num_beams=opts.num_beams, seed=opts.seed)
    backend = open_backend(opts.backend)
    try:
        ids = [encode(backend.tokenizer, p, opts.chat) for p in opts.prompts]
        gens: list[Generation] = []
        if opts.stream:
            if sampling.num_beams != 1:
                raise ConfigError("--stream needs --num-beams 1")
            for text, p in zip(opts.prompts, ids):
                if backend.is_main:
                    out.write(f"### {text}\n")
                printer = _Printer(backend.tokenizer, out)
                g = backend.generate([p], sampling, on_token=printer if backend.is_main else None)
                if backend.is_main:
                    out.write(f"\n{_summary(g[0])}\n\n")
                gens += g
        else:
            gens = backend.generate(ids, sampling)
            for text, g in zip(opts.prompts, gens):
                out.write(f"### {text}\n{g.text}\n{_summary(g)}\n\n")
        return gens
    finally:
        backend.close()
