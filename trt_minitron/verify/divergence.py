"""How far one model's next-token distribution is from another's: KL divergence, |delta logit|, top-1 agreement.

Logits may arrive in vocabulary blocks (verify applies lm_head 64 MiB at a time), so the log-partition
functions are accumulated online: per token the running maximum and the sum of exponentials below it,
rescaled whenever a block raises the maximum (the streaming log-sum-exp), plus the running
sum of p-weighted log-ratios. Everything is float64 per token; memory is one block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

CONFIDENT = 0.5  # a reference probability of its top token that makes top-1 agreement meaningful there


@dataclass(frozen=True)
class DivergenceReport:
    tokens: int
    kl_mean: float  # mean over tokens of KL(reference || model), nats
    kl_max: float
    max_abs_diff: float  # of the logits
    mean_abs_diff: float
    top1_agreement: float  # fraction of tokens where both models' most likely token is the same
    confident_tokens: int = 0  # tokens where the reference gives its most likely token p >= CONFIDENT
    confident_top1: float = 1.0  # top-1 agreement on those tokens (1.0 when there are none)
    nonfinite: str | None = None  # where the model's logits first hold NaN or Inf: "token T, vocabulary id V (nan)"
    source_accuracy: float | None = None  # how often the reference's top token is the text's next token (None: unknown)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"KL(reference || checkpoint) mean {self.kl_mean:.3g} nats/token (max {self.kl_max:.3g}), logits "
                f"max |delta| {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g}, top-1 agreement "
                f"{self.top1_agreement:.1%} over {self.tokens} tokens" + (
                    f" ({self.confident_top1:.1%} on the {self.confident_tokens} where the reference gives its top "
                    f"token p >= {CONFIDENT:g})" if self.confident_tokens else "") + (
                    f"; the reference predicts {self.source_accuracy:.1%} of the texts' next tokens"
                    if self.source_accuracy is not None else ""))


class Divergence:
    """Accumulates KL(ref || model) and logit differences over tokens [N] and vocabulary blocks."""

    def __init__(self, num_tokens: int):
        def full(v: float) -> torch.Tensor:
            return torch.full((num_tokens,), v, dtype=torch.float64)

        self.n = num_tokens
        self.ref_max, self.ref_sum = full(-torch.inf), full(0.0)  # streaming log-sum-exp of the reference
        self.mod_max, self.mod_sum = full(-torch.inf), full(0.0)
        self.weighted = full(0.0)  # sum over the vocabulary of exp(ref - ref_max) * (ref - model)
        self.ref_best, self.ref_idx = full(-torch.inf), torch.zeros(num_tokens, dtype=torch.long)
        self.mod_best, self.mod_idx = full(-torch.inf), torch.zeros(num_tokens, dtype=torch.long)
        self.max_abs, self.sum_abs, self.count = 0.0, 0.0, 0
        self.nonfinite: tuple[int, int, float] | None = None  # (token, vocabulary id, value), the first seen

    def update(self, model: torch.Tensor, ref: torch.Tensor, start: int = 0) -> None:
        """model, ref: logits [N, block] for vocabulary ids start .. start + block."""
        m, r = model.double(), ref.double()
        bad = ~torch.isfinite(m)
        if bad.any():
            token, col = (int(i) for i in bad.nonzero()[0])
            if self.nonfinite is None or (token, col + start) < self.nonfinite[:2]:
                self.nonfinite = (token, col + start, float(m[token, col]))
        d = (m - r).abs()
        self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_abs += float(d.sum())
        self.count += d.numel()
        new_ref_max = torch.maximum(self.ref_max, r.max(-1).values)
        rescale = torch.exp(self.ref_max - new_ref_max)
        e = torch.exp(r - new_ref_max[:, None])
        self.ref_sum = self.ref_sum * rescale + e.sum(-1)
        self.weighted = self.weighted * rescale + (e * (r - m)).sum(-1)
        self.ref_max = new_ref_max
        new_mod_max = torch.maximum(self.mod_max, m.max(-1).values)
        self.mod_sum = self.mod_sum * torch.exp(self.mod_max - new_mod_max) + torch.exp(m - new_mod_max[:, None]).sum(-1)
        self.mod_max = new_mod_max
        for best, idx, x in ((self.ref_best, self.ref_idx, r), (self.mod_best, self.mod_idx, m)):
            v, i = x.max(-1)
            better = v > best
            best.copy_(torch.where(better, v, best))
            idx.copy_(torch.where(better, i + start, idx))

    def report(self, targets: torch.Tensor | None = None) -> DivergenceReport:
        """targets: each token's next token in the text [N], -1 where there is none (a text's last token): the
        reference's accuracy on them says whether it models the text at all (a random test model does not)."""
        ref_lse = self.ref_max + self.ref_sum.log()
        mod_lse = self.mod_max + self.mod_sum.log()
        kl = (self.weighted / self.ref_sum - ref_lse + mod_lse).clamp(min=0.0)  # rounding can dip below 0
        agree = (self.ref_idx == self.mod_idx).double()
        confident = torch.exp(self.ref_best - ref_lse) >= CONFIDENT
        n = int(confident.sum())
        where = None if self.nonfinite is None else \
            f"token {self.nonfinite[0]}, vocabulary id {self.nonfinite[1]} ({self.nonfinite[2]})"
        return DivergenceReport(self.n, float(kl.mean()), float(kl.max()), self.max_abs,
                                self.sum_abs / max(self.count, 1), float(agree.mean()), n,
                                float(agree[confident].mean()) if n else 1.0, where, _accuracy(self.ref_idx, targets))


def _accuracy(predicted: torch.Tensor, targets: torch.Tensor | None) -> float | None:
    if targets is None or not bool((targets >= 0).any()):
        return None
    known = targets >= 0
    return float((predicted[known] == targets[known]).double().mean())
