"""CNN/DailyMail summarization benchmark: one loop for every backend, ROUGE, timing, comparison, report.

Per backend: tokenize every article with the backend's tokenizer, sort prompts by length (longest
first) into batches, run one untimed warm-up batch, then time each batch between device
synchronisations. Predictions go back to input order before scoring and reporting.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..backends import open_backend
from ..backends.base import Generation, Sampling
from ..errors import TrtMinitronError
from ..eval.data import PromptBuilder, Record, load_records
from ..eval.metrics import ROUGE_KEYS, bootstrap_mean, latency_stats, paired_bootstrap, rouge_scores
from ..options import BackendSpec, SummarizeOptions
from ..outputs import TOOL, write_file

WARMUP_TOKENS = 8


class AccuracyCheckFailed(TrtMinitronError):
    """--check-accuracy or --max-rouge-drop found a backend below the bar."""

    exit_code = 1


@dataclass
class BackendRun:
    """What one backend produced on the records, in input order."""

    spec: BackendSpec
    prompt_tokens: list[int]
    generations: list[Generation]
    batch_latencies_s: list[float]
    batch_ttft_s: list[float]
    rouge: list[dict[str, float]] = field(default_factory=list)

    @property
    def generated_tokens(self) -> int:
        return sum(g.num_tokens for g in self.generations)

    def aggregate(self, n_boot: int) -> dict:
        total = sum(self.batch_latencies_s)
        out = {"rouge": {k: bootstrap_mean([r[k] for r in self.rouge], n_boot).to_dict() for k in ROUGE_KEYS},
               "latency_per_batch": latency_stats(self.batch_latencies_s),
               "num_batches": len(self.batch_latencies_s),
               "total_latency_s": total,
               "generated_tokens": self.generated_tokens,
               "tokens_per_s": self.generated_tokens / total if total > 0 else float("nan"),
               "ttft": latency_stats(self.batch_ttft_s) if self.batch_ttft_s else None}
        return out


def batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches, longest prompts first, so each batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_backend(backend, records: list[Record], opts: SummarizeOptions,
                progress: Callable[[int], None] | None = None) -> BackendRun | None:
    """Generate summaries for all records with one backend; None on MPI ranks other than 0."""
    builder = PromptBuilder(backend.tokenizer, opts.prompt_template, opts.max_input_len, opts.add_special_tokens)
    prompts = [builder.build(r.article) for r in records]
    # A server backend keeps its own `concurrency` requests in flight: it gets every prompt in one call.
    per_request = backend.name == "openai"
    size = len(prompts) if per_request else opts.batch_size
    batches = batches_by_length([len(p) for p in prompts], size)
    sampling = Sampling(max_new_tokens=opts.output_len, temperature=opts.temperature, top_k=opts.top_k,
                        top_p=opts.top_p, num_beams=opts.num_beams, seed=opts.seed)
    if opts.warmup:
        warm = Sampling(**{**asdict(sampling), "max_new_tokens": min(WARMUP_TOKENS, sampling.max_new_tokens)})
        backend.generate([prompts[i] for i in batches[0][:opts.batch_size]], warm)
    gens: list[Generation | None] = [None] * len(records)
    lat, ttft = [], []
    for idx in batches:
        out = backend.generate([prompts[i] for i in idx], sampling)
        if not backend.is_main:
            continue
        for i, g in zip(idx, out, strict=True):
            gens[i] = g
        lat.append(out[0].batch_latency_s)
        ttft += [g.ttft_s for g in (out if per_request else out[:1]) if g.ttft_s is not None]
        if progress:
            progress(len(idx))
    if not backend.is_main:
        return None
    run = BackendRun(backend_spec(backend), [len(p) for p in prompts], gens, lat, ttft)
    run.rouge = rouge_scores([g.text for g in gens], [r.highlights for r in records])
    return run


def backend_spec(backend) -> BackendSpec:
    return getattr(backend, "spec", None) or BackendSpec(kind=backend.name, model=backend.model)


def checkpoint_format(spec: BackendSpec) -> str | None:
    """The quantization (or dtype) of a torch backend's checkpoint, e.g. "FP8 + FP8 KV", or of a trtllm backend's
    ModelOpt unified folder; None for other backends and unquantized HF folders."""
    config = Path(spec.model) / "config.json"
    if spec.kind not in ("torch", "trtllm") or not config.is_file():
        return None
    cfg = json.loads(config.read_text())
    if spec.kind == "trtllm":
        if "architectures" not in cfg:
            return None  # an engine folder
        from ..trtllm.llmapi_args import read_quantization

        algo, kv, _ = read_quantization(Path(spec.model), cfg)
        return None if algo is None and kv is None else (algo or "unquantized") + (f" + {kv} KV" if kv else "")
    quant = cfg.get("quantization") or {}
    kv = quant.get("kv_cache_quant_algo")
    return (quant.get("quant_algo") or cfg.get("dtype", "?")) + (f" + {kv} KV" if kv else "")


def compare(runs: list[BackendRun], n_boot: int) -> list[dict]:
    """Every later backend against the first: paired-bootstrap ROUGE differences and identical outputs."""
    out = []
    base = runs[0]
    for j, run in enumerate(runs[1:], 1):
        diffs = {k: paired_bootstrap([r[k] for r in base.rouge], [r[k] for r in run.rouge], n_boot).to_dict()
                 for k in ROUGE_KEYS}
        same = sum(a.tokens == b.tokens for a, b in zip(base.generations, run.generations))
        out.append({"baseline": 0, "candidate": j, "rouge_diff": diffs, "identical_outputs": same,
                    "num_samples": len(run.generations)})
    return out


def accuracy_failures(runs: list[BackendRun], comparisons: list[dict], opts: SummarizeOptions,
                      aggs: list[dict]) -> list[str]:
    """Messages for every check that failed (empty when all pass or no check was asked for)."""
    fails = []
    if opts.check_accuracy:
        for run, agg in zip(runs, aggs):
            r1 = agg["rouge"]["rouge1"]["mean"]
            if not r1 > opts.rouge1_threshold:
                fails.append(f"{run.spec.kind} ({run.spec.model}): rouge1 {r1:.2f} is not above the threshold "
                             f"{opts.rouge1_threshold:g}")
    if opts.max_rouge_drop is not None:
        for c in comparisons:
            d = c["rouge_diff"]["rouge1"]
            # Significantly more than D below: the whole 95% interval of (candidate - baseline) lies under -D.
            if d["ci95_high"] < -opts.max_rouge_drop:
                fails.append(f"{runs[c['candidate']].spec.kind} is below {runs[0].spec.kind} on rouge1 by "
                             f"{-d['mean']:.2f} (95% CI of the difference [{d['ci95_low']:.2f}, "
                             f"{d['ci95_high']:.2f}]), more than --max-rouge-drop {opts.max_rouge_drop:g}")
    return fails


def build_report(opts: SummarizeOptions, records: list[Record], runs: list[BackendRun]) -> dict:
    """The JSON report: settings, per-sample predictions and scores (input order), aggregates, comparison."""
    aggs = [r.aggregate(opts.bootstrap_samples) for r in runs]
    comps = compare(runs, opts.bootstrap_samples)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "backends"}
    return {
        "tool": f"{TOOL} summarize",  # what makes the file recognisably ours (outputs.is_ours)
        "settings": settings,
        "dataset": {"source": str(opts.dataset_file) if opts.dataset_file else "abisee/cnn_dailymail 3.0.0 test",
                    "num_samples": len(records)},
        "backends": [{
            "kind": r.spec.kind, "model": r.spec.model, "format": checkpoint_format(r.spec), "aggregate": agg,
            "samples": [{"index": i, "id": rec.id, "prompt_tokens": r.prompt_tokens[i], "reference": rec.highlights,
                         "prediction": g.text, "token_ids": g.tokens, "generated_tokens": g.num_tokens,
                         "finish_reason": g.finish_reason, "rouge": r.rouge[i]}
                        for i, (rec, g) in enumerate(zip(records, r.generations))],
        } for r, agg in zip(runs, aggs)],
        "comparisons": comps,
        "checks": {"failures": accuracy_failures(runs, comps, opts, aggs)},
    }


def _label(backend: dict) -> str:
    return backend["kind"] + (f" {backend['format']}" if backend.get("format") else "")


def markdown(report: dict) -> str:
    """Per-backend table and, with two or more backends, the difference table."""
    lines = ["| backend | model | ROUGE-1 [95% CI] | ROUGE-2 | ROUGE-L | ROUGE-Lsum | batch latency mean / p50 / p90 (s)"
             " | gen. tokens | tokens/s | TTFT mean (s) |", "|" + "---|" * 10]
    for b in report["backends"]:
        a, r = b["aggregate"], b["aggregate"]["rouge"]
        lt = a["latency_per_batch"]
        ttft = f"{a['ttft']['mean_s']:.3f}" if a["ttft"] else "n/a"
        lines.append(f"| {_label(b)} | {Path(b['model']).name} | {r['rouge1']['mean']:.2f} "
                     f"[{r['rouge1']['ci95_low']:.2f}, {r['rouge1']['ci95_high']:.2f}] | {r['rouge2']['mean']:.2f} | "
                     f"{r['rougeL']['mean']:.2f} | {r['rougeLsum']['mean']:.2f} | {lt['mean_s']:.3f} / "
                     f"{lt['p50_s']:.3f} / {lt['p90_s']:.3f} | {a['generated_tokens']} | {a['tokens_per_s']:.1f} | {ttft} |")
    for c in report["comparisons"]:
        base, cand = report["backends"][c["baseline"]], report["backends"][c["candidate"]]
        lines += ["", f"{_label(cand)} - {_label(base)} (paired bootstrap, {c['num_samples']} samples, "
                      f"identical outputs {c['identical_outputs']}/{c['num_samples']}):", "",
                  f"| metric | {_label(base)} | {_label(cand)} | difference [95% CI] |", "|---|---|---|---|"]
        for k in ROUGE_KEYS:
            d = c["rouge_diff"][k]
            lines.append(f"| {k} | {base['aggregate']['rouge'][k]['mean']:.2f} | "
                         f"{cand['aggregate']['rouge'][k]['mean']:.2f} | {d['mean']:+.2f} "
                         f"[{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}] |")
    return "\n".join(lines)


def run_summarize(opts: SummarizeOptions, progress_factory=None, opener=None) -> dict | None:
    """Entry point of `trt-minitron summarize`.

    Args:
        opts: validated settings.
        progress_factory: `(description, total) -> advance(n)` callback maker (the CLI draws a rich bar).
        opener: BackendSpec -> Backend (default open_backend; tests pass fakes).
    Returns:
        The report dict, or None on MPI ranks other than 0.
    Raises:
        TrtMinitronError: bad options or dataset; AccuracyCheckFailed (exit 1) after the report is written.
    """
    opts.validate()
    opener = opener or open_backend
    records = load_records(opts.dataset_file, opts.num_samples, opts.dataset_cache_dir)
    runs: list[BackendRun] = []
    main = True
    for spec in opts.backends:
        backend = opener(spec)
        backend.spec = spec
        try:
            advance = progress_factory(f"{spec.kind} {Path(spec.model).name}", len(records)) \
                if progress_factory and backend.is_main else None
            run = run_backend(backend, records, opts, advance)
        finally:
            backend.close()
        if run is None:
            main = False
        else:
            runs.append(run)
    if not main:
        return None
    report = build_report(opts, records, runs)
    if opts.report:
        write_file(opts.report, json.dumps(report, indent=2, ensure_ascii=False).encode(), overwrite=opts.overwrite)
    return report
