"""ROUGE, bootstrap intervals and latency statistics."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from trt_minitron.eval.metrics import (
    ROUGE_KEYS,
    bootstrap_mean,
    latency_stats,
    paired_bootstrap,
    rouge_scores,
    sentences_per_line,
)


def test_rouge_matches_rouge_score_with_stemming_and_sentence_lines():
    preds = ["The cats were running home. They ran fast!", "Nothing in common"]
    refs = ["cats run home .\nthey were fast .", "a completely different summary ."]
    got = rouge_scores(preds, refs)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    for g, p, r in zip(got, preds, refs):
        want = scorer.score(r, p.replace(". ", ".\n").replace("! ", "!\n"))
        for k in ROUGE_KEYS:
            assert g[k] == pytest.approx(100 * want[k].fmeasure)
    assert got[0]["rouge1"] > 50 and got[1]["rouge1"] == 0.0
    # Stemming: "running" ~ "run".
    assert rouge_scores(["running"], ["run"])[0]["rouge1"] == 100.0


def test_sentences_per_line_splits_on_terminal_punctuation():
    assert sentences_per_line(" A b. C d? E!  F ") == "A b.\nC d?\nE!\nF"


def test_bootstrap_interval_is_deterministic_and_brackets_the_mean():
    v = list(np.random.default_rng(1).normal(30, 5, size=40))
    a, b = bootstrap_mean(v), bootstrap_mean(v)
    assert a == b
    assert a.low < a.mean < a.high
    assert a.mean == pytest.approx(np.mean(v))
    # Roughly mean +- 1.96 * sd / sqrt(n).
    half = 1.96 * np.std(v) / np.sqrt(len(v))
    assert (a.high - a.low) / 2 == pytest.approx(half, rel=0.25)


def test_paired_bootstrap_sees_a_shift_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(2)
    base = list(rng.normal(30, 10, size=30))
    same = paired_bootstrap(base, base)
    assert same.mean == same.low == same.high == 0.0
    shifted = paired_bootstrap(base, [x - 1.0 + rng.normal(0, 0.1) for x in base])
    assert shifted.high < 0 and shifted.contains(-1.0)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_latency_stats():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s == {"mean_s": 4.0, "p50_s": 3.0, "p90_s": pytest.approx(7.6)}
