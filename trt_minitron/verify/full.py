"""`verify --full`: whole models, one at a time (the checkpoint's, then the source rounded, then as stored).

Memory is one whole model in float32; it checks transformers' full forward (its own causal mask,
rotary and layer loop) where the layer-by-layer mode composes transformers' layers itself.
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
    T = ids.shape[1]
    pos = torch.arange(T)[None]
    with torch.no_grad():
        cos, sin = rope_cos_sin(Semantics.from_config(merged.ckpt.raw), pos)
        hf_cos, hf_sin = src.rotary(pos)
        checks = [rope_check((cos[0, 0], sin[0, 0]), (hf_cos[0], hf_sin[0]))]
        model = ReferenceModel(merged.ckpt.raw, merged)
        ours = model.forward(ids, pos)[0, :, :vocab]
        del model
        theirs = {}
        for rounded in (True, False):
            source_model = src.causal_lm(rounded)
            theirs[rounded] = source_model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, :, :vocab].float()
            del source_model
    vs_rounded, vs_stored = LogitStats(T), LogitStats(T)
    vs_rounded.update(ours, theirs[True])
    vs_stored.update(ours, theirs[False])
    return checks, vs_rounded, vs_stored
