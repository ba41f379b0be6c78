"""verify's judged cost (verify/cost_gate.py, verify/divergence.py): non-finite logits named, the top-1 floor on the
tokens the reference is confident about, the user's --max-kl / --min-top1 gate."""

from __future__ import annotations

import torch

from trt_minitron.verify.cost_gate import MIN_CONFIDENT, cost_failures, first_nonfinite
from trt_minitron.verify.divergence import Divergence


def _report(ref: torch.Tensor, model: torch.Tensor, block: int = 7, targets: torch.Tensor | None = None):
    """The divergence report; `targets` (the texts' next tokens) default to the reference's own top tokens (a source
    that models its text perfectly)."""
    d = Divergence(ref.shape[0])
    for start in range(0, ref.shape[1], block):
        d.update(model[:, start:start + block], ref[:, start:start + block], start)
    return d.report(ref.argmax(-1) if targets is None else targets)


def _confident(n: int, vocab: int = 20) -> torch.Tensor:
    """Logits whose top token (id i % vocab) has p > 0.5."""
    ref = torch.zeros(n, vocab)
    ref[torch.arange(n), torch.arange(n) % vocab] = 8.0
    return ref


def test_nonfinite_logits_are_named_at_their_first_token_and_id():
    ref = torch.randn(5, 30)
    model = ref.clone()
    model[3, 25] = float("nan")
    model[1, 12] = float("inf")
    report = _report(ref, model)
    assert report.nonfinite == "token 1, vocabulary id 12 (inf)"
    assert cost_failures(report) == ["the checkpoint's logits hold NaN or Inf (first: token 1, vocabulary id 12 (inf))"]
    assert _report(ref, ref).nonfinite is None and cost_failures(_report(ref, ref)) == []


def test_top1_on_confident_tokens_has_a_floor():
    ref = _confident(MIN_CONFIDENT + 4)
    wrong = torch.roll(ref, 1, dims=1)  # every top token moved by one id: 0 % agreement, finite
    report = _report(ref, wrong)
    assert report.confident_tokens == MIN_CONFIDENT + 4 and report.confident_top1 == 0.0 and report.source_accuracy == 1
    (why,) = cost_failures(report)
    assert why.startswith(f"top-1 agreement 0.0% on the {MIN_CONFIDENT + 4} tokens where the source gives its top "
                          "token p >= 0.5 is below 50%"), why
    half = ref.clone()
    half[: (MIN_CONFIDENT + 4) // 2] = wrong[: (MIN_CONFIDENT + 4) // 2]
    assert _report(ref, half).confident_top1 == 0.5 and cost_failures(_report(ref, half)) == []  # at the floor


def test_the_floor_needs_a_source_that_models_the_text():
    """A random test model predicts its texts' next tokens at chance: INT4 may take most of its top-1 legitimately."""
    ref = _confident(MIN_CONFIDENT + 4)
    targets = (ref.argmax(-1) + 1) % ref.shape[1]  # never the reference's top token
    targets[:2] = ref.argmax(-1)[:2]  # 2 of 20: 10 %, the least that counts as modelling the text
    targets[-1] = -1  # a text's last token has no successor
    wrong = torch.roll(ref, 1, dims=1)
    assert _report(ref, wrong, targets=targets).source_accuracy == 2 / (MIN_CONFIDENT + 3)
    assert len(cost_failures(_report(ref, wrong, targets=targets))) == 1
    targets[1] = (targets[1] + 1) % ref.shape[1]
    report = _report(ref, wrong, targets=targets)
    assert report.source_accuracy < 0.1 and report.confident_top1 == 0.0 and cost_failures(report) == []
    assert _report(ref, wrong, targets=torch.full((MIN_CONFIDENT + 4,), -1)).source_accuracy is None


def test_the_floor_needs_enough_confident_tokens():
    """Near-flat logits: no token is confident, the top-1 is not judged."""
    ref = torch.randn(40, 256) * 0.1
    report = _report(ref, torch.randn(40, 256) * 0.1)
    assert report.confident_tokens == 0 and report.top1_agreement < 0.5 and cost_failures(report) == []
    few = _report(_confident(MIN_CONFIDENT - 1), torch.roll(_confident(MIN_CONFIDENT - 1), 1, dims=1))
    assert few.confident_top1 == 0.0 and cost_failures(few) == []


def test_the_users_gate():
    ref = torch.randn(8, 50)
    report = _report(ref, ref + 0.3 * torch.randn(8, 50))
    assert cost_failures(report, max_kl=report.kl_mean, min_top1=report.top1_agreement) == []
    fails = cost_failures(report, max_kl=report.kl_mean / 2, min_top1=min(1.0, report.top1_agreement + 0.01))
    assert fails[0].startswith(f"KL mean {report.kl_mean:.4g} nats/token exceeds --max-kl") and len(fails) == 2
    assert fails[1].startswith(f"top-1 agreement {report.top1_agreement:.2%} is below --min-top1")


def test_first_nonfinite_names_the_token_and_element():
    t = torch.zeros(2, 3, 4)
    assert first_nonfinite(t) is None
    t[1, 0, 2] = float("-inf")
    assert first_nonfinite(t) == "token 3, element 2 (-inf)"
