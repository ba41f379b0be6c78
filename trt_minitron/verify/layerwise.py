"""`verify` one decoder layer at a time: memory is about one layer of each side, not two models.

Per layer, the source (transformers' decoder layer with the source's weights) runs twice, as stored and
rounded to the checkpoint dtype (once where rounding is exact); the checkpoint (trt-minitron's reference blocks on its tp-merged
weights) runs teacher-forced, on the rounded source's own input to each sub-block, so every attention
and MLP sub-block is judged alone and the first divergence is named, and free-running on its own hidden
state, for the end-to-end logits. The embedding is gathered for the prompt's rows only and lm_head is
applied in vocabulary blocks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from ..checkpoints.reference import LayerWeights, Semantics, attention_block, check_layer_kind, mlp_block, norm, rope_cos_sin
from ..checkpoints.trtllm import MergedCheckpoint
from .criterion import Check, LogitStats, rope_check, stage_check, stage_tolerance
from .source_side import SourceSide, causal_additive_mask

BLOCK_BYTES = 64 * 2**20  # float32 bytes of one lm_head block per side


@dataclass
class Streams:
    """The hidden states [1, T, hidden] of each run after the current layer."""

    rounded: torch.Tensor  # the source rounded to the checkpoint dtype: the judge, and the teacher
    stored: torch.Tensor  # the source as stored, for the cast's cost (the same object while rounding is exact)
    ckpt: torch.Tensor  # the checkpoint, free-running


def _source_layer(src: SourceSide, layer: int, streams: Streams, mask, pos, cos_sin) -> tuple[torch.Tensor, torch.Tensor]:
    """Run transformers' layer as stored, then rounded; return the rounded run's (attention residual, output)."""
    module, exact = src.decoder_layer(layer)

    def run(x: torch.Tensor) -> torch.Tensor:
        out = module(x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple

    shared = exact and streams.stored is streams.rounded  # the stored run would repeat the rounded one
    if not shared:
        streams.stored = run(streams.stored)
        if not exact:
            src.round_layer_(module)
    captured = []
    # The attention residual is the input of the post-attention norm: read it from transformers' own forward.
    hook = module.post_attention_layernorm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    out = run(streams.rounded)
    hook.remove()
    if shared:
        streams.stored = out
    return captured[0], out


def compare_layerwise(merged: MergedCheckpoint, src: SourceSide, ids: torch.Tensor,
                      vocab: int) -> tuple[list[Check], LogitStats, LogitStats]:
    """Checks in model order, end-to-end logit stats vs the rounded source, and vs the source as stored."""
    sem = Semantics.from_config(merged.ckpt.raw)
    T = ids.shape[1]
    pos = torch.arange(T)[None]
    checks: list[Check] = []
    with torch.no_grad():
        emb, emb_stored = src.embedding_rows(ids[0])
        ck_emb = merged.embedding_rows(ids[0]).float()[None]
        checks.append(stage_check("embedding", ck_emb, emb[None]))
        streams = Streams(rounded=emb[None], stored=emb[None] if emb_stored is emb else emb_stored[None], ckpt=ck_emb)

        hf_mask, hf_rope = causal_additive_mask(T), src.rotary(pos)
        cos, sin = rope_cos_sin(sem, pos)
        checks.append(rope_check((cos[0, 0], sin[0, 0]), (hf_rope[0][0], hf_rope[1][0])))
        # Teacher-forced attention takes the source's rotary tables too (judged on their own just above), so
        # their position-growing float32 noise stays out of the attention stages; free-running takes its own.
        if checks[-1].detail:
            forced_cs = cos, sin  # different rotary dims: the rope stage has failed already
        else:
            forced_cs = hf_rope[0][:, None], hf_rope[1][:, None]
        cos2, sin2 = torch.cat([forced_cs[0], cos]), torch.cat([forced_cs[1], sin])
        mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
        layers = merged.ckpt.model.num_hidden_layers
        for i in range(layers):
            if sys.stderr.isatty():
                print(f"verify: layer {i + 1}/{layers}", end="\r", file=sys.stderr, flush=True)
            x_in = streams.rounded
            attn, out = _source_layer(src, i, streams, hf_mask, pos, hf_rope)
            w = LayerWeights.from_merged(merged.layer(i, torch.float32))
            check_layer_kind(sem, w, f"layer {i}")
            # Batch 0: teacher-forced on the rounded source's input to each sub-block; batch 1: free-running.
            a = attention_block(sem, torch.cat([x_in, streams.ckpt]), w, cos2, sin2, mask)
            checks.append(stage_check(f"layer {i} attention", a[:1], attn, x_in))
            m = mlp_block(sem, torch.cat([attn, a[1:]]), w)
            checks.append(stage_check(f"layer {i} mlp", m[:1], out, attn))
            streams.ckpt, streams.rounded = m[1:], out
            del w, a, m

        ln_f = {k: v.float() for k, v in merged.final_norm().items()}
        norm_r, exact = src.final_norm(rounded=True)
        normed = norm_r(streams.rounded)[0]
        ours = norm(sem, torch.cat([streams.rounded, streams.ckpt]), ln_f["weight"], ln_f.get("bias"))
        checks.append(stage_check("final norm", ours[0], normed))
        if exact and streams.stored is streams.rounded:
            stored = normed
        else:
            stored = src.final_norm(rounded=False)[0](streams.stored)[0]

        vs_rounded, forced = LogitStats(T), LogitStats(T)
        vs_stored = vs_rounded if stored is normed else LogitStats(T)
        rows = max(1, BLOCK_BYTES // (4 * merged.ckpt.model.hidden_size))
        for start in range(0, vocab, rows):
            stop = min(start + rows, vocab)
            mine = ours @ merged.lm_head_rows(start, stop).float().T  # [2, T, block]: teacher-forced, free
            head_r, head_s = src.head_rows(start, stop)
            ref = normed @ head_r.T
            forced.update(mine[0], ref, start)
            vs_rounded.update(mine[1], ref, start)
            if vs_stored is not vs_rounded:
                vs_stored.update(mine[1], ref if stored is normed and head_s is head_r else stored @ head_s.T, start)
            del mine, head_r, head_s, ref
        checks.append(Check("lm_head", forced.max_abs, stage_tolerance(forced.max_ref, 0.0), forced.max_ref))
    return checks, vs_rounded, vs_stored
