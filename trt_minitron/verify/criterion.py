"""What `verify` judges: checkpoint vs the source rounded as export rounds it, both computed in float32.

For a correct checkpoint the two sides hold bit-identical weights and differ only by float32 summation
order, at every checkpoint dtype, so tolerances are tight and relative to the compared values' scale.
The constants below are measured with `benchmarks/verify_tolerance.py` (README "verify"): on correct
exports (tiny models in three initialisations, SmolLM2-135M with 30 layers, Minitron-8B and
Llama-3.1-Minitron-4B widths; float32, float16, bfloat16) the largest teacher-forced stage difference was
1.7e-6 of the block's update, the largest rotary-table difference 6.0e-8 per position and the largest
end-to-end logit difference 7.3e-6 of max |logit|; each constant is at least 8x that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Teacher-forced sub-block (both sides fed the same input x, outputs y = x + update): max |delta y| may be
# STAGE_RTOL x max |update| (summation order inside the block) + RESID_RTOL x max |y| (the residual add
# rounds y to float32: a few ulps of y, whatever the block's update) + FLOOR.
STAGE_RTOL = 2e-5
RESID_RTOL = 2.0**-20  # ~9.5e-7, 8 float32 ulps
# Rotary tables (cos, sin): both sides compute angle = position x inv_freq in float32, and their inv_freq
# may differ by an ulp or two, so the difference grows with the position: ROPE_PER_POSITION x T + RESID_RTOL.
# Measured: <= 6e-8 per position (llama3 scaling), 1.5e-8 without, from 128 to 8192 positions.
ROPE_PER_POSITION = 2.0**-21  # ~4.8e-7
# End-to-end logits (each side runs on its own hidden states, so per-layer noise accumulates).
LOGIT_RTOL = 1e-4
FLOOR = 1e-9


def stage_tolerance(update_scale: float, output_scale: float) -> float:
    """update_scale: max |block update| (or |output| for a stage without residual, output_scale 0)."""
    return STAGE_RTOL * update_scale + RESID_RTOL * output_scale + FLOOR


def logit_tolerance(max_abs_logit: float) -> float:
    return LOGIT_RTOL * max_abs_logit + FLOOR


@dataclass(frozen=True)
class Check:
    """One teacher-forced comparison: both sides fed the same input, outputs compared."""

    where: str  # "embedding", "rope", "layer 7 attention", "layer 7 mlp", "final norm", "lm_head"
    max_abs_diff: float
    tolerance: float
    update_scale: float = 0.0  # max |output - input| of the judge (max |output| where there is no residual)
    output_scale: float = 0.0  # max |output| of a residual block, else 0
    detail: str = ""  # why the comparison could not be made numerically

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance  # NaN compares False: a NaN fails

    def line(self) -> str:
        if self.detail:
            return f"{self.where}: {self.detail}"
        return f"{self.where}: max |delta| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})"


def stage_check(where: str, ours: torch.Tensor, theirs: torch.Tensor, inp: torch.Tensor | None = None) -> Check:
    """ours/theirs: one sub-block's output on the same input `inp` (None: not a residual block)."""
    diff = float((ours - theirs).abs().max())
    update = float((theirs if inp is None else theirs - inp).abs().max())
    output = 0.0 if inp is None else float(theirs.abs().max())
    return Check(where, diff, stage_tolerance(update, output), update, output)


def rope_check(ours: tuple[torch.Tensor, torch.Tensor], theirs: tuple[torch.Tensor, torch.Tensor]) -> Check:
    """(cos, sin) [T, rotary dim] of each side over the prompt's positions."""
    tol = ROPE_PER_POSITION * ours[0].shape[-2] + RESID_RTOL
    if ours[0].shape != theirs[0].shape:
        return Check("rope", float("inf"), tol, detail=f"rotary dimensions differ: {ours[0].shape[-1]} "
                     f"(checkpoint) vs {theirs[0].shape[-1]} (source)")
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    return Check("rope", diff, tol)


@dataclass(frozen=True)
class LogitReport:
    max_abs_diff: float
    mean_abs_diff: float
    max_abs_logit: float  # of the side compared against
    top1_agreement: float
    ties: int  # top-1 disagreements where the reference's top two are within the tolerance
    disagreements: int  # top-1 disagreements that are not ties


class LogitStats:
    """max/mean |ours - ref| and top-1 agreement over logits [T, vocab] fed in vocabulary blocks."""

    def __init__(self, num_tokens: int):
        self.max_abs, self.sum_abs, self.count, self.max_ref = 0.0, 0.0, 0, 0.0
        neg = torch.full((num_tokens,), -torch.inf, dtype=torch.float64)
        idx = torch.zeros(num_tokens, dtype=torch.long)
        self.ref_best, self.ref_idx = neg.clone(), idx.clone()
        self.ours_best, self.ours_idx, self.ref_at_ours = neg.clone(), idx.clone(), neg.clone()

    def update(self, ours: torch.Tensor, ref: torch.Tensor, start: int = 0) -> None:
        """ours/ref: float32 logits [T, block] for vocabulary ids start .. start + block."""
        d = (ours - ref).abs()
        self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_abs += float(d.sum())
        self.count += d.numel()
        self.max_ref = max(self.max_ref, float(ref.abs().max()))
        rv, ri = ref.max(-1)
        better = rv.double() > self.ref_best
        self.ref_best = torch.where(better, rv.double(), self.ref_best)
        self.ref_idx = torch.where(better, ri + start, self.ref_idx)
        ov, oi = ours.max(-1)
        better = ov.double() > self.ours_best
        self.ours_best = torch.where(better, ov.double(), self.ours_best)
        self.ours_idx = torch.where(better, oi + start, self.ours_idx)
        self.ref_at_ours = torch.where(better, ref.gather(-1, oi[:, None])[:, 0].double(), self.ref_at_ours)

    def report(self, tolerance: float = 0.0) -> LogitReport:
        agree = self.ours_idx == self.ref_idx
        tie = ~agree & (self.ref_best - self.ref_at_ours <= tolerance)
        return LogitReport(self.max_abs, self.sum_abs / max(self.count, 1), self.max_ref,
                           float(agree.double().mean()), int(tie.sum()), int((~agree & ~tie).sum()))


@dataclass(frozen=True)
class VerifyResult:
    mode: str  # "layers" (teacher-forced, streamed) or "full" (whole models)
    dtype: str  # the checkpoint's
    num_tokens: int
    checks: tuple[Check, ...]  # teacher-forced stages in model order (empty in full mode)
    logits: LogitReport | None  # checkpoint vs the rounded source, end to end: judged (None: not run, see problems)
    logit_tolerance: float
    cast: LogitReport | None  # checkpoint vs the source as stored: what the cast costs, reported only
    notes: tuple[str, ...] = ()
    what: str = ""  # what the checkpoint is, said on the first line
    problems: tuple[str, ...] = ()  # tensors that contradict config.json: failures found before any number is run

    @property
    def first_divergence(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    @property
    def logits_ok(self) -> bool:
        lg = self.logits
        return lg is not None and lg.max_abs_diff <= self.logit_tolerance and lg.disagreements == 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.first_divergence is None and self.logits_ok

    @property
    def max_abs_diff(self) -> float:
        return self.logits.max_abs_diff if self.logits else float("nan")

    @property
    def mean_abs_diff(self) -> float:
        return self.logits.mean_abs_diff if self.logits else float("nan")

    @property
    def top1_agreement(self) -> float:
        return self.logits.top1_agreement if self.logits else float("nan")

    def summary(self) -> str:
        lines = [f"verify: {self.what}"] if self.what else []
        lines += [f"  note: {n}" for n in self.notes]
        if self.problems:
            more = f" (and {len(self.problems) - 8} more)" if len(self.problems) > 8 else ""
            lines.append(f"  {len(self.problems)} tensor(s) contradict config.json, so no loader would compute the "
                         f"source's numbers{more}:")
            lines += [f"    {p}" for p in self.problems[:8]]
            lines.append("FAIL")
            return "\n".join(lines)
        lg, cast = self.logits, self.cast
        how = "layer by layer, teacher-forced" if self.mode == "layers" else "whole models"
        lines.append(f"verify ({how}): {self.num_tokens} tokens; checkpoint {self.dtype} vs the source rounded to "
                     f"{self.dtype} as export rounds it, both computed in float32")
        bad = self.first_divergence
        if bad is not None:
            lines.append(f"  first divergence: {bad.line()}")
        elif self.checks:
            worst = max(self.checks, key=lambda c: c.max_abs_diff / c.tolerance)
            lines.append(f"  all {len(self.checks)} stages within tolerance; closest: {worst.line()}")
        tie = f", {lg.ties} exact ties" if lg.ties else ""
        lines.append(f"  logits vs rounded source: max |delta| {lg.max_abs_diff:.3g} (tolerance {self.logit_tolerance:.3g}"
                     f" = {LOGIT_RTOL:g} x max |logit| {lg.max_abs_logit:.3g}), mean {lg.mean_abs_diff:.3g}, "
                     f"top-1 agreement {lg.top1_agreement:.1%}{tie}")
        lines.append(f"  logits vs source as stored (the cast's cost, not judged): max |delta| {cast.max_abs_diff:.3g}, "
                     f"mean {cast.mean_abs_diff:.3g}, top-1 agreement {cast.top1_agreement:.1%}")
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)
