"""`trt-minitron verify`: validate the checkpoint, tokenize the prompt, match the reference, compare."""

from __future__ import annotations

from pathlib import Path

import torch

from ..archs import get_arch
from ..checkpoints.hf import HF, TRTLLM, UNIFIED, checkpoint_kind
from ..checkpoints.trtllm import MergedCheckpoint, check_rank_files, check_replicated_norms, read_checkpoint
from ..errors import CheckpointError, ConfigError, MissingDependencyError
from ..options import VerifyOptions
from ..sources import open_source
from ..sources.checks import check_source
from ..tensors.dtypes import dtype_name, torch_dtype
from .criterion import VerifyResult, logit_tolerance
from .matching import match_hf_reference, match_reference

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


def run_verify(opts: VerifyOptions):
    """Entry point of `trt-minitron verify`: what the checkpoint is (checkpoints.hf.checkpoint_kind), then that kind's
    proof; the checkpoint is validated completely before the source is opened.

    A quantized checkpoint (TensorRT-LLM, or ModelOpt's unified Hugging Face one) is verified on CNN/DailyMail
    articles (`dataset_file`, default the hub's test split: the first `num_samples`, `max_tokens` tokens each) by
    verify/quantized.py, returning its QuantizedVerifyResult; `prompt` and `full` apply to unquantized checkpoints only.
    Raises a TrtMinitronError (exit 2) for bad input; the returned result's `ok` is the numerical verdict.
    """
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError("verify needs transformers: pip install transformers") from None
    opts.validate()
    prompt, full, dataset_file, reference_src = opts.prompt, opts.full, opts.dataset_file, opts.reference
    path = Path(opts.checkpoint)
    kind = checkpoint_kind(path)
    if kind == UNIFIED:
        if prompt is not None or full:
            raise ConfigError(f"{path} is a {UNIFIED}: verify runs it layer by layer on CNN/DailyMail articles "
                              "(--dataset-file, --num-samples, --max-tokens), not --prompt/--full")
        from dataclasses import replace

        from .cost_gate import cost_failures
        from .hf_quantized import verify_unified

        # the calibration proof replays a TensorRT-LLM checkpoint's recipe only: a unified one's stays unproven
        result = verify_unified(path, reference_src, dataset_file, opts.num_samples, opts.max_tokens)
        failures = () if result.cost is None else tuple(cost_failures(result.cost, opts.max_kl, opts.min_top1))
        return replace(result, cost_failures=failures, gate=opts.gate())
    if kind == HF:
        if opts.max_kl is not None or opts.min_top1 is not None:
            raise ConfigError("--max-kl and --min-top1 judge a quantized checkpoint's cost; this one is not quantized")
        return _verify_hf(path, reference_src, prompt, full, dataset_file)
    ckpt = read_checkpoint(path)
    check_rank_files(ckpt, scan_weights=True)  # verify reads every weight anyway: NaN/Inf named first
    merged = MergedCheckpoint(ckpt)
    check_replicated_norms(merged)
    what = (f"{TRTLLM} ({ckpt.model.architecture}, {ckpt.dtype}, tp {ckpt.mapping.tp_size}, "
            f"pp {ckpt.mapping.pp_size})")
    if ckpt.quant is not None:
        return _verify_quantized(merged, reference_src, prompt, full, dataset_file, opts)
    if opts.max_kl is not None or opts.min_top1 is not None:
        raise ConfigError("--max-kl and --min-top1 judge a quantized checkpoint's cost; this one is not quantized")
    if dataset_file is not None:
        raise ConfigError("--dataset-file is for quantized checkpoints; this one is not quantized (use --prompt)")
    ids = prompt_ids(ckpt.path, ckpt.model.vocab_size, ckpt.model.max_position_embeddings, prompt)

    source = open_source(reference_src)
    try:
        vocab, notes = match_reference(ckpt.model, source.config, str(reference_src))
        check_source(get_arch(source.config.architecture), source)
        from .source_side import SourceSide

        src = SourceSide(source, torch_dtype(ckpt.dtype))
        if full:
            from .full import compare_full

            checks, vs_rounded, vs_stored = compare_full(merged, src, ids, vocab)
        else:
            from .layerwise import TrtSide, compare_layerwise

            checks, vs_rounded, vs_stored = compare_layerwise(TrtSide(merged), src, ids, vocab,
                                                              ckpt.model.num_hidden_layers)
    finally:
        source.close()
    tol = logit_tolerance(vs_rounded.max_ref)
    return VerifyResult(mode="full" if full else "layers", dtype=ckpt.dtype, num_tokens=ids.shape[1],
                        checks=tuple(checks), logits=vs_rounded.report(tol), logit_tolerance=tol,
                        cast=vs_stored.report(), notes=tuple(notes), what=what)


def _verify_hf(path: Path, reference_src, prompt, full, dataset_file) -> VerifyResult:
    """A Hugging Face folder against the source rounded as `export --format hf` rounds it, layer by layer or whole."""
    from ..checkpoints.hf import HFCheckpoint

    if dataset_file is not None:
        raise ConfigError("--dataset-file is for quantized checkpoints; this one is not quantized (use --prompt)")
    ckpt = HFCheckpoint(path)
    what = f"{HF} ({ckpt.describe()})"
    dtype = dtype_name(ckpt.dtype)
    problems = ckpt.config_problems() + ckpt.tensor_problems(ckpt.expected())
    if problems:  # the numbers cannot be run on tensors transformers would not load
        return VerifyResult(mode="layers", dtype=dtype, num_tokens=0, checks=(), logits=None, logit_tolerance=0.0,
                            cast=None, notes=tuple(ckpt.notes), what=what, problems=tuple(problems))
    cfg = ckpt.config
    ids = prompt_ids(path, cfg.vocab_size, cfg.max_position_embeddings, prompt)
    source = open_source(reference_src)
    try:
        vocab, notes = match_hf_reference(ckpt, source.config, str(reference_src))
        check_source(get_arch(source.config.architecture), source)
        from .source_side import SourceSide

        src = SourceSide(source, ckpt.dtype, target="hf")
        if full:
            from .full import compare_full_hf

            checks, vs_rounded, vs_stored = compare_full_hf(ckpt, src, ids, vocab)
        else:
            from .hf_side import HFSide
            from .layerwise import compare_layerwise

            checks, vs_rounded, vs_stored = compare_layerwise(HFSide(ckpt), src, ids, vocab, cfg.num_hidden_layers)
    finally:
        source.close()
    tol = logit_tolerance(vs_rounded.max_ref)
    return VerifyResult(mode="full" if full else "layers", dtype=dtype, num_tokens=ids.shape[1], checks=tuple(checks),
                        logits=vs_rounded.report(tol), logit_tolerance=tol, cast=vs_stored.report(),
                        notes=tuple(ckpt.notes + notes), what=what)


def _verify_quantized(merged: MergedCheckpoint, reference_src, prompt, full, dataset_file, opts: VerifyOptions):
    from dataclasses import replace

    from .calibration import prove_calibration
    from .cost_gate import cost_failures
    from .quantized import TrtQuantizedSide, text_ids, verify_quantized

    ckpt = merged.ckpt
    if prompt is not None or full:
        raise ConfigError(f"{ckpt.path} is quantized ({ckpt.quant.quant_algo}): verify runs it layer by layer on "
                          "CNN/DailyMail articles (--dataset-file, --num-samples, --max-tokens), not --prompt/--full")
    ids = text_ids(ckpt.path, ckpt.model.vocab_size, dataset_file, opts.num_samples, opts.max_tokens)
    side = TrtQuantizedSide(merged)  # the sidecar checked before the source is opened
    source = open_source(reference_src)
    try:
        vocab, notes = match_reference(ckpt.model, source.config, str(reference_src))
        check_source(get_arch(source.config.architecture), source)
        result = verify_quantized(side, source, ids, vocab, tuple(notes))
        proof = prove_calibration(merged, source) if opts.prove_calibration else None
    finally:
        source.close()
    return replace(result, calibration=proof, cost_failures=tuple(cost_failures(result.cost, opts.max_kl, opts.min_top1)),
                   gate=opts.gate())


def prompt_ids(path: Path, vocab: int, max_positions: int, prompt: str | None) -> torch.Tensor:
    """Token ids [1, T] of the prompt with the checkpoint's tokenizer; without one, fixed pseudo-random ids."""
    tok = None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    if tok is None:
        if prompt:
            raise CheckpointError(f"{path} has no usable tokenizer for --prompt; omit it to use fixed token ids")
        n = min(RANDOM_PROMPT_TOKENS, max_positions)
        return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0))
    ids = tok(prompt or DEFAULT_PROMPT, return_tensors="pt").input_ids
    if ids.numel() == 0:
        raise ConfigError("the prompt tokenizes to no tokens")
    if int(ids.max()) >= vocab:
        raise CheckpointError(f"the tokenizer in {path} gives token id {int(ids.max())}, but the checkpoint's "
                              f"vocab_size is {vocab}")
    return ids
