"""`trt-minitron generate`: prompts in, completions out, through any backend."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ..options import BackendSpec, GenerateOptions, Timeouts
from . import KV_FRACTION, PP_SIZE, REQUEST_TIMEOUT, TP_SIZE

_B, _G = BackendSpec, GenerateOptions  # defaults live on the options classes only


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        backend: str = typer.Option(..., "--backend", metavar="KIND", help="trtllm | hf | torch | openai"),
        model: str = typer.Argument(..., metavar="MODEL", help="trtllm ENGINE_DIR_OR_HF_DIR | hf HF_DIR_OR_GGUF | "
                                    "torch TRT_CKPT | openai http://HOST:PORT/v1"),
        prompt: List[str] = typer.Option(..., "--prompt", help="repeat for a batch"),
        max_new_tokens: int = typer.Option(_G.max_new_tokens, "--max-new-tokens"),
        temperature: float = typer.Option(_G.temperature, "--temperature", help="0 = greedy"),
        top_k: int = typer.Option(_G.top_k, "--top-k"),
        top_p: float = typer.Option(_G.top_p, "--top-p"),
        num_beams: int = typer.Option(_G.num_beams, "--num-beams"),
        seed: int = typer.Option(_G.seed, "--seed"),
        stream: bool = typer.Option(_G.stream, "--stream", help="print tokens as they come (one prompt at a time)"),
        chat: bool = typer.Option(_G.chat, "--chat", help="wrap each prompt in the tokenizer's chat template"),
        tokenizer: Optional[str] = typer.Option(_B.tokenizer, "--tokenizer", help="tokenizer folder (trtllm engines)"),
        device: str = typer.Option(_B.device, "--device"),
        dtype: str = typer.Option(_B.dtype, "--dtype"),
        served_model: Optional[str] = typer.Option(_B.served_model, "--served-model", help="openai: model name to request"),
        request_timeout: Optional[str] = REQUEST_TIMEOUT,
        tp_size: Optional[int] = TP_SIZE,
        pp_size: Optional[int] = PP_SIZE,
        kv_cache_free_gpu_memory_fraction: Optional[float] = KV_FRACTION,
    ) -> None:
        """Generate completions for --prompt texts and print them with token counts and speed."""
        from ..generate.run import run_generate

        opts = GenerateOptions(
            backend=BackendSpec(kind=backend, model=model, device=device, dtype=dtype, tokenizer=tokenizer,
                                max_batch_size=max(len(prompt), 1), max_output_len=max_new_tokens,
                                max_beam_width=num_beams, served_model=served_model, tp_size=tp_size, pp_size=pp_size,
                                kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction,
                                request_timeout=Timeouts.parse(request_timeout)),
            prompts=tuple(prompt), chat=chat, stream=stream, max_new_tokens=max_new_tokens,
            temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams, seed=seed)
        run_generate(opts, out=sys.stdout)
