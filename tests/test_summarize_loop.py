"""The summarize loop with a fake deterministic backend on synthetic articles: ordering, warm-up,
timing bookkeeping, report contents, comparison and the accuracy exits."""

from __future__ import annotations

import json

import pytest
from rouge_score import rouge_scorer

from trt_minitron.backends.base import Generation
from trt_minitron.options import BackendSpec
from trt_minitron.summarize.run import AccuracyCheckFailed, SummarizeOptions, batches_by_length, markdown, run_summarize


class Tok:
    """Whitespace word tokenizer; ids are word indexes."""

    truncation_side = "right"
    chat_template = None

    def __init__(self):
        self.words: list[str] = []

    def __call__(self, text, add_special_tokens=True, truncation=False, max_length=None):
        ids = []
        for w in text.split():
            if w not in self.words:
                self.words.append(w)
            ids.append(self.words.index(w))
        if truncation:
            ids = ids[-max_length:]
        return {"input_ids": ids}


class EchoBackend:
    """'Summarizes' by echoing the first `keep` words of the prompt; records every call."""

    is_main = True

    def __init__(self, name, keep):
        self.name, self.model, self.keep = name, f"/m/{name}", keep
        self.tokenizer, self.calls = Tok(), []

    def generate(self, batch, sampling, on_token=None):
        self.calls.append(([len(p) for p in batch], sampling.max_new_tokens))
        out = []
        for p in batch:
            toks = p[: min(self.keep, sampling.max_new_tokens)]
            out.append(Generation(prompt_tokens=len(p), tokens=toks,
                                  text=" ".join(self.tokenizer.words[t] for t in toks), finish_reason="stop",
                                  batch_latency_s=0.5, ttft_s=0.1))
        return out

    def synchronize(self):
        pass

    def close(self):
        pass


def write_records(path, n=7):
    recs = []
    for i in range(n):
        words = [f"topic{i}", "alpha", "beta"] + [f"filler{i}x{j}" for j in range(3 * i)]
        recs.append({"id": f"r{i}", "article": " ".join(words), "highlights": f"topic{i} alpha beta ."})
    path.write_text("\n".join(json.dumps(r) for r in recs))
    return recs


def opts(tmp_path, n_backends=1, **kw):
    specs = tuple(BackendSpec(kind="hf", model=str(tmp_path)) for _ in range(n_backends))
    base = dict(backends=specs, dataset_file=tmp_path / "d.jsonl", num_samples=7, batch_size=3, output_len=5,
                report=tmp_path / "out" / "report.json", bootstrap_samples=200)
    base.update(kw)
    return SummarizeOptions(**base)


def test_batches_sorted_longest_first():
    assert batches_by_length([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]


def test_report_order_rouge_timing_and_warmup(tmp_path):
    recs = write_records(tmp_path / "d.jsonl")
    be = EchoBackend("a", keep=3)
    report = run_summarize(opts(tmp_path, output_len=20), opener=lambda s: be)
    # Warm-up: the first (longest) batch with 8 new tokens, untimed; then 3 timed batches, longest first.
    assert be.calls[0] == ([22, 19, 16], 8)
    assert be.calls[1:] == [([22, 19, 16], 20), ([13, 10, 7], 20), ([4], 20)]
    b = report["backends"][0]
    # Input order restored: sample i echoes "topic{i} alpha beta".
    assert [s["id"] for s in b["samples"]] == [r["id"] for r in recs]
    assert [s["prediction"] for s in b["samples"]] == [f"topic{i} alpha beta" for i in range(7)]
    assert all(s["rouge"]["rouge1"] == 100.0 for s in b["samples"])
    agg = b["aggregate"]
    assert agg["num_batches"] == 3 and agg["total_latency_s"] == pytest.approx(1.5)
    assert agg["generated_tokens"] == 21 and agg["tokens_per_s"] == pytest.approx(14.0)
    assert agg["latency_per_batch"]["p50_s"] == 0.5 and agg["ttft"]["mean_s"] == pytest.approx(0.1)
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["settings"]["num_samples"] == 7 and on_disk["settings"]["max_input_len"] == 923
    assert on_disk["backends"][0]["samples"][3]["token_ids"] == b["samples"][3]["token_ids"]


def test_report_rouge_equals_independent_computation(tmp_path):
    recs = write_records(tmp_path / "d.jsonl")
    report = run_summarize(opts(tmp_path), opener=lambda s: EchoBackend("a", keep=2))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for s, r in zip(report["backends"][0]["samples"], recs):
        want = scorer.score(r["highlights"], s["prediction"])
        assert s["rouge"] == {k: pytest.approx(100 * v.fmeasure) for k, v in want.items()}


def two(tmp_path, keeps, **kw):
    write_records(tmp_path / "d.jsonl")
    backends = iter([EchoBackend("a", keeps[0]), EchoBackend("b", keeps[1])])
    return run_summarize(opts(tmp_path, n_backends=2, **kw), opener=lambda s: next(backends))


def test_comparison_identical_backends_difference_is_zero(tmp_path):
    rep = two(tmp_path, (3, 3))
    c = rep["comparisons"][0]
    assert c["identical_outputs"] == 7
    assert c["rouge_diff"]["rouge1"] == {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}
    md = markdown(rep)
    assert "| rouge1 | 100.00 | 100.00 | +0.00 [+0.00, +0.00] |" in md


def test_max_rouge_drop_flags_a_significant_drop(tmp_path):
    rep = two(tmp_path, (3, 1), max_rouge_drop=5.0)
    d = rep["comparisons"][0]["rouge_diff"]["rouge1"]
    assert d["ci95_high"] < -5.0
    assert rep["checks"]["failures"] and "max-rouge-drop" in rep["checks"]["failures"][0]
    rep = two(tmp_path, (3, 1), max_rouge_drop=80.0)
    assert rep["checks"]["failures"] == []


def test_check_accuracy_threshold(tmp_path):
    write_records(tmp_path / "d.jsonl")
    rep = run_summarize(opts(tmp_path, check_accuracy=True, rouge1_threshold=99.0),
                        opener=lambda s: EchoBackend("a", 3))
    assert rep["checks"]["failures"] == []
    rep = run_summarize(opts(tmp_path, check_accuracy=True, rouge1_threshold=99.0),
                        opener=lambda s: EchoBackend("a", 1))
    assert "not above the threshold 99" in rep["checks"]["failures"][0]


def test_cli_exit_code_1_on_accuracy_failure(tmp_path, monkeypatch, capsys):
    import trt_minitron.summarize.run as S
    from trt_minitron.cli import main

    write_records(tmp_path / "d.jsonl")
    monkeypatch.setattr(S, "open_backend", lambda spec: EchoBackend("a", 1))
    args = ["summarize", "--backend", "hf", str(tmp_path), "--dataset-file", str(tmp_path / "d.jsonl"),
            "--num-samples", "4", "--output-len", "4", "--check-accuracy", "--rouge1-threshold", "90"]
    assert main(args) == 1
    out = capsys.readouterr()
    assert "| hf |" in out.out and "not above the threshold 90" in out.err
    assert main(args[:-3] + ["--rouge1-threshold", "10"]) == 0
    assert AccuracyCheckFailed.exit_code == 1
