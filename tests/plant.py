"""Planted export bugs: each writes a wrong TensorRT-LLM checkpoint of a tiny model that `verify` must reject.

Each bug is what a converter really gets wrong (see README "export"); `where` is the first stage that
verify's layer-by-layer mode must name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

from safetensors.torch import load_file, save_file

from trt_minitron.archs.base import Produce, RankContext, Rule, copy
from trt_minitron.archs.nemotron import Nemotron
from trt_minitron.export.run import ExportOptions, run_export


@dataclass(frozen=True)
class function_rule(Rule):  # noqa: N801
    """A rule written as a plain function `fn(ctx, prefix) -> produce(reader)` reading the HF tensors `inputs`: what no
    shipped architecture needs (every rule has a Layout), kept here to plant bugs and to exercise export's route for
    a rule without a Layout (planned on meta tensors, made in memory)."""

    fn: Callable[[RankContext, str], Produce]
    inputs: tuple[str, ...]

    def __call__(self, ctx: RankContext, pre: str) -> Produce:  # type: ignore[override]
        return self.fn(ctx, pre)


def export(src: Path, out: Path, dtype: str, tp: int = 2, pp: int = 1) -> Path:
    run_export(ExportOptions(src=str(src), output=out, dtype=dtype, tp=tp, pp=pp))
    return out


def _edit_ranks(out: Path, edit: Callable[[dict, dict], None]) -> None:
    """Apply edit(tensors, config) to every rank file of a checkpoint, in place."""
    cfg = json.loads((out / "config.json").read_text())
    for r in range(cfg["mapping"]["world_size"]):
        f = out / f"rank{r}.safetensors"
        tensors = load_file(f)
        edit(tensors, cfg)
        save_file({k: v.contiguous() for k, v in tensors.items()}, f)


def _edit_config(out: Path, edit: Callable[[dict], None]) -> None:
    cfg = json.loads((out / "config.json").read_text())
    edit(cfg)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))


def swap_fc_gate(src, out, dtype, other):  # TRT fc must be HF gate_proj; a converter that takes up_proj
    export(src, out, dtype)

    def edit(t, cfg):
        p = "transformer.layers.1.mlp."
        t[p + "fc.weight"], t[p + "gate.weight"] = t[p + "gate.weight"], t[p + "fc.weight"]
    _edit_ranks(out, edit)


def swap_kv(src, out, dtype, other):
    export(src, out, dtype)

    def edit(t, cfg):
        d, tp = cfg["head_size"], cfg["mapping"]["tp_size"]
        q, kv = cfg["num_attention_heads"] // tp * d, -(-cfg["num_key_value_heads"] // tp) * d
        name = "transformer.layers.1.attention.qkv.weight"
        w = t[name].clone()
        w[q:q + kv], w[q + kv:] = t[name][q + kv:], t[name][q:q + kv]
        t[name] = w
    _edit_ranks(out, edit)


def _export_with_norm_rule(src, out, dtype, rule) -> None:
    layers = {"input_layernorm.weight": rule("input_layernorm.weight"),
              "post_layernorm.weight": rule("post_attention_layernorm.weight")}
    with mock.patch.dict(Nemotron.per_layer, layers), mock.patch.dict(Nemotron.final_norm,
                                                                      {"weight": rule("model.norm.weight")}):
        export(src, out, dtype)


def drop_plus_one(src, out, dtype, other):  # layernorm1p gamma copied as stored: the +1 forgotten
    _export_with_norm_rule(src, out, dtype, copy)


def double_plus_one(src, out, dtype, other):  # +1 folded by the converter and again by the runtime
    def plus_two(hf):
        return function_rule(lambda ctx, pre: lambda r: (r.read(pre + hf).float() + 2.0).to(ctx.dtype).contiguous(),
                             (hf,))
    _export_with_norm_rule(src, out, dtype, plus_two)


def delete_rope_scaling(src, out, dtype, other):
    export(src, out, dtype)
    _edit_config(out, lambda c: c.update(rotary_scaling=None))


def wrong_rotary_pct(src, out, dtype, other):  # partial rotary 0.5 written as full rotary
    export(src, out, dtype)
    _edit_config(out, lambda c: c.update(rotary_pct=1.0))


def other_model(src, out, dtype, other):  # a different model of the same shape
    export(other, out, dtype)


def copy_layer(src, out, dtype, other):  # layer 2's tensors taken from layer 1
    export(src, out, dtype)

    def edit(t, cfg):
        for name in [n for n in t if n.startswith("transformer.layers.1.")]:
            t[name.replace("layers.1.", "layers.2.")] = t[name].clone()
    _edit_ranks(out, edit)


@dataclass(frozen=True)
class Bug:
    name: str
    archs: tuple[str, ...]
    where: str  # the first divergence the layer-by-layer mode must report
    plant: Callable[[Path, Path, str, Path], None]  # (source, output, dtype, other source of the same shape)


BUGS = [
    Bug("fc-gate-swapped", ("llama",), "layer 1 mlp", swap_fc_gate),
    Bug("k-v-swapped", ("llama", "nemotron"), "layer 1 attention", swap_kv),
    Bug("plus-one-dropped", ("nemotron",), "layer 0 attention", drop_plus_one),
    Bug("plus-one-doubled", ("nemotron",), "layer 0 attention", double_plus_one),
    Bug("rope-scaling-deleted", ("llama",), "rope", delete_rope_scaling),
    Bug("rotary-pct-wrong", ("nemotron",), "rope", wrong_rotary_pct),
    Bug("other-model", ("llama", "nemotron"), "embedding", other_model),
    Bug("layer-copied", ("llama", "nemotron"), "layer 2 attention", copy_layer),
]

# Llama-3.1's own rope: theta 500000 and llama3 scaling from 8192 positions, where a deleted scaling moves
# only the low frequencies (the case that passed the old absolute tolerance in bfloat16).
LLAMA31_ROPE = dict(rope_theta=500000.0, max_position_embeddings=131072,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
