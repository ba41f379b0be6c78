"""`trt-minitron summarize`: CNN/DailyMail ROUGE + speed for one or more backends."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from ..options import BackendSpec, SummarizeOptions, Timeouts
from . import KV_FRACTION, PP_SIZE, REQUEST_TIMEOUT, TP_SIZE

_D, _B = SummarizeOptions, BackendSpec  # defaults live on the options classes only


def rich_progress():
    """A rich progress bar on stderr (stdout stays clean Markdown); returns (factory, stop); `stop(erase=True)`
    clears the bar, so that an error stays the only line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True))
    bar.start()

    def factory(desc: str, total: int):
        task = bar.add_task(desc, total=total)
        return lambda n: bar.advance(task, n)

    def stop(erase: bool = False) -> None:
        bar.live.transient = erase
        bar.stop()

    return factory, stop


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
                                          "trtllm ENGINE_DIR_OR_HF_DIR | hf HF_DIR_OR_GGUF | torch TRT_CKPT | openai URL"),
        dataset_file: Optional[Path] = typer.Option(_D.dataset_file, "--dataset-file", help="jsonl/json/parquet with "
                                                    "'article' and 'highlights' (default: hub CNN/DailyMail 3.0.0 test)"),
        dataset_cache_dir: Optional[str] = typer.Option(_D.dataset_cache_dir, "--dataset-cache-dir"),
        num_samples: int = typer.Option(_D.num_samples, "--num-samples"),
        batch_size: int = typer.Option(_D.batch_size, "--batch-size"),
        max_input_len: int = typer.Option(_D.max_input_len, "--max-input-len"),
        output_len: int = typer.Option(_D.output_len, "--output-len"),
        num_beams: int = typer.Option(_D.num_beams, "--num-beams"),
        temperature: float = typer.Option(_D.temperature, "--temperature", help="0 = greedy"),
        top_k: int = typer.Option(_D.top_k, "--top-k"),
        top_p: float = typer.Option(_D.top_p, "--top-p"),
        seed: int = typer.Option(_D.seed, "--seed"),
        prompt_template: str = typer.Option(_D.prompt_template, "--prompt-template",
                                            help="text with {article}, or 'chat' for the tokenizer's chat template"),
        no_add_special_tokens: bool = typer.Option(not _D.add_special_tokens, "--no-add-special-tokens"),
        tokenizer: Optional[str] = typer.Option(_B.tokenizer, "--tokenizer", help="tokenizer folder (trtllm engines)"),
        device: str = typer.Option(_B.device, "--device"),
        dtype: str = typer.Option(_B.dtype, "--dtype", help="hf/torch: auto (fp32 CPU, bf16 GPU) | float32 | "
                                  "bfloat16 | float16"),
        no_warmup: bool = typer.Option(not _D.warmup, "--no-warmup"),
        check_accuracy: bool = typer.Option(_D.check_accuracy, "--check-accuracy"),
        rouge1_threshold: float = typer.Option(_D.rouge1_threshold, "--rouge1-threshold"),
        max_rouge_drop: Optional[float] = typer.Option(_D.max_rouge_drop, "--max-rouge-drop", help="fail when the 2nd backend's "
                                                       "rouge1 is significantly (95%) more than D below the 1st"),
        report: Optional[Path] = typer.Option(_D.report, "--report", help="write the JSON report here"),
        overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="replace an existing --report that "
                                       "trt-minitron did not write (one it wrote is replaced anyway)"),
        concurrency: int = typer.Option(_D.concurrency, "--concurrency", help="openai: requests in flight"),
        served_model: Optional[str] = typer.Option(_B.served_model, "--served-model", help="openai: model name to request "
                                                   "(default: the only one the server's /v1/models lists)"),
        request_timeout: Optional[str] = REQUEST_TIMEOUT,
        tp_size: Optional[int] = TP_SIZE,
        pp_size: Optional[int] = PP_SIZE,
        kv_cache_free_gpu_memory_fraction: Optional[float] = KV_FRACTION,
    ) -> None:
        """Summarize CNN/DailyMail articles, score ROUGE, time batches, compare backends."""
        from ..summarize.run import AccuracyCheckFailed, markdown, run_summarize

        opts = SummarizeOptions(
            backends=parse_backends(backend, model, device=device, dtype=dtype, tokenizer=tokenizer,
                                    max_batch_size=batch_size, max_input_len=max_input_len,
                                    max_output_len=output_len, max_beam_width=num_beams,
                                    concurrency=concurrency, served_model=served_model, tp_size=tp_size,
                                    pp_size=pp_size, kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction,
                                    request_timeout=Timeouts.parse(request_timeout)),
            dataset_file=dataset_file, dataset_cache_dir=dataset_cache_dir, num_samples=num_samples,
            batch_size=batch_size, max_input_len=max_input_len, output_len=output_len, num_beams=num_beams,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, prompt_template=prompt_template,
            add_special_tokens=not no_add_special_tokens, warmup=not no_warmup, check_accuracy=check_accuracy,
            rouge1_threshold=rouge1_threshold, max_rouge_drop=max_rouge_drop, report=report, overwrite=overwrite,
            concurrency=concurrency)
        opts.validate()
        factory, stop = rich_progress()
        try:
            result = run_summarize(opts, progress_factory=factory)
        except BaseException:
            stop(erase=True)
            raise
        stop()
        if result is None:
            return  # MPI rank != 0
        print(markdown(result))
        if result["checks"]["failures"]:
            raise AccuracyCheckFailed("; ".join(result["checks"]["failures"]))
