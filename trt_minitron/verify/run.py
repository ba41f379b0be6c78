"""`trt-minitron verify`: validate the checkpoint, tokenize the prompt, match the reference, compare."""

from __future__ import annotations

import torch

from ..archs import get_arch
from ..archs.config import ModelConfig
from ..checkpoints.trtllm import MergedCheckpoint, TrtCheckpoint, check_rank_files, check_replicated_norms, read_checkpoint
from ..errors import CheckpointError, ConfigError, MissingDependencyError
from ..options import VerifyOptions
from ..sources import open_source
from ..sources.checks import check_source
from ..tensors.dtypes import torch_dtype
from .criterion import VerifyResult, logit_tolerance

# Long enough (227 tokens with SmolLM2's tokenizer) that rope differences at far positions
# (a deleted llama3 scaling changes only the low frequencies) move the logits well past the tolerance.
DEFAULT_PROMPT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889 as the "
    "centrepiece of the 1889 World's Fair. Although initially criticised by some of France's leading artists "
    "and intellectuals for its design, it has since become a global cultural icon of France and one of the "
    "most recognisable structures in the world. The tower received 5,889,000 visitors in 2022. It is 330 "
    "metres tall, about the same height as an 81-storey building, and the tallest structure in Paris. Its "
    "base is square, measuring 125 metres on each side. During its construction, the Eiffel Tower surpassed "
    "the Washington Monument to become the tallest human-made structure in the world, a title it held for "
    "41 years until the Chrysler Building in New York City was finished in 1930. Today, visitors can")
RANDOM_PROMPT_TOKENS = 128  # fixed pseudo-random ids when the checkpoint has no tokenizer
SHAPE_FIELDS = ("architecture", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim")


def run_verify(opts: VerifyOptions):
    """Entry point of `trt-minitron verify`: the checkpoint is validated completely before the source is opened.

    A quantized checkpoint is verified on CNN/DailyMail articles (`dataset_file`, default the hub's test split:
    the first `num_samples`, `max_tokens` tokens each) by verify/quantized.py, returning its
    QuantizedVerifyResult; `prompt` and `full` apply to unquantized checkpoints only.
    Raises a TrtMinitronError (exit 2) for bad input; the returned result's `ok` is the numerical verdict.
    """
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError("verify needs transformers: pip install transformers") from None
    opts.validate()
    prompt, full, dataset_file, reference_src = opts.prompt, opts.full, opts.dataset_file, opts.reference
    ckpt = read_checkpoint(opts.checkpoint)
    check_rank_files(ckpt, scan_weights=True)  # verify reads every weight anyway: NaN/Inf named first
    merged = MergedCheckpoint(ckpt)
    check_replicated_norms(merged)
    if ckpt.quant is not None:
        return _verify_quantized(merged, reference_src, prompt, full, dataset_file, opts)
    if opts.max_kl is not None or opts.min_top1 is not None:
        raise ConfigError("--max-kl and --min-top1 judge a quantized checkpoint's cost; this one is not quantized")
    if dataset_file is not None:
        raise ConfigError("--dataset-file is for quantized checkpoints; this one is not quantized (use --prompt)")
    ids = prompt_ids(ckpt, prompt)

    source = open_source(reference_src)
    try:
        vocab, notes = match_reference(ckpt.model, source.config, str(reference_src))
        check_source(get_arch(source.config.architecture), source)
        from .source_side import SourceSide

        src = SourceSide(source, torch_dtype(ckpt.dtype))
        if full:
            from .full import compare_full as compare
        else:
            from .layerwise import compare_layerwise as compare
        checks, vs_rounded, vs_stored = compare(merged, src, ids, vocab)
    finally:
        source.close()
    tol = logit_tolerance(vs_rounded.max_ref)
    return VerifyResult(mode="full" if full else "layers", dtype=ckpt.dtype, num_tokens=ids.shape[1],
                        checks=tuple(checks), logits=vs_rounded.report(tol), logit_tolerance=tol,
                        cast=vs_stored.report(), notes=tuple(notes))


def _verify_quantized(merged: MergedCheckpoint, reference_src, prompt, full, dataset_file, opts: VerifyOptions):
    from dataclasses import replace

    from .calibration import prove_calibration
    from .cost_gate import cost_failures
    from .quantized import text_ids, verify_quantized

    ckpt = merged.ckpt
    if prompt is not None or full:
        raise ConfigError(f"{ckpt.path} is quantized ({ckpt.quant.quant_algo}): verify runs it layer by layer on "
                          "CNN/DailyMail articles (--dataset-file, --num-samples, --max-tokens), not --prompt/--full")
    ids = text_ids(ckpt, dataset_file, opts.num_samples, opts.max_tokens)
    source = open_source(reference_src)
    try:
        vocab, notes = match_reference(ckpt.model, source.config, str(reference_src))
        check_source(get_arch(source.config.architecture), source)
        result = verify_quantized(merged, source, ids, vocab, tuple(notes))
        proof = prove_calibration(merged, source) if opts.prove_calibration else None
    finally:
        source.close()
    return replace(result, calibration=proof, cost_failures=tuple(cost_failures(result.cost, opts.max_kl, opts.min_top1)),
                   gate=opts.gate())


def prompt_ids(ckpt: TrtCheckpoint, prompt: str | None) -> torch.Tensor:
    """Token ids [1, T] of the prompt with the checkpoint's tokenizer; without one, fixed pseudo-random ids."""
    vocab = ckpt.model.vocab_size
    tok = None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ckpt.path)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    if tok is None:
        if prompt:
            raise CheckpointError(f"{ckpt.path} has no usable tokenizer for --prompt; omit it to use fixed token ids")
        n = min(RANDOM_PROMPT_TOKENS, ckpt.model.max_position_embeddings)
        return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0))
    ids = tok(prompt or DEFAULT_PROMPT, return_tensors="pt").input_ids
    if ids.numel() == 0:
        raise ConfigError("the prompt tokenizes to no tokens")
    if int(ids.max()) >= vocab:
        raise CheckpointError(f"the tokenizer in {ckpt.path} gives token id {int(ids.max())}, but the checkpoint's "
                              f"vocab_size is {vocab}")
    return ids


def match_reference(ckpt: ModelConfig, ref: ModelConfig, where: str) -> tuple[int, list[str]]:
    """The vocabulary both sides share, and notes; a reference of another shape is a ConfigError.

    Only shapes are matched here: settings that change the maths without changing a shape (rope, rotary
    fraction, norm epsilon) are for the numbers to judge.
    """
    for name in SHAPE_FIELDS:
        a, b = getattr(ckpt, name), getattr(ref, name)
        if a != b:
            raise ConfigError(f"the reference {where} does not match the checkpoint: {name} {b} (reference) vs "
                              f"{a} (checkpoint)")
    if ref.vocab_size == ckpt.vocab_size:
        return ckpt.vocab_size, []
    # A larger reference vocabulary is padding (NeMo make_vocab_size_divisible_by, times tp) when it is the
    # checkpoint's rounded up to a multiple of the reference's own largest power-of-two divisor.
    pow2 = ref.vocab_size & -ref.vocab_size
    if ref.vocab_size > ckpt.vocab_size and -(-ckpt.vocab_size // pow2) * pow2 == ref.vocab_size:
        return ckpt.vocab_size, [f"compared over the shared vocabulary of {ckpt.vocab_size}: the reference's "
                                 f"{ref.vocab_size - ckpt.vocab_size} extra rows (to {ref.vocab_size}) are "
                                 "vocabulary padding the checkpoint trimmed"]
    raise ConfigError(f"the reference {where} has a different vocabulary: vocab_size {ref.vocab_size} (reference) vs "
                      f"{ckpt.vocab_size} (checkpoint)")
