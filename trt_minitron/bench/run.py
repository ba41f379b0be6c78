"""`trt-minitron bench`: latency, throughput and accuracy of an OpenAI-compatible server under load.

For each point of the sweep (a concurrency, or a request rate with Poisson arrivals seeded by --seed) the
same prompts are sent as streamed requests; every request is recorded (times, text, token counts, error,
ROUGE for CNN/DailyMail) and aggregated (stats.py). A point is bounded by --num-requests, each
request by --request-timeout and the point by --max-duration; failures are counted, never raised.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..backends.openai_client import (
    RequestParams,
    RequestRecord,
    make_client,
    prompt_text,
    resolve_model,
    server_tokenizer,
    stream_request,
)
from ..errors import TrtMinitronError
from ..eval.data import PromptBuilder, load_records
from ..eval.metrics import ROUGE_KEYS, bootstrap_mean, rouge_scores
from ..options import BenchOptions, normalize_url
from ..outputs import TOOL
from .stats import SLO, aggregate, tpot_s

WARMUP_TOKENS = 8


class RequestsFailed(TrtMinitronError):
    """Some requests of the benchmark failed (the report and the table still come out)."""

    exit_code = 1


@dataclass(frozen=True)
class SweepPoint:
    """Closed loop at `concurrency` requests in flight, or open loop at `request_rate` (optionally capped)."""

    concurrency: int | None = None
    request_rate: float | None = None  # requests per second; None = all at once

    @property
    def label(self) -> str:
        if self.request_rate is None:
            return f"c={self.concurrency}"
        cap = f" c<={self.concurrency}" if self.concurrency else ""
        return f"r={self.request_rate:g}/s{cap}"


def sweep_points(opts: BenchOptions) -> list[SweepPoint]:
    """--request-rate values (capped by --max-concurrency), else --concurrency values (default 1)."""
    if opts.request_rate:
        return [SweepPoint(opts.max_concurrency, None if math.isinf(r) else r) for r in opts.request_rate]
    return [SweepPoint(c) for c in (opts.concurrency or (1,))]


def request_params(opts: BenchOptions, max_tokens: int | None = None) -> RequestParams:
    """Every request's settings (a seed only when sampling)."""
    return RequestParams(max_tokens=max_tokens or opts.output_len, api=opts.api, temperature=opts.temperature,
                         seed=opts.seed if opts.temperature > 0 else None, ignore_eos=opts.ignore_eos,
                         timeouts=opts.request_timeout)


@dataclass(frozen=True)
class BenchPrompt:
    id: str
    text: str
    tokens: int  # the local tokenizer's count
    reference: str | None = None  # CNN/DailyMail highlights


def build_prompts(opts: BenchOptions, tokenizer) -> list[BenchPrompt]:
    """--num-requests prompts: CNN/DailyMail articles as summarize builds them (cycled if the file is short),
    or random token ids decoded to text (as `vllm bench serve --dataset-name random`)."""
    out = []
    if opts.dataset == "random":
        rng = np.random.default_rng(opts.seed)
        special = set(tokenizer.all_special_ids)
        vocab = [i for i in range(len(tokenizer)) if i not in special]
        for i in range(opts.num_requests):
            text = tokenizer.decode(rng.choice(vocab, size=opts.input_len).tolist())
            out.append(BenchPrompt(f"random-{i}", text, len(tokenizer(text)["input_ids"])))
        return out
    records = load_records(opts.dataset_file, opts.num_requests, opts.dataset_cache_dir)
    builder = PromptBuilder(tokenizer, opts.prompt_template, opts.input_len)
    for i in range(opts.num_requests):
        rec = records[i % len(records)]
        ids = builder.build(rec.article)
        pid = rec.id if i < len(records) else f"{rec.id}#{i // len(records)}"
        out.append(BenchPrompt(pid, prompt_text(tokenizer, ids), len(ids), rec.highlights))
    return out


def arrival_offsets(n: int, rate: float | None, seed: int) -> list[float]:
    """Send times in seconds from the start: 0 for all when rate is None, else a seeded Poisson process
    (exponential gaps of mean 1/rate; the first request at 0, as vLLM's generator yields before sleeping)."""
    if rate is None:
        return [0.0] * n
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(n - 1, 0))
    return [0.0] + np.cumsum(gaps).tolist()


async def run_point(client, model: str, prompts: list[BenchPrompt], params: RequestParams, point: SweepPoint,
                    seed: int, max_duration_s: float | None,
                    on_end: Callable[[RequestRecord], None] | None = None) -> list[RequestRecord]:
    """Send every prompt once under the point's arrival pattern and concurrency cap; records in prompt order."""
    records = [RequestRecord(index=i, prompt_id=p.id) for i, p in enumerate(prompts)]
    gate = asyncio.Semaphore(point.concurrency) if point.concurrency else None
    t0 = time.perf_counter()
    deadline = None if max_duration_s is None else t0 + max_duration_s

    async def one(i: int) -> None:
        if gate is None:
            await stream_request(client, model, prompts[i].text, params, records[i], t0)
        else:
            async with gate:
                await stream_request(client, model, prompts[i].text, params, records[i], t0)
        if on_end is not None:
            on_end(records[i])

    tasks = []
    for i, offset in enumerate(arrival_offsets(len(prompts), point.request_rate, seed)):
        if deadline is not None and t0 + offset >= deadline:
            break
        delay = t0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    if tasks:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for rec in records:
        if rec.sent_s is None and rec.error is None:
            rec.error = "not sent: the point's --max-duration was reached"
        elif rec.ok and not rec.chunk_s:  # AIPerf too counts an answer without content as failed
            rec.error = "empty answer: no chunk carried text"
    return records


def request_row(rec: RequestRecord, prompt: BenchPrompt, rouge: dict | None) -> dict:
    """One request of the JSON report."""
    return {"index": rec.index, "prompt_id": rec.prompt_id, "prompt_tokens": prompt.tokens,
            "sent_s": rec.sent_s, "first_token_s": rec.first_token_s, "finished_s": rec.finished_s,
            "ended_s": rec.ended_s, "ttft_s": rec.ttft_s, "e2e_s": rec.e2e_s, "tpot_s": tpot_s(rec),
            "itl_s": rec.itl_s, "chunks": len(rec.chunk_s), "output_tokens": rec.output_tokens,
            "usage_prompt_tokens": rec.usage_prompt_tokens, "usage_completion_tokens": rec.usage_completion_tokens,
            "text_tokens": rec.text_tokens, "finish_reason": rec.finish_reason, "text": rec.text, "rouge": rouge,
            "error": rec.error}


def score_point(records: list[RequestRecord], prompts: list[BenchPrompt], tokenizer, slo: SLO,
                n_boot: int) -> tuple[dict, list[dict]]:
    """Token counts, per-request ROUGE (completed CNN/DailyMail requests), aggregates and report rows."""
    for rec in records:
        if rec.text or rec.ok:
            rec.text_tokens = len(tokenizer(rec.text, add_special_tokens=False)["input_ids"])
    scored = [r for r in records if r.ok and prompts[r.index].reference is not None]
    rouge = dict(zip((r.index for r in scored),
                     rouge_scores([r.text for r in scored], [prompts[r.index].reference for r in scored])))
    agg = aggregate(records, slo)
    agg["rouge"] = ({k: bootstrap_mean([s[k] for s in rouge.values()], n_boot).to_dict() for k in ROUGE_KEYS}
                    if rouge else None)
    agg["rouge_samples"] = len(rouge)
    return agg, [request_row(r, prompts[r.index], rouge.get(r.index)) for r in records]


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _bench(opts: BenchOptions, progress) -> dict:
    started_at = _utc_now()
    base = normalize_url(opts.url)
    client = make_client(base, opts.request_timeout)
    try:
        model = await resolve_model(client, base, opts.served_model, opts.request_timeout)
        tokenizer = server_tokenizer(opts.tokenizer, model)
        prompts = build_prompts(opts, tokenizer)
        warm = []
        if opts.warmup_requests:
            wp = request_params(opts, min(WARMUP_TOKENS, opts.output_len))
            warm = await asyncio.gather(*(
                stream_request(client, model, prompts[i % len(prompts)].text, wp,
                               RequestRecord(index=i, prompt_id=prompts[i % len(prompts)].id), time.perf_counter())
                for i in range(opts.warmup_requests)))
        points = []
        params = request_params(opts)
        for point in sweep_points(opts):
            advance = progress(point.label, len(prompts)) if progress else None
            records = await run_point(client, model, prompts, params, point, opts.seed, opts.max_duration_s, advance)
            agg, rows = score_point(records, prompts, tokenizer, opts.slo, opts.bootstrap_samples)
            points.append({"label": point.label, "concurrency": point.concurrency,
                           "request_rate": point.request_rate, "aggregate": agg, "requests": rows})
    finally:
        await client.close()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    return {
        "tool": f"{TOOL} bench",  # what makes the file recognisably ours (outputs.is_ours)
        "started_at": started_at,
        "finished_at": _utc_now(),
        "server": {"url": base, "model": model, "api": opts.api},
        "settings": settings,
        "dataset": {"name": opts.dataset,
                    "source": str(opts.dataset_file) if opts.dataset_file else
                    ("abisee/cnn_dailymail 3.0.0 test" if opts.dataset == "cnn_dailymail" else "random token ids"),
                    "prompts": len(prompts), "prompt_tokens": {"mean": float(np.mean([p.tokens for p in prompts])),
                                                               "min": min(p.tokens for p in prompts),
                                                               "max": max(p.tokens for p in prompts)}},
        "warmup": [{"e2e_s": r.e2e_s, "error": r.error} for r in warm],
        "points": points,
    }


def run_bench(opts: BenchOptions, progress=None) -> dict:
    """Entry point of `trt-minitron bench`: the report dict (also written to --report / --plot / --csv when given).

    Args:
        opts: settings (validated here).
        progress: `(label, total) -> on_end(record)` callback maker for a live display, or None.
    Raises:
        TrtMinitronError: bad options, unreachable server, no model or tokenizer. Failed requests do not
        raise here: the caller decides (the CLI exits 1 after printing, see RequestsFailed).
    """
    from .report import write_outputs

    opts.validate()
    report = asyncio.run(_bench(opts, progress))
    write_outputs(report, opts.report, opts.plot, opts.csv, opts.overwrite)
    return report
