"""`trt-minitron bench URL`: load an OpenAI-compatible server, report latency, throughput, goodput and ROUGE."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from ..errors import ConfigError
from ..options import TIMEOUT_HELP, BenchOptions, Timeouts, parse_slo

_D = BenchOptions  # defaults live on the options dataclass only


def parse_list(text: str | None, cast: Callable, flag: str) -> tuple:
    """'1,2,4' -> (1, 2, 4); None -> ()."""
    if not text:
        return ()
    try:
        return tuple(cast(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 1,2,4") from None


def live_progress():
    """A rich display on stderr, one bar per sweep point with its failures; returns (factory, stop);
    `stop(erase=True)` clears it, so that an error stays the only line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), console=Console(stderr=True))
    started = []

    def factory(label: str, total: int):
        if not started:  # only once the sweep runs: an early error stays one line
            bar.start()
            started.append(True)
        task = bar.add_task(label, total=total, failed=0)
        failed = [0]

        def on_end(rec) -> None:
            failed[0] += not rec.ok
            bar.update(task, advance=1, failed=failed[0])

        return on_end

    def stop(erase: bool = False) -> None:
        if started:
            bar.live.transient = erase
            bar.stop()

    return factory, stop


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        url: str = typer.Argument(..., metavar="URL", help="the server, http://HOST:PORT/v1"),
        served_model: Optional[str] = typer.Option(_D.served_model, "--served-model", help="model name to request (default: "
                                                   "the only one /v1/models lists)"),
        tokenizer: Optional[str] = typer.Option(_D.tokenizer, "--tokenizer", help="tokenizer folder (default: the served "
                                                "model's name when it is a local folder)"),
        api: str = typer.Option(_D.api, "--api", help="completions | chat"),
        dataset: str = typer.Option(_D.dataset, "--dataset", help="cnn_dailymail (scored with ROUGE) | random"),
        dataset_file: Optional[Path] = typer.Option(_D.dataset_file, "--dataset-file", help="jsonl/json/parquet with 'article' "
                                                    "and 'highlights' (default: hub CNN/DailyMail 3.0.0 test)"),
        dataset_cache_dir: Optional[str] = typer.Option(_D.dataset_cache_dir, "--dataset-cache-dir"),
        num_requests: int = typer.Option(_D.num_requests, "--num-requests", help="requests per sweep point"),
        input_len: int = typer.Option(_D.input_len, "--input-len", help="cnn_dailymail: prompt token budget; "
                                      "random: prompt tokens"),
        output_len: int = typer.Option(_D.output_len, "--output-len", help="max_tokens of every request"),
        prompt_template: str = typer.Option(_D.prompt_template, "--prompt-template",
                                            help="text with {article}, or 'chat' for the tokenizer's chat template"),
        concurrency: Optional[str] = typer.Option(None, "--concurrency", help="sweep of requests in flight, e.g. "
                                                  "1,2,4,8 (default 1)"),
        request_rate: Optional[str] = typer.Option(None, "--request-rate", help="sweep of Poisson arrival rates in "
                                                   "requests/s, e.g. 0.5,1,2 (inf = all at once)"),
        max_concurrency: Optional[int] = typer.Option(_D.max_concurrency, "--max-concurrency", help="cap in flight with "
                                                      "--request-rate"),
        goodput: List[str] = typer.Option([], "--goodput", help="SLOs in ms, e.g. ttft:500,tpot:50 (keys ttft, "
                                          "tpot, e2el; comma-separated or repeated)"),
        temperature: float = typer.Option(_D.temperature, "--temperature", help="0 = greedy"),
        ignore_eos: bool = typer.Option(_D.ignore_eos, "--ignore-eos", help="ask for exactly --output-len tokens (vLLM / "
                                        "trtllm-serve extension; strict servers reject it)"),
        seed: int = typer.Option(_D.seed, "--seed", help="arrivals, random prompts, sampling"),
        request_timeout: Optional[str] = typer.Option(None, "--request-timeout", metavar="LIMITS", help=TIMEOUT_HELP),
        max_duration: Optional[float] = typer.Option(_D.max_duration_s, "--max-duration", help="seconds per sweep point; "
                                                     "requests still running then are cancelled and counted failed"),
        warmup: int = typer.Option(_D.warmup_requests, "--warmup", help="untimed short requests before the sweep"),
        report: Optional[Path] = typer.Option(_D.report, "--report", help="write the JSON report here"),
        plot: Optional[Path] = typer.Option(_D.plot, "--plot", help="write a PNG of throughput vs p50/p99 latency"),
        csv: Optional[Path] = typer.Option(_D.csv, "--csv", help="write one CSV row of aggregates per sweep point"),
        overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="replace an existing --report / --plot / --csv "
                                       "that trt-minitron did not write (one it wrote is replaced anyway)"),
    ) -> None:
        """Benchmark a served model: TTFT, TPOT, ITL, E2E (mean/p50/p90/p99), throughput, goodput, ROUGE.

        Exit code: 0 when every request completed, 1 when any failed (the table and report still come
        out, with the server's messages), 2 for bad options or an unreachable server.
        """
        slo_items = [item for g in goodput for item in g.replace(" ", ",").split(",") if item]
        opts = BenchOptions(
            url=url, served_model=served_model, tokenizer=tokenizer, api=api, dataset=dataset,
            dataset_file=dataset_file, dataset_cache_dir=dataset_cache_dir, num_requests=num_requests,
            input_len=input_len, output_len=output_len, prompt_template=prompt_template,
            concurrency=parse_list(concurrency, int, "--concurrency"),
            request_rate=parse_list(request_rate, float, "--request-rate"), max_concurrency=max_concurrency,
            slo=parse_slo(slo_items), temperature=temperature, ignore_eos=ignore_eos, seed=seed,
            request_timeout=Timeouts.parse(request_timeout), max_duration_s=max_duration, warmup_requests=warmup,
            report=report, plot=plot, csv=csv, overwrite=overwrite)
        opts.validate()
        from ..bench.report import failures, markdown
        from ..bench.run import RequestsFailed, run_bench

        factory, stop = live_progress()
        try:
            result = run_bench(opts, progress=factory)
        except BaseException:
            stop(erase=True)
            raise
        stop()
        print(markdown(result))
        for path, what in ((report, "report"), (plot, "plot"), (csv, "csv")):
            if path is not None:
                print(f"{what} written to {path}", file=sys.stderr)
        failed = failures(result)
        if failed:
            total = sum(p["aggregate"]["requests"] for p in result["points"])
            n = sum(p["aggregate"]["failed"] for p in result["points"])
            for line in failed:
                print(f"failed: {line}", file=sys.stderr)
            raise RequestsFailed(f"{n} of {total} requests failed (see above and the report)")
