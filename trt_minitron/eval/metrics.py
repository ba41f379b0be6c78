"""ROUGE (rouge_score, stemming, F-measure x100), bootstrap intervals and latency statistics.

summarize.py reports `evaluate`'s aggregated ROUGE (F-measure, printed x100); here each sample is
scored with rouge_score directly, the mean is reported with a percentile-bootstrap 95% interval,
and two backends are compared with a paired bootstrap over the same samples (fixed seed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import MissingDependencyError

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BOOTSTRAP_SEED = 0
_SENT_END = re.compile(r"(?<=[.!?])\s+")


def sentences_per_line(text: str) -> str:
    """One sentence per line: rougeLsum splits summaries on newlines (highlights already are)."""
    return "\n".join(s for s in _SENT_END.split(text.strip()) if s)


def rouge_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-sample ROUGE-1/2/L/Lsum F-measure x100 with Porter stemming."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise MissingDependencyError("ROUGE needs rouge_score: pip install 'trt-minitron[eval]'") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out = []
    for pred, ref in zip(predictions, references, strict=True):
        s = scorer.score(ref, sentences_per_line(pred))  # score(target, prediction)
        out.append({k: 100.0 * s[k].fmeasure for k in ROUGE_KEYS})
    return out


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high}


def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_mean(values: list[float], n_boot: int = 1000, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean and percentile-bootstrap 95% interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    means = v[_resample_index(v.size, n_boot, seed)].mean(axis=1)
    return Interval(float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def paired_bootstrap(baseline: list[float], candidate: list[float], n_boot: int = 1000,
                     seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of (candidate - baseline) per sample, with a paired-bootstrap 95% interval."""
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs equal sample counts, got {a.size} and {b.size}")
    return bootstrap_mean(list(b - a), n_boot, seed)


def latency_stats(latencies_s: list[float]) -> dict[str, float]:
    """Mean, median and 90th percentile (linear interpolation) of per-batch latencies, in seconds."""
    v = np.asarray(latencies_s, dtype=np.float64)
    if v.size == 0:
        return {"mean_s": float("nan"), "p50_s": float("nan"), "p90_s": float("nan")}
    return {"mean_s": float(v.mean()), "p50_s": float(np.percentile(v, 50)), "p90_s": float(np.percentile(v, 90))}
