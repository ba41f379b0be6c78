"""Planted bugs in Hugging Face outputs (`export --format hf`, `quantize --format hf`) that `verify` must reject.

Each is what a converter or a hand edit really gets wrong (issue 17); `where` is what verify must name: the first
diverging stage, or a tensor / label it reports as contradicting config.json. Each plant edits a correct output
folder in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file


def edit_tensors(folder: Path, edit: Callable[[dict], None]) -> None:
    """edit(tensors) on a single-file checkpoint's model.safetensors, in place (metadata kept)."""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg, indent=2))


def edit_config(folder: Path, edit: Callable[[dict], None]) -> None:
    edit_json(folder / "config.json", edit)


def kv_interleave(folder: Path) -> None:
    """Megatron's fused QKV ([q heads, k, v] per KV group) split as if it were [Q; K; V]: the .nemo -> HF bug."""
    cfg = json.loads((folder / "config.json").read_text())
    heads, groups, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

    def edit(t):
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}.self_attn."
            q, k, v = (t[f"{p}{x}_proj.weight"] for x in "qkv")
            per = heads // groups
            fused = torch.cat([torch.cat([q.reshape(groups, per * d, -1)[g], k.reshape(groups, d, -1)[g],
                                          v.reshape(groups, d, -1)[g]]) for g in range(groups)])
            t[f"{p}q_proj.weight"], t[f"{p}k_proj.weight"], t[f"{p}v_proj.weight"] = torch.split(
                fused, [heads * d, groups * d, groups * d])
    edit_tensors(folder, edit)


def gate_up_swapped(folder: Path) -> None:
    def edit(t):
        p = "model.layers.1.mlp."
        t[p + "gate_proj.weight"], t[p + "up_proj.weight"] = t[p + "up_proj.weight"], t[p + "gate_proj.weight"]
    edit_tensors(folder, edit)


def plus_one_stored(folder: Path) -> None:
    """layernorm1p's +1 added to the stored gammas, which transformers' NemotronLayerNorm1P adds again."""
    def edit(t):
        for name in [n for n in t if "norm" in n and n.endswith("weight")]:
            t[name] = (t[name].float() + 1.0).to(t[name].dtype)
    edit_tensors(folder, edit)


def head_dim_removed(folder: Path) -> None:
    edit_config(folder, lambda c: c.pop("head_dim"))


def rope_theta_changed(folder: Path) -> None:
    edit_config(folder, lambda c: c.update(rope_theta=c["rope_theta"] * 2))


def rope_scaling_changed(folder: Path) -> None:
    """A llama3 scaling's factor changed, or a linear scaling added where there was none."""
    def edit(c):
        scaling = c.get("rope_scaling")
        c["rope_scaling"] = ({**scaling, "factor": scaling["factor"] * 2} if scaling
                             else {"rope_type": "linear", "factor": 2.0})
    edit_config(folder, edit)


def partial_rotary_changed(folder: Path) -> None:
    edit_config(folder, lambda c: c.update(partial_rotary_factor=1.0 if c.get("partial_rotary_factor", 1.0) < 1
                                           else 0.5))


def tie_flipped(folder: Path) -> None:
    edit_config(folder, lambda c: c.update(tie_word_embeddings=not c.get("tie_word_embeddings", False)))


def layer_copied(folder: Path) -> None:
    def edit(t):
        for name in [n for n in t if n.startswith("model.layers.1.")]:
            t[name.replace("layers.1.", "layers.2.")] = t[name].clone()
    edit_tensors(folder, edit)


@dataclass(frozen=True)
class Bug:
    name: str
    archs: tuple[str, ...]  # HF architecture names it applies to
    where: tuple[str, ...]  # the first divergence verify names, or text of a problem it reports (any one of them)
    plant: Callable[[Path], None]


ALL = ("LlamaForCausalLM", "MistralForCausalLM", "NemotronForCausalLM")
GATED = ("LlamaForCausalLM", "MistralForCausalLM")

BUGS = [
    Bug("k-v-interleave", ALL, ("layer 0 attention",), kv_interleave),
    Bug("gate-up-swapped", GATED, ("layer 1 mlp",), gate_up_swapped),
    Bug("plus-one-stored", ("NemotronForCausalLM",), ("layer 0 attention",), plus_one_stored),
    Bug("head-dim-removed", ALL, ("model.layers.0.self_attn.q_proj.weight is",), head_dim_removed),
    Bug("rope-theta-changed", ALL, ("rope",), rope_theta_changed),
    Bug("rope-scaling-changed", ALL, ("rope",), rope_scaling_changed),
    Bug("partial-rotary-changed", ALL, ("rope", "partial_rotary_factor=0.5"), partial_rotary_changed),
    Bug("tie-flipped", ALL, ("unexpected tensor lm_head.weight",), tie_flipped),
    Bug("layer-copied", ALL, ("layer 2 attention",), layer_copied),
]


def scale_doubled(folder: Path) -> None:
    """One quantized linear's weight_scale x2 in a unified checkpoint."""
    def edit(t):
        name = "model.layers.1.mlp.down_proj.weight_scale"
        t[name] = t[name] * 2
    edit_tensors(folder, edit)


RELABEL = {"FP8": "W8A8_SQ_PER_CHANNEL", "W8A8_SQ_PER_CHANNEL": "FP8", "W4A16_AWQ": "W4A8_AWQ"}


def relabelled(folder: Path) -> None:
    """quant_algo relabelled to another format, in both hf_quant_config.json and config.json, consistently."""
    def edit_quant(c):
        c["quantization"]["quant_algo"] = RELABEL[c["quantization"]["quant_algo"]]
    edit_json(folder / "hf_quant_config.json", edit_quant)
    edit_config(folder, lambda c: c["quantization_config"].update(quant_algo=RELABEL[c["quantization_config"]["quant_algo"]]))


def relabelled_in_one_file(folder: Path) -> None:
    """quant_algo relabelled in hf_quant_config.json only (TensorRT-LLM reads it; vLLM may read config.json)."""
    def edit_quant(c):
        c["quantization"]["quant_algo"] = RELABEL[c["quantization"]["quant_algo"]]
    edit_json(folder / "hf_quant_config.json", edit_quant)


QUANT_BUGS = [
    Bug("scale-x2", ALL, ("layer 1 mlp.down_proj",), scale_doubled),
    Bug("quant-algo-relabelled", ALL, ("model.layers.0.",), relabelled),
    Bug("quant-algo-relabelled-in-one-file", ALL, ("quant_algo disagrees",), relabelled_in_one_file),
]
