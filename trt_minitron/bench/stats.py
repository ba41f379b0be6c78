"""Serving metrics of one sweep point, with NVIDIA AIPerf 0.13's definitions (read in aiperf 0.13.0,
`aiperf/metrics/types/`: ttft, request_latency, inter_token_latency, inter_chunk_latency, benchmark_duration).

- TTFT: first chunk carrying text - request sent.
- E2E latency: last chunk carrying text - request sent (AIPerf's request_latency: the usage chunk, the
  finish_reason chunk without text, [DONE] and the stream's close come later and are not counted).
- TPOT: (E2E - TTFT) / (output tokens - 1), for requests with more than one output token (AIPerf's
  inter_token_latency).
- ITL: gaps between consecutive chunks carrying text, pooled over requests (AIPerf's inter_chunk_latency;
  a chunk may carry several tokens).
- Duration: first request sent .. last chunk with text, over completed requests (AIPerf's benchmark_duration).
- Request / output-token throughput: completed requests / output tokens of completed requests per second
  of duration. Goodput: completed requests meeting every SLO given (TTFT, TPOT, E2E in ms; a one-token
  answer has TPOT 0) per second.
Latencies are reported in milliseconds: mean, p50, p90, p99 (numpy linear interpolation), over completed
requests only; failed requests (an answer without text included, as AIPerf counts it) are counted with
their messages.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..backends.openai_client import RequestRecord
from ..options import SLO

PERCENTILES = (50, 90, 99)


def distribution_ms(values_s: list[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 in milliseconds (None when there is no value)."""
    v = np.asarray(values_s, dtype=np.float64) * 1000.0
    if v.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}, "n": 0}
    return {"mean": float(v.mean()), **{f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES}, "n": int(v.size)}


def tpot_s(rec: RequestRecord) -> float | None:
    """Time per output token after the first; None for a request with fewer than two output tokens."""
    n = rec.output_tokens
    if not rec.ok or n is None or n < 2 or rec.ttft_s is None:
        return None
    return (rec.e2e_s - rec.ttft_s) / (n - 1)


def meets(rec: RequestRecord, slo: SLO) -> bool:
    """Whether a completed request meets every SLO given (vLLM: TPOT of a one-token answer counts as 0)."""
    if not rec.ok or rec.ttft_s is None:
        return False
    checks = ((slo.ttft_ms, rec.ttft_s), (slo.tpot_ms, tpot_s(rec) or 0.0), (slo.e2el_ms, rec.e2e_s))
    return all(target is None or value * 1000.0 <= target for target, value in checks)


def duration_s(records: list[RequestRecord]) -> float:
    """First request sent .. last answer's last chunk with text, over completed requests, in seconds."""
    done = [r for r in records if r.ok]
    if not done:
        return 0.0
    return max(r.finished_s for r in done) - min(r.sent_s for r in done)


def aggregate(records: list[RequestRecord], slo: SLO = SLO()) -> dict:
    """Aggregates of one sweep point (see the module docstring for the definitions)."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    dur = duration_s(records)
    out_tokens = sum(r.output_tokens or 0 for r in done)
    prompt_tokens = sum(r.usage_prompt_tokens or 0 for r in done)
    per_s = (lambda x: x / dur) if dur > 0 else (lambda x: None)
    errors = Counter(r.error for r in failed)
    return {
        "requests": len(records),
        "completed": len(done),
        "failed": len(failed),
        "duration_s": dur,
        "output_tokens": out_tokens,
        "prompt_tokens_reported": prompt_tokens,
        "request_throughput": per_s(len(done)),
        "output_throughput": per_s(out_tokens),
        "goodput": per_s(sum(meets(r, slo) for r in done)) if slo.any else None,
        "slo": slo.to_dict() if slo.any else None,
        "ttft_ms": distribution_ms([r.ttft_s for r in done]),
        "tpot_ms": distribution_ms([t for t in map(tpot_s, done) if t is not None]),
        "itl_ms": distribution_ms([g for r in done for g in r.itl_s]),
        "e2el_ms": distribution_ms([r.e2e_s for r in done]),
        "usage_reported": sum(r.usage_completion_tokens is not None for r in done),
        "errors": [{"message": m, "count": c} for m, c in errors.most_common()],
    }
