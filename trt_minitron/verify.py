"""`verify`: the TensorRT-LLM checkpoint through the reference model vs the source through transformers."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, MissingDependencyError
from .reference import ReferenceModel

DEFAULT_PROMPT = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of "
                  "Gustave Eiffel and completed in 1889 for the World's Fair. Today it is")
# Max |delta logit| allowed by default, by checkpoint dtype. float32: only summation order differs.
# bfloat16/float16: the export rounds every weight (8/11 mantissa bits), which moves logits of
# logits by ~0.2 at most on SmolLM2-135M (measured; see README), less on the tiny test models.
DEFAULT_ATOL = {"float32": 1e-3, "float16": 0.25, "bfloat16": 0.5}


@dataclass(frozen=True)
class VerifyResult:
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    num_tokens: int
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol

    def summary(self) -> str:
        return (f"max |delta logit| {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g}, "
                f"top-1 agreement {self.top1_agreement:.1%} over {self.num_tokens} tokens "
                f"(atol {self.atol:g}): {'PASS' if self.ok else 'FAIL'}")


def load_hf_reference(src: str | Path):
    """The source model through transformers, float32, CPU. A .nemo goes through --format hf first."""
    from transformers import AutoModelForCausalLM

    path = Path(src)
    if path.suffix == ".gguf":
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    if path.suffix == ".nemo" or (path.is_dir() and (path / "model_config.yaml").is_file()):
        from .export import ExportOptions, run_export

        tmp = Path(tempfile.mkdtemp(prefix="trt-minitron-verify-"))
        try:
            run_export(ExportOptions(src=str(path), output=tmp / "hf", dtype="float32", format="hf"))
            return AutoModelForCausalLM.from_pretrained(tmp / "hf", dtype=torch.float32).eval()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not (path.is_dir() and (path / "config.json").is_file()):
        from .sources.hf import download_hub

        path = download_hub(str(src))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def prompt_ids(ckpt_dir: Path, prompt: str | None, vocab_size: int) -> torch.Tensor:
    """Token ids of the prompt with the checkpoint's tokenizer; without one, fixed pseudo-random ids."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ckpt_dir)
        ids = tok(prompt or DEFAULT_PROMPT, return_tensors="pt").input_ids
        if ids.numel() and int(ids.max()) < vocab_size:
            return ids
    except (OSError, ValueError, TypeError):
        pass
    if prompt:
        raise CheckpointError(f"{ckpt_dir} has no usable tokenizer for --prompt; omit it to use fixed token ids")
    return torch.randint(0, vocab_size, (1, 48), generator=torch.Generator().manual_seed(0))


def compare(ckpt_dir: str | Path, reference, input_ids: torch.Tensor, atol: float | None = None) -> VerifyResult:
    model = ReferenceModel.from_checkpoint(ckpt_dir, dtype=torch.float32)
    positions = torch.arange(input_ids.shape[1])[None].expand_as(input_ids)
    ours = model.forward(input_ids, positions)
    with torch.no_grad():
        theirs = reference(input_ids).logits.float()
    if theirs.shape != ours.shape:
        raise CheckpointError(f"logit shapes differ: checkpoint {list(ours.shape)}, source {list(theirs.shape)}")
    diff = (ours - theirs).abs()
    agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    if atol is None:
        atol = DEFAULT_ATOL[model.config["dtype"]]
    return VerifyResult(diff.max().item(), diff.mean().item(), agree, input_ids.numel(), atol)


def run_verify(ckpt_dir: str | Path, reference_src: str | Path, atol: float | None = None,
               prompt: str | None = None) -> VerifyResult:
    """Entry point of `trt-minitron verify`."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError("verify needs transformers: pip install transformers") from None
    from .trtllm_ckpt import read_checkpoint

    read_checkpoint(ckpt_dir)  # fail fast on a broken checkpoint before loading the source
    reference = load_hf_reference(reference_src)
    ids = prompt_ids(Path(ckpt_dir), prompt, int(reference.config.vocab_size))
    return compare(ckpt_dir, reference, ids, atol)
