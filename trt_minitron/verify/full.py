"""`verify --full`: whole models, one at a time (the checkpoint's, then the source rounded, then as stored).

Memory is one whole model in float32; it checks transformers' full forward (its own causal mask,
rotary and layer loop) where the layer-by-layer mode composes transformers' layers itself. The checkpoint's
model: trt-minitron's reference model for a TensorRT-LLM checkpoint, transformers' XForCausalLM built from the
folder's own config.json for a Hugging Face folder.
"""

from __future__ import annotations

import torch

from ..checkpoints.reference import ReferenceModel, Semantics, rope_cos_sin
from ..checkpoints.trtllm import MergedCheckpoint
from .criterion import Check, LogitStats, rope_check
from .source_side import SourceSide


def compare_full(merged: MergedCheckpoint, src: SourceSide, ids: torch.Tensor,
                 vocab: int) -> tuple[list[Check], LogitStats, LogitStats]:
    """The rotary tables' check, and end-to-end logit stats vs the rounded source and vs the source as stored."""
    pos = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        cos, sin = rope_cos_sin(Semantics.from_config(merged.ckpt.raw), pos)
        model = ReferenceModel(merged.ckpt.raw, merged)
        ours = model.forward(ids, pos)[0, :, :vocab]
        del model
    return _against_source((cos[0, 0], sin[0, 0]), ours, src, ids, vocab)


def compare_full_hf(ckpt, src: SourceSide, ids: torch.Tensor, vocab: int) -> tuple[list[Check], LogitStats, LogitStats]:
    """compare_full for a Hugging Face folder (checkpoints.hf.HFCheckpoint): transformers' whole model from its config.json."""
    from .hf_side import HFSide

    pos = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        rope = HFSide(ckpt).rotary(pos)
        model = ckpt.meta_model()
        weights = {n: ckpt.read(ckpt.head if n == "lm_head.weight" else n).float() for n in model.state_dict()}
        model.load_state_dict(weights, assign=True, strict=True)
        for parent in list(model.modules()):  # rotary buffers are not weights: build them for real
            for child_name, child in list(parent.named_children()):
                if isinstance(child, ckpt.modules.rotary):
                    setattr(parent, child_name, ckpt.modules.rotary(config=ckpt.config))
        ours = model.eval()(input_ids=ids, position_ids=pos, use_cache=False).logits[0, :, :vocab].float()
        del model, weights
    return _against_source(rope, ours, src, ids, vocab)


def _against_source(rope: tuple[torch.Tensor, torch.Tensor], ours: torch.Tensor, src: SourceSide, ids: torch.Tensor,
                    vocab: int) -> tuple[list[Check], LogitStats, LogitStats]:
    """The checkpoint's rotary tables [T, dim] and logits [T, vocab] against the source rounded and as stored."""
    T = ids.shape[1]
    pos = torch.arange(T)[None]
    with torch.no_grad():
        hf_cos, hf_sin = src.rotary(pos)
        checks = [rope_check(rope, (hf_cos[0], hf_sin[0]))]
        theirs = {}
        for rounded in (True, False):
            source_model = src.causal_lm(rounded)
            theirs[rounded] = source_model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, :, :vocab].float()
            del source_model
    vs_rounded, vs_stored = LogitStats(T), LogitStats(T)
    vs_rounded.update(ours, theirs[True])
    vs_stored.update(ours, theirs[False])
    return checks, vs_rounded, vs_stored
