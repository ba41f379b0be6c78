"""`trt-minitron generate`: prompts in, completions out, through any backend."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ..backends import BackendSpec, Sampling
from ..backends.generate import GenerateOptions, run_generate


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        backend: str = typer.Option(..., "--backend", metavar="KIND", help="trtllm | hf | torch | openai"),
        model: str = typer.Argument(..., metavar="MODEL", help="trtllm ENGINE_DIR | hf HF_DIR_OR_GGUF | "
                                    "torch TRT_CKPT | openai http://HOST:PORT/v1"),
        prompt: List[str] = typer.Option(..., "--prompt", help="repeat for a batch"),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
        top_k: int = typer.Option(0, "--top-k"),
        top_p: float = typer.Option(1.0, "--top-p"),
        num_beams: int = typer.Option(1, "--num-beams"),
        seed: int = typer.Option(0, "--seed"),
        stream: bool = typer.Option(False, "--stream", help="print tokens as they come (one prompt at a time)"),
        chat: bool = typer.Option(False, "--chat", help="wrap each prompt in the tokenizer's chat template"),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer folder (trtllm engines)"),
        device: str = typer.Option("auto", "--device"),
        dtype: str = typer.Option("auto", "--dtype"),
        served_model: Optional[str] = typer.Option(None, "--served-model", help="openai: model name to request"),
    ) -> None:
        """Generate completions for --prompt texts and print them with token counts and speed."""
        opts = GenerateOptions(
            backend=BackendSpec(kind=backend, model=model, device=device, dtype=dtype, tokenizer=tokenizer,
                                max_batch_size=max(len(prompt), 1), max_output_len=max_new_tokens,
                                max_beam_width=num_beams, served_model=served_model),
            prompts=tuple(prompt), chat=chat, stream=stream,
            sampling=Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              num_beams=num_beams, seed=seed))
        run_generate(opts, out=sys.stdout)
