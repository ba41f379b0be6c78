"""`trt-minitron verify`."""

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        ckpt: Path = typer.Argument(..., help="TensorRT-LLM checkpoint folder written by export"),
        reference: str = typer.Option(..., "--reference", help="the source: HF folder, .gguf, .nemo or hub id"),
        prompt: str = typer.Option(None, "--prompt", help="text to run (default: a fixed ~150-token paragraph)"),
        full: bool = typer.Option(False, "--full", help="whole models instead of layer by layer "
                                  "(memory: the whole model in float32; no localisation)"),
    ) -> None:
        """Prove the checkpoint computes what the source computes, once rounded to the checkpoint's dtype.

        Exit 0: every layer and the logits agree within float32 noise; 1: they disagree; 2: bad input.
        """
        from ..verify import run_verify

        result = run_verify(ckpt, reference, prompt=prompt, full=full)
        print(result.summary())
        if not result.ok:
            raise typer.Exit(1)
