"""`trt-minitron verify`."""

from pathlib import Path

import typer

from ..verify import run_verify


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        ckpt: Path = typer.Argument(..., help="TensorRT-LLM checkpoint folder written by export"),
        reference: str = typer.Option(..., "--reference", help="the source: HF folder, .gguf, .nemo or hub id"),
        atol: float = typer.Option(None, "--atol", help="max |delta logit| allowed "
                                   "(default by checkpoint dtype: float32 1e-3, float16 0.25, bfloat16 0.5)"),
        prompt: str = typer.Option(None, "--prompt", help="text to run (default: a fixed English paragraph)"),
    ) -> None:
        """Prove the checkpoint computes what the source computes: logits on the same tokens, float32."""
        result = run_verify(ckpt, reference, atol=atol, prompt=prompt)
        print(result.summary())
        if not result.ok:
            raise typer.Exit(1)
