"""`trt-minitron summarize`: CNN/DailyMail ROUGE + speed for one or more backends."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..backends import BackendSpec
from ..data import DEFAULT_TEMPLATE
from ..errors import ConfigError
from ..summarize import AccuracyCheckFailed, SummarizeOptions, markdown, run_summarize


def rich_progress():
    """A rich progress bar on stderr (stdout stays clean Markdown); returns (factory, stop)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True))
    bar.start()

    def factory(desc: str, total: int):
        task = bar.add_task(desc, total=total)
        return lambda n: bar.advance(task, n)

    return factory, bar.stop


def parse_backends(kinds: list[str], models: list[str], **common) -> tuple[BackendSpec, ...]:
    """`--backend KIND MODEL` pairs (click collects kinds and models separately, in order) -> specs."""
    if len(kinds) != len(models):
        raise ConfigError(f"each --backend KIND needs one MODEL after it: got {len(kinds)} backend(s) "
                          f"{kinds} and {len(models)} model path(s) {models}")
    return tuple(BackendSpec(kind=k, model=m, **common) for k, m in zip(kinds, models))


def register(app: typer.Typer) -> None:
    @app.command("summarize")
    def summarize(
        backend: List[str] = typer.Option(..., "--backend", metavar="KIND",
                                          help="trtllm | hf | torch | openai, each followed by its MODEL; repeat "
                                          "`--backend KIND MODEL` to compare (the first is the baseline)"),
        model: List[str] = typer.Argument(..., metavar="MODEL...", help="one per --backend, in order: "
                                          "trtllm ENGINE_DIR | hf HF_DIR_OR_GGUF | torch TRT_CKPT | openai URL"),
        dataset_file: Optional[Path] = typer.Option(None, "--dataset-file", help="jsonl/json/parquet with "
                                                    "'article' and 'highlights' (default: hub CNN/DailyMail 3.0.0 test)"),
        dataset_cache_dir: Optional[str] = typer.Option(None, "--dataset-cache-dir"),
        num_samples: int = typer.Option(20, "--num-samples"),
        batch_size: int = typer.Option(1, "--batch-size"),
        max_input_len: int = typer.Option(923, "--max-input-len"),
        output_len: int = typer.Option(100, "--output-len"),
        num_beams: int = typer.Option(1, "--num-beams"),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
        top_k: int = typer.Option(0, "--top-k"),
        top_p: float = typer.Option(1.0, "--top-p"),
        seed: int = typer.Option(0, "--seed"),
        prompt_template: str = typer.Option(DEFAULT_TEMPLATE, "--prompt-template",
                                            help="text with {article}, or 'chat' for the tokenizer's chat template"),
        no_add_special_tokens: bool = typer.Option(False, "--no-add-special-tokens"),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer folder (trtllm engines)"),
        device: str = typer.Option("auto", "--device"),
        dtype: str = typer.Option("auto", "--dtype", help="hf/torch: auto (fp32 CPU, bf16 GPU) | float32 | "
                                  "bfloat16 | float16"),
        no_warmup: bool = typer.Option(False, "--no-warmup"),
        check_accuracy: bool = typer.Option(False, "--check-accuracy"),
        rouge1_threshold: float = typer.Option(15.0, "--rouge1-threshold"),
        max_rouge_drop: Optional[float] = typer.Option(None, "--max-rouge-drop", help="fail when the 2nd backend's "
                                                       "rouge1 is significantly (95%) more than D below the 1st"),
        report: Optional[Path] = typer.Option(None, "--report", help="write the JSON report here"),
        concurrency: int = typer.Option(1, "--concurrency", help="openai: requests in flight"),
        served_model: Optional[str] = typer.Option(None, "--served-model", help="openai: model name to request "
                                                   "(default: the only one the server's /v1/models lists)"),
    ) -> None:
        """Summarize CNN/DailyMail articles, score ROUGE, time batches, compare backends."""
        opts = SummarizeOptions(
            backends=parse_backends(backend, model, device=device, dtype=dtype, tokenizer=tokenizer,
                                    max_batch_size=batch_size, max_input_len=max_input_len,
                                    max_output_len=output_len, max_beam_width=num_beams,
                                    concurrency=concurrency, served_model=served_model),
            dataset_file=dataset_file, dataset_cache_dir=dataset_cache_dir, num_samples=num_samples,
            batch_size=batch_size, max_input_len=max_input_len, output_len=output_len, num_beams=num_beams,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, prompt_template=prompt_template,
            add_special_tokens=not no_add_special_tokens, warmup=not no_warmup, check_accuracy=check_accuracy,
            rouge1_threshold=rouge1_threshold, max_rouge_drop=max_rouge_drop, report=report, concurrency=concurrency)
        opts.validate()
        factory, stop = rich_progress()
        try:
            result = run_summarize(opts, progress_factory=factory)
        finally:
            stop()
        if result is None:
            return  # MPI rank != 0
        print(markdown(result))
        if result["checks"]["failures"]:
            raise AccuracyCheckFailed("; ".join(result["checks"]["failures"]))
