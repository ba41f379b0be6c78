"""`trt-minitron verify`."""

from pathlib import Path
from typing import Optional

import typer

from ..options import VerifyOptions

_D = VerifyOptions  # defaults live on the options dataclass only


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        ckpt: Path = typer.Argument(..., help="what export or quantize wrote: a TensorRT-LLM checkpoint, a Hugging Face "
                                    "folder (--format hf, or any save_pretrained), a ModelOpt unified checkpoint"),
        reference: str = typer.Option(..., "--reference", help="the source: HF folder, .gguf, .nemo or hub id"),
        prompt: Optional[str] = typer.Option(_D.prompt, "--prompt", help="text to run (default: a fixed ~150-token "
                                             "paragraph)"),
        full: bool = typer.Option(_D.full, "--full", help="whole models instead of layer by layer "
                                  "(memory: the whole model in float32; no localisation)"),
        dataset_file: Optional[Path] = typer.Option(_D.dataset_file, "--dataset-file", help="quantized checkpoints: "
                                                    "jsonl/json/parquet with 'article' and 'highlights' (default: "
                                                    "hub CNN/DailyMail 3.0.0 test)"),
        num_samples: int = typer.Option(_D.num_samples, "--num-samples", help="quantized checkpoints: articles"),
        max_tokens: int = typer.Option(_D.max_tokens, "--max-tokens", help="quantized checkpoints: tokens per "
                                       "article (all cut to the shortest)"),
        prove_calibration: bool = typer.Option(_D.prove_calibration, "--prove-calibration/--no-prove-calibration",
                                               help="quantized checkpoints: recalibrate the source with the recipe "
                                               "quantize recorded and compare every scale bit for bit (costs about "
                                               "the conversion check's time, ~4x for AWQ's search)"),
        max_kl: Optional[float] = typer.Option(_D.max_kl, "--max-kl", help="quantized checkpoints: FAIL when the "
                                               "mean KL divergence from the source exceeds this (nats/token)"),
        min_top1: Optional[float] = typer.Option(_D.min_top1, "--min-top1", help="quantized checkpoints: FAIL when "
                                                 "the top-1 agreement with the source is below this fraction"),
    ) -> None:
        """Prove the checkpoint computes what the source computes, once rounded to the checkpoint's dtype.

        What CKPT is comes from the folder and is said on the first line. A Hugging Face folder runs through
        transformers' own modules built from its config.json, and its tensors must be exactly those transformers
        reads. A quantized checkpoint (trt-minitron quantize, either format; a unified one's labels must match its
        tensors) is judged against ModelOpt's fake quantization of the source at the checkpoint's scales, layer by
        layer on CNN/DailyMail articles (needs ModelOpt); a TensorRT-LLM one's calibration is replayed from the
        recorded recipe and every scale compared bit for bit ("calibration proven"), or said not proven when the
        recipe's data is not here; its quantization cost against the source (KL, |delta logit|, top-1 agreement)
        is reported, and fails only NaN/Inf, a top-1 floor that only a broken model misses, or the
        --max-kl/--min-top1 gate.

        Exit 0: every layer and the logits agree within float32 noise; 1: they disagree; 2: bad input.
        """
        from ..verify.run import run_verify

        result = run_verify(VerifyOptions(checkpoint=ckpt, reference=reference, prompt=prompt, full=full,
                                          dataset_file=dataset_file, num_samples=num_samples, max_tokens=max_tokens,
                                          prove_calibration=prove_calibration, max_kl=max_kl, min_top1=min_top1))
        print(result.summary())
        if not result.ok:
            raise typer.Exit(1)
