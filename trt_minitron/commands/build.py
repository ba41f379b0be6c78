"""`trt-minitron build CKPT --output ENGINE_DIR`: TensorRT-LLM checkpoint -> engines (or --dry-run: a JSON plan)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..options import BuildOptions

_D = BuildOptions  # defaults live on the options dataclass only


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        checkpoint: Path = typer.Argument(..., help="TensorRT-LLM checkpoint folder (config.json + rank*.safetensors)."),
        output: Path | None = typer.Option(_D.output, "--output", "-o", help="Engine folder to create."),
        max_batch_size: int = typer.Option(_D.max_batch_size, help="Largest batch the engine schedules."),
        max_input_len: int = typer.Option(_D.max_input_len, help="Longest prompt, in tokens."),
        max_seq_len: int = typer.Option(_D.max_seq_len, help="Longest prompt + output, in tokens."),
        max_num_tokens: int = typer.Option(_D.max_num_tokens, help="Most tokens in one packed forward pass."),
        max_beam_width: int = typer.Option(_D.max_beam_width, help="Beams for beam search (1 = greedy/sampling)."),
        gpt_attention_plugin: str = typer.Option(_D.gpt_attention_plugin, help="auto (= checkpoint dtype) | "
                                                 "bfloat16 | float16 | float32; an explicit dtype must match "
                                                 "the checkpoint."),
        gemm_plugin: str = typer.Option(_D.gemm_plugin, help="auto (= checkpoint dtype) | bfloat16 | float16 | "
                                        "float32 | disable | fp8 (FP8 checkpoints only)."),
        workers: int = typer.Option(_D.workers, help="Ranks built in parallel (separate processes)."),
        overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="Replace an existing --output folder."),
        dry_run: bool = typer.Option(_D.dry_run, "--dry-run", help="Validate and print the BuildConfig and memory plan "
                                     "as JSON; needs no TensorRT-LLM, GPU or rank files."),
        gpu_memory: float | None = typer.Option(_D.gpu_memory_gib, "--gpu-memory", help="GPU memory per rank in GiB for the "
                                                   "plan (default: the local GPU's, else 80)."),
    ) -> None:
        """Build TensorRT-LLM engines (in the checkpoint dtype) with paged KV cache, packed input and context FMHA.
        Engines need TensorRT-LLM 1.2.x; on 1.3+ (no engine path) use `export/quantize --format hf` and `serve`."""
        from ..build import run as impl

        opts = BuildOptions(
            checkpoint=checkpoint, output=output, max_batch_size=max_batch_size, max_input_len=max_input_len,
            max_seq_len=max_seq_len, max_num_tokens=max_num_tokens, max_beam_width=max_beam_width,
            gpt_attention_plugin=gpt_attention_plugin, gemm_plugin=gemm_plugin, workers=workers,
            overwrite=overwrite, dry_run=dry_run, gpu_memory_gib=gpu_memory,
        )
        if dry_run:
            print(json.dumps(impl.dry_run(opts), indent=2))
        else:
            out = impl.build(opts)
            typer.echo(f"engines written to {out}", err=True)
