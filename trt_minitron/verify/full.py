"""`verify --full`: whole models, one at a time (the checkpoint's, then the source rounded, then as stored).

Memory is one whole model in float32; it checks transformers' full forward (its own causal mask,
rotary and layer loop) where the layer-by-layer mode composes transformers' layers itself.
"""

from __future__ import annotations

import torch

from ..reference import ReferenceModel
from ..trtllm_ckpt import MergedCheckpoint
from .criterion import LogitStats
from .source_side import SourceSide


def compare_full(merged: MergedCheckpoint, src: SourceSide, ids: torch.Tensor, vocab: int) -> tuple[LogitStats, LogitStats]:
    """End-to-end logit stats of the checkpoint vs the rounded source, and vs the source as stored."""
    T = ids.shape[1]
    pos = torch.arange(T)[None]
    with torch.no_grad():
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
    return vs_rounded, vs_stored
