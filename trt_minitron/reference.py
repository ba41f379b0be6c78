"""A small PyTorch model with TensorRT-LLM's semantics, run straight from a TensorRT-LLM checkpoint.

Written from TensorRT-LLM's layer definitions, not from transformers' modeling code: fused qkv
([Q; K; V] per rank), GatedMLP act(fc(x)) * gate(x) -> proj, or MLP proj(act(fc(x))), RmsNorm or
LayerNorm with the weights exactly as stored (layernorm1p already folded), rope_gpt_neox on the first
int(head_size * rotary_pct) channels with llama3/linear scaling. Ranks are merged back by
concatenation, which reproduces what tensor-parallel execution computes (a KV head repeated for
tp > kv heads stays repeated). With a KV cache it is also the `torch` generation backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import CheckpointError
from .trtllm_ckpt import read_checkpoint


@dataclass
class KVCache:
    k: torch.Tensor  # [layers, batch, kv_heads, max_len, head_size]
    v: torch.Tensor
    length: int = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


@dataclass
class Layer:
    ln_in_w: torch.Tensor
    ln_in_b: torch.Tensor | None
    qkv: torch.Tensor
    dense: torch.Tensor
    ln_post_w: torch.Tensor
    ln_post_b: torch.Tensor | None
    fc: torch.Tensor
    gate: torch.Tensor | None
    proj: torch.Tensor


def merge_ranks(config: dict, ranks: list[dict[str, torch.Tensor]]) -> tuple[dict, list[dict]]:
    """Global tensors from per-rank files: (embedding/ln_f/lm_head dict, per-layer dicts)."""
    m = config.get("mapping", {})
    tp, pp = int(m.get("tp_size", 1)), int(m.get("pp_size", 1))
    layers_total = int(config["num_hidden_layers"])
    per_stage = layers_total // pp

    def rank(p: int, t: int) -> dict[str, torch.Tensor]:
        return ranks[p * tp + t]

    def get(r: dict, name: str, where: str) -> torch.Tensor:
        if name not in r:
            raise CheckpointError(f"{where}: missing tensor {name}")
        return r[name]

    def replicated(p: int, name: str) -> torch.Tensor:
        first = get(rank(p, 0), name, f"rank{p * tp}")
        for t in range(1, tp):
            if not torch.equal(first, get(rank(p, t), name, f"rank{p * tp + t}")):
                raise CheckpointError(f"{name} differs between tensor-parallel ranks of stage {p}")
        return first

    last = pp - 1
    top = {"embedding": replicated(0, "transformer.vocab_embedding.weight")}
    for suffix in ("weight", "bias"):
        if f"transformer.ln_f.{suffix}" in rank(last, 0):
            top[f"ln_f.{suffix}"] = replicated(last, f"transformer.ln_f.{suffix}")
    if "lm_head.weight" in rank(last, 0):
        top["lm_head"] = torch.cat([get(rank(last, t), "lm_head.weight", "lm_head") for t in range(tp)], 0)
    else:
        top["lm_head"] = top["embedding"]

    layers = []
    for p in range(pp):
        for i in range(per_stage):
            pre = f"transformer.layers.{i}."
            layer = {}
            for name in ("input_layernorm.weight", "input_layernorm.bias", "post_layernorm.weight",
                         "post_layernorm.bias"):
                if pre + name in rank(p, 0):
                    layer[name] = replicated(p, pre + name)
            layer["qkv"] = [get(rank(p, t), pre + "attention.qkv.weight", f"layer {p * per_stage + i}")
                            for t in range(tp)]
            layer["dense"] = torch.cat([get(rank(p, t), pre + "attention.dense.weight", "dense")
                                        for t in range(tp)], 1)
            layer["fc"] = torch.cat([get(rank(p, t), pre + "mlp.fc.weight", "fc") for t in range(tp)], 0)
            if pre + "mlp.gate.weight" in rank(p, 0):
                layer["gate"] = torch.cat([rank(p, t)[pre + "mlp.gate.weight"] for t in range(tp)], 0)
            layer["proj"] = torch.cat([get(rank(p, t), pre + "mlp.proj.weight", "proj") for t in range(tp)], 1)
            layers.append(layer)
    return top, layers


def rope_inv_freq(config: dict, rot_dim: int) -> torch.Tensor:
    base = float(config.get("rotary_base", 10000.0))
    inv = 1.0 / base ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    scaling = config.get("rotary_scaling") or {}
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind == "linear":
        inv = inv / float(scaling["factor"])
    elif kind == "llama3":
        factor = float(scaling.get("factor", 8.0))
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        smooth = (old_ctx / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_ctx / low, inv / factor, inv)  # long wavelengths: divided by factor
        medium = (wavelen <= old_ctx / low) & (wavelen >= old_ctx / high)
        inv = torch.where(medium, (1 - smooth) * inv / factor + smooth * inv, scaled)
    elif kind not in (None, "none", "default"):
        raise CheckpointError(f"rotary_scaling type {kind!r} is not implemented in the reference model")
    return inv.float()


class ReferenceModel:
    def __init__(self, config: dict, ranks: list[dict[str, torch.Tensor]], dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        self.config = config
        self.dtype, self.device = dtype, torch.device(device)
        tp = int(config.get("mapping", {}).get("tp_size", 1))
        self.vocab_size = int(config["vocab_size"])
        self.head_size = int(config.get("head_size") or config["hidden_size"] // config["num_attention_heads"])
        self.num_heads = int(config["num_attention_heads"])
        kv = int(config.get("num_key_value_heads") or self.num_heads)
        self.kv_per_rank = (kv + tp - 1) // tp
        self.num_kv = self.kv_per_rank * tp  # after merging: repeated heads stay repeated
        self.q_per_rank = self.num_heads // tp
        self.eps = float(config.get("norm_epsilon", 1e-5))
        self.is_gpt = config["architecture"] != "LlamaForCausalLM"
        act = config.get("hidden_act", "silu")
        if act not in ("silu", "squared-relu"):
            raise CheckpointError(f"hidden_act {act!r} is not implemented in the reference model")
        self.act = act
        if config.get("position_embedding_type", "rope_gpt_neox") != "rope_gpt_neox":
            raise CheckpointError(f"position_embedding_type {config.get('position_embedding_type')!r} "
                                  "is not implemented in the reference model")
        pct = float(config.get("rotary_pct", 1.0)) if self.is_gpt else 1.0
        self.rot_dim = int(self.head_size * pct)
        self.inv_freq = rope_inv_freq(config, self.rot_dim).to(self.device)

        top, layers = merge_ranks(config, ranks)
        cast = lambda t: None if t is None else t.to(device=self.device, dtype=dtype)  # noqa: E731
        self.embedding = cast(top["embedding"])
        self.ln_f_w, self.ln_f_b = cast(top.get("ln_f.weight")), cast(top.get("ln_f.bias"))
        self.lm_head = cast(top["lm_head"][: self.vocab_size])
        self.layers = []
        for layer in layers:
            self.layers.append(Layer(
                ln_in_w=cast(layer["input_layernorm.weight"]), ln_in_b=cast(layer.get("input_layernorm.bias")),
                qkv=cast(self._merge_qkv(layer["qkv"])), dense=cast(layer["dense"]),
                ln_post_w=cast(layer["post_layernorm.weight"]), ln_post_b=cast(layer.get("post_layernorm.bias")),
                fc=cast(layer["fc"]), gate=cast(layer.get("gate")), proj=cast(layer["proj"]),
            ))
        if (self.act == "silu") != all(la.gate is not None for la in self.layers):
            raise CheckpointError("silu needs a gated MLP (mlp.gate) and squared-relu a plain one")

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> ReferenceModel:
        from safetensors.torch import load_file

        ckpt = read_checkpoint(ckpt_dir)
        files = [ckpt.rank_file(r) for r in range(ckpt.mapping.world_size)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{ckpt_dir}: missing rank files {missing}")
        return cls(ckpt.raw, [load_file(f) for f in files], dtype=dtype, device=device)

    def _merge_qkv(self, per_rank: list[torch.Tensor]) -> torch.Tensor:
        d = self.head_size
        qs, ks, vs = [], [], []
        for w in per_rank:
            q, k, v = torch.split(w, [self.q_per_rank * d, self.kv_per_rank * d, self.kv_per_rank * d], 0)
            qs.append(q), ks.append(k), vs.append(v)
        return torch.cat(qs + ks + vs, 0)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        shape = (len(self.layers), batch_size, self.num_kv, max_len, self.head_size)
        return KVCache(torch.zeros(shape, dtype=self.dtype, device=self.device),
                       torch.zeros(shape, dtype=self.dtype, device=self.device))

    def _norm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        xf = x.float()
        if self.is_gpt:  # LayerNorm (weight and bias as stored)
            y = F.layer_norm(xf, (xf.shape[-1],), w.float(), None if b is None else b.float(), self.eps)
        else:  # RmsNorm
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * w.float()
        return y.to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x [B, heads, T, d]; rotate_half (GPT-NeoX) on the first rot_dim channels only.
        rot, rest = x[..., : self.rot_dim].float(), x[..., self.rot_dim:]
        half = self.rot_dim // 2
        rotated = torch.cat([-rot[..., half:], rot[..., :half]], -1)
        return torch.cat([(rot * cos + rotated * sin).to(x.dtype), rest], -1)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: KVCache | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] in float32; appends this step's K/V to `cache` when given.

        key_mask [B, past + T]: False marks padding keys (left padding), which nobody attends to.
        """
        B, T = input_ids.shape
        d, H, G = self.head_size, self.num_heads, self.num_kv
        past = cache.length if cache is not None else 0
        total = past + T
        if cache is not None and total > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {total} needed")
        freqs = position_ids.to(self.device).float()[..., None] * self.inv_freq  # [B, T, rot/2]
        emb = torch.cat([freqs, freqs], -1)[:, None]  # [B, 1, T, rot]
        cos, sin = emb.cos(), emb.sin()
        q_pos = torch.arange(past, total, device=self.device)
        allowed = torch.arange(total, device=self.device)[None, :] <= q_pos[:, None]  # causal [T, total]
        allowed = allowed[None].expand(B, T, total)
        if key_mask is not None:
            allowed = allowed & key_mask.to(self.device)[:, None, :total]
        # A padding query still attends to itself, so no row is empty (empty rows give NaNs).
        allowed = allowed | (torch.arange(total, device=self.device)[None, None, :] == q_pos[None, :, None])
        mask = allowed[:, None]  # [B, 1, T, total]

        x = self.embedding[input_ids.to(self.device)]
        for i, layer in enumerate(self.layers):
            h = self._norm(x, layer.ln_in_w, layer.ln_in_b)
            q, k, v = torch.split(h @ layer.qkv.T, [H * d, G * d, G * d], -1)
            q = self._rope(q.view(B, T, H, d).transpose(1, 2), cos, sin)
            k = self._rope(k.view(B, T, G, d).transpose(1, 2), cos, sin)
            v = v.view(B, T, G, d).transpose(1, 2)
            if cache is not None:
                cache.k[i, :, :, past:total] = k
                cache.v[i, :, :, past:total] = v
                k, v = cache.k[i, :, :, :total], cache.v[i, :, :, :total]
            k = k.repeat_interleave(H // G, dim=1)
            v = v.repeat_interleave(H // G, dim=1)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(d))
            x = x + attn.transpose(1, 2).reshape(B, T, H * d) @ layer.dense.T
            h = self._norm(x, layer.ln_post_w, layer.ln_post_b)
            if layer.gate is not None:
                a = F.silu(h @ layer.fc.T) * (h @ layer.gate.T)
            else:
                a = torch.relu(h @ layer.fc.T).square()
            x = x + a @ layer.proj.T
        if cache is not None:
            cache.length = total
        x = self._norm(x, self.ln_f_w, self.ln_f_b)
        return (x @ self.lm_head.T).float()
