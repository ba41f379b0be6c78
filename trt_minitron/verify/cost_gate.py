"""What `verify` judges of a quantized checkpoint's cost (its distance from the source), beyond the conversion.

The cost is reported, not judged, except: non-finite numbers (NaN/Inf in the checkpoint's hidden states or logits)
fail, named where they first appear; a top-1 agreement far below anything a working quantization gives fails
(TOP1_FLOOR, on the tokens where the source is confident, and only for a source that models the text: a random
test model, which predicts the texts' next tokens at chance, loses most of its top-1 to INT4 legitimately); and a
user's gate (--max-kl, --min-top1) turns the cost into a judged one.
"""

from __future__ import annotations

import math

import torch

from .divergence import CONFIDENT, DivergenceReport

# Top-1 agreement with the source on the tokens where the source gives its top token p >= 0.5. Measured on
# SmolLM2-135M (benchmarks/README.md, verify_calibration.py): every format keeps well over 80 % of them; a model
# whose quantization is broken keeps few (a saturating activation scale, a NaN scale: 0 %). Below 50 % is never a PASS.
TOP1_FLOOR = 0.5
MIN_CONFIDENT = 16  # fewer confident tokens than this: the floor is not applied (too few to judge)
# The floor judges a language model: one whose top token is the text's next token this often (SmolLM2-135M: ~40 %;
# the tiny random test models: ~1 %, and their INT4 top-1 is 20-35 %, the true cost of INT4 on random weights).
MODELS_TEXT = 0.1


def first_nonfinite(t: torch.Tensor) -> str | None:
    """Where tensor `t` [..., width] first holds NaN or Inf: "row R, element E (nan)", or None."""
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return None
    flat = bad.reshape(-1, t.shape[-1])
    row, col = (int(i) for i in flat.nonzero()[0])
    return f"token {row}, element {col} ({float(t.reshape(-1, t.shape[-1])[row, col])})"


def cost_failures(cost: DivergenceReport, max_kl: float | None = None, min_top1: float | None = None) -> list[str]:
    """Why the cost fails the checkpoint (empty: it does not): non-finite logits, the top-1 floor, the user's gate."""
    failures = []
    if cost.nonfinite is not None:
        failures.append(f"the checkpoint's logits hold NaN or Inf (first: {cost.nonfinite})")
    elif not (math.isfinite(cost.kl_mean) and math.isfinite(cost.kl_max)):
        failures.append(f"the KL divergence is not finite ({cost.kl_mean})")
    judged = cost.source_accuracy is not None and cost.source_accuracy >= MODELS_TEXT
    if judged and cost.confident_tokens >= MIN_CONFIDENT and cost.confident_top1 < TOP1_FLOOR:
        failures.append(f"top-1 agreement {cost.confident_top1:.1%} on the {cost.confident_tokens} tokens where the "
                        f"source gives its top token p >= {CONFIDENT:g} is below {TOP1_FLOOR:.0%}, far below what any "
                        "working quantization keeps: the model is broken")
    if max_kl is not None and not cost.kl_mean <= max_kl:
        failures.append(f"KL mean {cost.kl_mean:.4g} nats/token exceeds --max-kl {max_kl:g}")
    if min_top1 is not None and not cost.top1_agreement >= min_top1:
        failures.append(f"top-1 agreement {cost.top1_agreement:.2%} is below --min-top1 {min_top1:g}")
    return failures
