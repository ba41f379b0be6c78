"""`verify` one decoder layer at a time: memory is about one layer of each side, not two models.

Per layer, the source (transformers' decoder layer with the source's weights) runs twice, as stored and
rounded to the checkpoint dtype (once where rounding is exact); the checkpoint (a TensorRT-LLM checkpoint: trt-minitron's
reference blocks on its tp-merged weights, TrtSide; a Hugging Face folder: transformers' own layer built from its
config.json, verify/hf_side.py) runs teacher-forced, on the rounded source's own input to each sub-block, so every attention
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


class TrtSide:
    """The checkpoint side for a TensorRT-LLM checkpoint: trt-minitron's reference blocks (TensorRT-LLM's semantics)
    on its tp-merged weights, one layer at a time."""

    def __init__(self, merged: MergedCheckpoint):
        self.merged = merged
        self.sem = Semantics.from_config(merged.ckpt.raw)
        self.hidden_size = merged.ckpt.model.hidden_size

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.merged.embedding_rows(ids).float()

    def rotary(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._own = rope_cos_sin(self.sem, pos)
        return self._own[0][0, 0], self._own[1][0, 0]

    def start(self, num_tokens: int, source_rope: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """source_rope: transformers' (cos, sin) [1, T, dim] for the teacher-forced half, None to use our own."""
        cos, sin = self._own
        forced = (cos, sin) if source_rope is None else (source_rope[0][:, None], source_rope[1][:, None])
        self._cs = torch.cat([forced[0], cos]), torch.cat([forced[1], sin])
        self._mask = torch.ones(1, 1, num_tokens, num_tokens, dtype=torch.bool).tril()

    def layer(self, i: int, x_in: torch.Tensor, attn_src: torch.Tensor,
              free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attention on x_in, MLP on attn_src, the whole layer on `free`): batch 0 teacher-forced, 1 free-running."""
        w = LayerWeights.from_merged(self.merged.layer(i, torch.float32))
        check_layer_kind(self.sem, w, f"layer {i}")
        a = attention_block(self.sem, torch.cat([x_in, free]), w, *self._cs, self._mask)
        m = mlp_block(self.sem, torch.cat([attn_src, a[1:]]), w)
        return a[:1], m[:1], m[1:]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        ln_f = {k: v.float() for k, v in self.merged.final_norm().items()}
        return norm(self.sem, x, ln_f["weight"], ln_f.get("bias"))

    def lm_head_rows(self, start: int, stop: int) -> torch.Tensor:
        return self.merged.lm_head_rows(start, stop).float()


def compare_layerwise(side, src: SourceSide, ids: torch.Tensor, vocab: int,
                      layers: int) -> tuple[list[Check], LogitStats, LogitStats]:
    """Checks in model order, end-to-end logit stats vs the rounded source, and vs the source as stored.

    `side`: the checkpoint (TrtSide here, hf_side.HFSide for a Hugging Face folder)."""
    T = ids.shape[1]
    pos = torch.arange(T)[None]
    checks: list[Check] = []
    with torch.no_grad():
        emb, emb_stored = src.embedding_rows(ids[0])
        ck_emb = side.embedding_rows(ids[0])[None]
        checks.append(stage_check("embedding", ck_emb, emb[None]))
        streams = Streams(rounded=emb[None], stored=emb[None] if emb_stored is emb else emb_stored[None], ckpt=ck_emb)

        hf_mask, hf_rope = causal_additive_mask(T), src.rotary(pos)
        checks.append(rope_check(side.rotary(pos), (hf_rope[0][0], hf_rope[1][0])))
        # Teacher-forced attention takes the source's rotary tables too (judged on their own just above), so
        # their position-growing float32 noise stays out of the attention stages; free-running takes its own.
        side.start(T, None if checks[-1].detail else hf_rope)
        for i in range(layers):
            if sys.stderr.isatty():
                print(f"verify: layer {i + 1}/{layers}", end="\r", file=sys.stderr, flush=True)
            x_in = streams.rounded
            attn, out = _source_layer(src, i, streams, hf_mask, pos, hf_rope)
            a, m, free = side.layer(i, x_in, attn, streams.ckpt)
            checks.append(stage_check(f"layer {i} attention", a, attn, x_in))
            checks.append(stage_check(f"layer {i} mlp", m, out, attn))
            streams.ckpt, streams.rounded = free, out
            del a, m

        norm_r, exact = src.final_norm(rounded=True)
        normed = norm_r(streams.rounded)[0]
        ours = side.final_norm(torch.cat([streams.rounded, streams.ckpt]))
        checks.append(stage_check("final norm", ours[0], normed))
        if exact and streams.stored is streams.rounded:
            stored = normed
        else:
            stored = src.final_norm(rounded=False)[0](streams.stored)[0]

        vs_rounded, forced = LogitStats(T), LogitStats(T)
        vs_stored = vs_rounded if stored is normed else LogitStats(T)
        rows = max(1, BLOCK_BYTES // (4 * side.hidden_size))
        for start in range(0, vocab, rows):
            stop = min(start + rows, vocab)
            mine = ours @ side.lm_head_rows(start, stop).T  # [2, T, block]: teacher-forced, free
            head_r, head_s = src.head_rows(start, stop)
            ref = normed @ head_r.T
            forced.update(mine[0], ref, start)
            vs_rounded.update(mine[1], ref, start)
            if vs_stored is not vs_rounded:
                vs_stored.update(mine[1], ref if stored is normed and head_s is head_r else stored @ head_s.T, start)
            del mine, head_r, head_s, ref
        checks.append(Check("lm_head", forced.max_abs, stage_tolerance(forced.max_ref, 0.0), forced.max_ref))
    return checks, vs_rounded, vs_stored
