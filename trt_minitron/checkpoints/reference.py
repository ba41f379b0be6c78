"""A small PyTorch model with TensorRT-LLM's semantics, run straight from a TensorRT-LLM checkpoint.

Written from TensorRT-LLM's layer definitions, not from transformers' modeling code: fused qkv
([Q; K; V] per rank), GatedMLP act(fc(x)) * gate(x) -> proj, or MLP proj(act(fc(x))), each linear with the
bias the architecture declares (a RowLinear's added once, after the rank sum), RmsNorm or
LayerNorm with the weights exactly as stored (layernorm1p already folded), rope_gpt_neox on the first
int(head_size * rotary_pct) channels with llama3/linear scaling. Ranks are merged back by
concatenation, which reproduces what tensor-parallel execution computes (a KV head repeated for
tp > kv heads stays repeated). One layer runs alone on given weights (`attention_block`, `mlp_block`:
what `verify` streams layer by layer); with a KV cache the whole model is the `torch` backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F

from ..archs import arch_for_trt
from ..archs.base import LINEARS
from ..errors import CheckpointError
from .quant_formats import KVQuant, QuantLinear
from .trtllm import MergedCheckpoint, check_rank_files, read_checkpoint

# TensorRT-LLM hidden_act -> the function (tensorrt_llm/functional.py ACT2FN names).
ACTIVATIONS = {"silu": F.silu, "squared-relu": lambda x: torch.relu(x).square()}
# A linear layer's weight as stored (out, in), or a quantized checkpoint's dequantized layer (quant_formats.py).
Linear = Union[torch.Tensor, QuantLinear]


@dataclass
class KVCache:
    k: torch.Tensor  # [layers, batch, kv_heads, max_len, head_size]
    v: torch.Tensor
    length: int = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


@dataclass(frozen=True)
class Semantics:
    """What a checkpoint's config.json says about the maths, for tp-merged weights."""

    head_size: int
    num_heads: int
    num_kv: int  # KV heads after merging ranks (repeated heads stay repeated)
    rot_dim: int
    eps: float
    layernorm: bool  # LayerNorm with bias (GPT: Nemotron) rather than RmsNorm
    act: str  # TensorRT-LLM hidden_act, a key of ACTIVATIONS
    gated: bool  # act(fc(x)) * gate(x) (GatedMLP) rather than act(fc(x)) (MLP)
    inv_freq: torch.Tensor  # [rot_dim / 2], float32
    biases: frozenset[str] = frozenset()  # the linears ("attention.qkv", ...) the architecture gives a bias

    @classmethod
    def from_config(cls, config: dict) -> Semantics:
        tp = int(config.get("mapping", {}).get("tp_size", 1))
        heads = int(config["num_attention_heads"])
        head_size = int(config.get("head_size") or config["hidden_size"] // heads)
        kv = int(config.get("num_key_value_heads") or heads)
        arch = arch_for_trt(config.get("architecture"), "the checkpoint's config.json")
        act = config.get("hidden_act", arch.trt_hidden_act)
        if act not in ACTIVATIONS:
            raise CheckpointError(f"hidden_act {act!r} is not implemented in the reference model")
        if config.get("position_embedding_type", "rope_gpt_neox") != "rope_gpt_neox":
            raise CheckpointError(f"position_embedding_type {config.get('position_embedding_type')!r} "
                                  "is not implemented in the reference model")
        pct = float(config.get("rotary_pct", 1.0)) if arch.partial_rotary else 1.0
        rot_dim = int(head_size * pct)
        return cls(head_size=head_size, num_heads=heads, num_kv=-(-kv // tp) * tp, rot_dim=rot_dim,
                   eps=float(config.get("norm_epsilon", 1e-5)), layernorm=arch.norm == "layernorm", act=act,
                   gated=arch.gated, inv_freq=rope_inv_freq(config, rot_dim),
                   biases=frozenset(n for n in LINEARS if arch.biased((n,))))


@dataclass
class LayerWeights:
    """One decoder layer, tp-merged, TensorRT-LLM tensors as stored (or dequantized, for a quantized checkpoint)."""

    ln_in_w: torch.Tensor
    ln_in_b: torch.Tensor | None
    qkv: Linear
    dense: Linear
    ln_post_w: torch.Tensor
    ln_post_b: torch.Tensor | None
    fc: Linear
    gate: Linear | None
    proj: Linear
    kv_cache: KVQuant | None = None  # FP8 KV cache: K (after rope) and V rounded before they are cached
    biases: dict[str, torch.Tensor] = field(default_factory=dict)  # linear ("attention.qkv", ...) -> its bias

    @classmethod
    def from_merged(cls, t: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> LayerWeights:
        """From MergedCheckpoint.layer(i)."""
        def cast(name: str) -> torch.Tensor | None:
            return None if name not in t else t[name].to(device=device, dtype=dtype)

        return cls(ln_in_w=cast("input_layernorm.weight"), ln_in_b=cast("input_layernorm.bias"),
                   qkv=cast("attention.qkv.weight"), dense=cast("attention.dense.weight"),
                   ln_post_w=cast("post_layernorm.weight"), ln_post_b=cast("post_layernorm.bias"),
                   fc=cast("mlp.fc.weight"), gate=cast("mlp.gate.weight"), proj=cast("mlp.proj.weight"),
                   biases={n: cast(f"{n}.bias") for n in LINEARS if f"{n}.bias" in t})

    @classmethod
    def from_quantized(cls, t: dict, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> LayerWeights:
        """From MergedCheckpoint.quantized_layer(i): quantized linears stay float32 (their exact dequantized
        values), unquantized tensors are cast to `dtype`."""
        def get(name: str):
            v = t.get(name, t.get(f"{name}.weight"))
            if v is None:
                return None
            return v.to(device) if isinstance(v, (QuantLinear, KVQuant)) else v.to(device=device, dtype=dtype)

        return cls(ln_in_w=get("input_layernorm.weight"), ln_in_b=get("input_layernorm.bias"),
                   qkv=get("attention.qkv"), dense=get("attention.dense"),
                   ln_post_w=get("post_layernorm.weight"), ln_post_b=get("post_layernorm.bias"),
                   fc=get("mlp.fc"), gate=get("mlp.gate"), proj=get("mlp.proj"), kv_cache=get("kv_cache"),
                   biases={n: get(f"{n}.bias") for n in LINEARS if f"{n}.bias" in t})


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


def rope_cos_sin(sem: Semantics, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, T, rot_dim] for position ids [B, T]."""
    freqs = position_ids.float()[..., None] * sem.inv_freq.to(position_ids.device)
    emb = torch.cat([freqs, freqs], -1)[:, None]
    return emb.cos(), emb.sin()


def causal_mask(batch: int, past: int, total: int, key_mask: torch.Tensor | None = None,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Boolean mask [B, 1, T, total]: True where a query may attend. key_mask [B, total] marks real keys."""
    q_pos = torch.arange(past, total, device=device)
    keys = torch.arange(total, device=device)
    allowed = (keys[None, :] <= q_pos[:, None])[None].expand(batch, total - past, total)
    if key_mask is not None:
        allowed = allowed & key_mask.to(device)[:, None, :total]
    # A padding query still attends to itself, so no row is empty (empty rows give NaNs).
    allowed = allowed | (keys[None, None, :] == q_pos[None, :, None])
    return allowed[:, None]


def norm(sem: Semantics, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    xf = x.float()
    if sem.layernorm:  # LayerNorm (weight and bias as stored)
        y = F.layer_norm(xf, (xf.shape[-1],), w.float(), None if b is None else b.float(), sem.eps)
    else:  # RmsNorm
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + sem.eps) * w.float()
    return y.to(x.dtype)


def linear(x: torch.Tensor, w: Linear, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T (+ bias) for a stored weight; a quantized layer's emulated GEMM (input transform, float32) otherwise."""
    y = x @ w.T if isinstance(w, torch.Tensor) else w(x).to(x.dtype)
    return y if bias is None else y + bias


def _rope(sem: Semantics, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, heads, T, d]; rotate_half (GPT-NeoX) on the first rot_dim channels only.
    rot, rest = x[..., : sem.rot_dim].float(), x[..., sem.rot_dim:]
    half = sem.rot_dim // 2
    rotated = torch.cat([-rot[..., half:], rot[..., :half]], -1)
    return torch.cat([(rot * cos + rotated * sin).to(x.dtype), rest], -1)


def attention_block(sem: Semantics, x: torch.Tensor, w: LayerWeights, cos: torch.Tensor, sin: torch.Tensor,
                    mask: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
    """x + attention(norm(x)): the residual stream after one layer's attention sub-block."""
    B, T, _ = x.shape
    d, H, G = sem.head_size, sem.num_heads, sem.num_kv
    h = norm(sem, x, w.ln_in_w, w.ln_in_b)
    q, k, v = torch.split(linear(h, w.qkv, w.biases.get("attention.qkv")), [H * d, G * d, G * d], -1)
    q = _rope(sem, q.view(B, T, H, d).transpose(1, 2), cos, sin)
    k = _rope(sem, k.view(B, T, G, d).transpose(1, 2), cos, sin)
    v = v.view(B, T, G, d).transpose(1, 2)
    if w.kv_cache is not None:
        k, v = w.kv_cache(k), w.kv_cache(v)
    if cache is not None:
        past = cache.length
        cache.k[layer, :, :, past:past + T] = k
        cache.v[layer, :, :, past:past + T] = v
        k, v = cache.k[layer, :, :, :past + T], cache.v[layer, :, :, :past + T]
    k = k.repeat_interleave(H // G, dim=1)
    v = v.repeat_interleave(H // G, dim=1)
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(d))
    return x + linear(attn.transpose(1, 2).reshape(B, T, H * d), w.dense, w.biases.get("attention.dense"))


def attention_kv(sem: Semantics, x: torch.Tensor, w: LayerWeights, cos: torch.Tensor,
                 sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K (after rope) and V [B, kv heads, T, head size] that attention_block caches, before any KV-cache rounding."""
    B, T, _ = x.shape
    d, H, G = sem.head_size, sem.num_heads, sem.num_kv
    qkv = linear(norm(sem, x, w.ln_in_w, w.ln_in_b), w.qkv, w.biases.get("attention.qkv"))
    _, k, v = torch.split(qkv, [H * d, G * d, G * d], -1)
    return _rope(sem, k.view(B, T, G, d).transpose(1, 2), cos, sin), v.view(B, T, G, d).transpose(1, 2)


def mlp_block(sem: Semantics, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
    """x + mlp(norm(x)): the residual stream after one layer's MLP sub-block."""
    h = norm(sem, x, w.ln_post_w, w.ln_post_b)
    a = ACTIVATIONS[sem.act](linear(h, w.fc, w.biases.get("mlp.fc")))
    if sem.gated:
        a = a * linear(h, w.gate, w.biases.get("mlp.gate"))
    return x + linear(a, w.proj, w.biases.get("mlp.proj"))


def check_layer_kind(sem: Semantics, w: LayerWeights, where: str) -> None:
    """The layer holds the MLP kind and exactly the biases the architecture declares."""
    if sem.gated != (w.gate is not None):
        raise CheckpointError(f"{where}: this architecture's MLP is {'gated' if sem.gated else 'not gated'}, but "
                              f"mlp.gate is {'missing' if sem.gated else 'present'}")
    missing, extra = sorted(sem.biases - set(w.biases)), sorted(set(w.biases) - sem.biases)
    if missing or extra:
        raise CheckpointError(f"{where}: this architecture's linears {missing or extra} "
                              f"{'have biases, which are missing' if missing else 'have no biases, but biases are present'}")


class ReferenceModel:
    def __init__(self, config: dict, merged: MergedCheckpoint, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        self.config = config
        self.dtype, self.device = dtype, torch.device(device)
        self.sem = Semantics.from_config(config)
        self.vocab_size = int(config["vocab_size"])
        cast = lambda t: None if t is None else t.to(device=self.device, dtype=dtype)  # noqa: E731
        self.embedding = cast(merged.replicated(0, "transformer.vocab_embedding.weight"))
        ln_f = merged.final_norm()
        self.ln_f_w, self.ln_f_b = cast(ln_f["weight"]), cast(ln_f.get("bias"))
        self.lm_head = cast(merged.lm_head_rows(0, self.vocab_size))
        self.layers = []
        quantized = merged.ckpt.quant is not None
        for i in range(int(config["num_hidden_layers"])):
            if quantized:
                layer = LayerWeights.from_quantized(merged.quantized_layer(i), dtype, self.device)
            else:
                layer = LayerWeights.from_merged(merged.layer(i), dtype, self.device)
            check_layer_kind(self.sem, layer, f"layer {i}")
            self.layers.append(layer)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> ReferenceModel:
        ckpt = read_checkpoint(ckpt_dir)
        check_rank_files(ckpt, scan_weights=True)  # the model reads every weight: refused if any is not finite
        return cls(ckpt.raw, MergedCheckpoint(ckpt), dtype=dtype, device=device)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        shape = (len(self.layers), batch_size, self.sem.num_kv, max_len, self.sem.head_size)
        return KVCache(torch.zeros(shape, dtype=self.dtype, device=self.device),
                       torch.zeros(shape, dtype=self.dtype, device=self.device))

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: KVCache | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] in float32; appends this step's K/V to `cache` when given.

        key_mask [B, past + T]: False marks padding keys (left padding), which nobody attends to.
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        total = past + T
        if cache is not None and total > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {total} needed")
        cos, sin = rope_cos_sin(self.sem, position_ids.to(self.device))
        mask = causal_mask(B, past, total, key_mask, self.device)
        x = self.embedding[input_ids.to(self.device)]
        for i, layer in enumerate(self.layers):
            x = attention_block(self.sem, x, layer, cos, sin, mask, cache, i)
            x = mlp_block(self.sem, x, layer)
        if cache is not None:
            cache.length = total
        x = norm(self.sem, x, self.ln_f_w, self.ln_f_b)
        return (x @ self.lm_head.T).float()
