"""Rules that turn Hugging Face tensors into TensorRT-LLM tensors for one rank.

A rule is a function of the rank context returning `produce(reader) -> Tensor`; the reader is a
checkpoint Source (real data) or a MetaReader (dry run), so the same code yields shapes and data.
The rules here return a Recipe, whose Layout (which source rows, what cast) export uses to plan by
arithmetic and to write without materialising the tensor (layout.py, transfer.py).
Split conventions follow TensorRT-LLM: ColumnLinear (qkv, fc, gate, lm_head) splits dim 0,
RowLinear (dense, proj) splits dim 1, norms and the (non-parallel) embedding are replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol
from typing import Mapping as Mapping_

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..layout import Block, Layout, materialize
from ..mapping import Mapping
from ..sources.base import MetaReader, RowStream, TensorInfo


class Reader(Protocol):
    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class RankContext:
    cfg: ModelConfig
    mapping: Mapping
    rank: int
    dtype: torch.dtype

    @property
    def tp(self) -> int:
        return self.mapping.tp_size

    @property
    def tp_rank(self) -> int:
        return self.mapping.tp_rank(self.rank)


class Recipe:
    """A rule's output for one rank: `layout(shapes)` says which source rows make the tensor, so export
    plans on shapes alone and writes without materialising it; calling it with a reader returns the
    tensor itself (a meta tensor for a MetaReader), which is the `produce(reader)` contract."""

    def __init__(self, layout: Callable[[Mapping_[str, TensorInfo]], Layout]):
        self.layout = layout

    def __call__(self, reader: Reader) -> torch.Tensor:
        infos = _infos(reader)
        layout = self.layout(infos)
        if isinstance(reader, MetaReader):
            info = layout.info(infos)
            return torch.empty(info.shape, dtype=info.dtype, device="meta")
        return materialize(layout, reader)


Produce = Callable[[Reader], "torch.Tensor | RowStream"]  # a Recipe, or any function of a reader
Rule = Callable[[RankContext, str], Produce]  # (context, HF layer prefix "model.layers.3.") -> produce


@dataclass(frozen=True)
class Out:
    name: str
    produce: Produce


def _infos(r: Reader) -> Mapping_[str, TensorInfo]:
    infos = getattr(r, "infos", None)
    return infos if infos is not None else r.tensors()  # type: ignore[attr-defined]


def _shape(shapes: Mapping_[str, TensorInfo], name: str) -> tuple[int, ...]:
    # A missing tensor gets an empty shape here; Layout.info then names it.
    return (shapes[name].shape or (1,)) if name in shapes else (0, 0)


def _all_rows(shapes: Mapping_[str, TensorInfo], name: str) -> Block:
    return Block(name, 0, _shape(shapes, name)[0])


def copy(hf: str) -> Rule:
    """Replicated tensor (norm, embedding), cast to the export dtype."""
    return lambda ctx, pre: Recipe(lambda shapes: Layout((_all_rows(shapes, pre + hf),), ctx.dtype))


def plus_one(hf: str) -> Rule:
    """Zero-centred layernorm1p gamma folded to a plain LayerNorm weight: (gamma + 1) in float32, then cast."""
    return lambda ctx, pre: Recipe(lambda shapes: Layout((_all_rows(shapes, pre + hf),), ctx.dtype, plus_one=True))


def split_rows(hf: str) -> Rule:
    """ColumnLinear weight: this rank's contiguous block of output rows."""

    def rule(ctx: RankContext, pre: str) -> Recipe:
        def layout(shapes: Mapping_[str, TensorInfo]) -> Layout:
            # Block size from the tensor itself: the reader knows shapes without reading data.
            per = _shape(shapes, pre + hf)[0] // ctx.tp
            return Layout((Block(pre + hf, ctx.tp_rank * per, (ctx.tp_rank + 1) * per),), ctx.dtype)

        return Recipe(layout)

    return rule


def split_cols(hf: str) -> Rule:
    """RowLinear weight: this rank's contiguous block of input columns."""

    def rule(ctx: RankContext, pre: str) -> Recipe:
        def layout(shapes: Mapping_[str, TensorInfo]) -> Layout:
            rows, cols = (*_shape(shapes, pre + hf), 0)[:2]
            per = cols // ctx.tp
            span = (ctx.tp_rank * per, (ctx.tp_rank + 1) * per) if ctx.tp > 1 else None  # tp 1: whole rows
            return Layout((Block(pre + hf, 0, rows, span),), ctx.dtype)

        return Recipe(layout)

    return rule


def fused_qkv(q: str, k: str, v: str) -> Rule:
    """[Q_rank; K_rank; V_rank]: query heads split by rank; KV heads split, or repeated when tp > kv heads
    (TensorRT-LLM dup_kv_weight: each KV head repeated tp/kv times consecutively, then chunked)."""

    def rule(ctx: RankContext, pre: str) -> Recipe:
        cfg, d = ctx.cfg, ctx.cfg.head_dim
        q_per = cfg.num_attention_heads // ctx.tp
        g = cfg.num_key_value_heads
        if g >= ctx.tp:
            kv_first, kv_count = ctx.tp_rank * (g // ctx.tp), g // ctx.tp
        else:
            kv_first, kv_count = ctx.tp_rank // (ctx.tp // g), 1
        blocks = (Block(pre + q, ctx.tp_rank * q_per * d, (ctx.tp_rank + 1) * q_per * d),
                  Block(pre + k, kv_first * d, (kv_first + kv_count) * d),
                  Block(pre + v, kv_first * d, (kv_first + kv_count) * d))
        return Recipe(lambda _shapes: Layout(blocks, ctx.dtype))

    return rule


def lm_head(hf: str) -> Rule:
    """Vocab rows padded with zeros to a multiple of tp (TensorRT-LLM pad_vocab_size), then split."""

    def rule(ctx: RankContext, pre: str) -> Recipe:
        vocab = ctx.cfg.vocab_size
        per = -(-vocab // ctx.tp)
        start, stop = ctx.tp_rank * per, min((ctx.tp_rank + 1) * per, vocab)
        return Recipe(lambda _shapes: Layout((Block(hf, start, stop),), ctx.dtype, pad_rows=per - (stop - start)))

    return rule


@dataclass(frozen=True)
class TransformersModules:
    """transformers' own classes for an architecture: `verify` runs the source through them, one layer at a time."""

    config: type  # e.g. LlamaConfig
    causal_lm: type  # LlamaForCausalLM (verify --full)
    decoder_layer: type  # LlamaDecoderLayer(config, layer_idx)
    norm: type  # final norm, constructed as norm(hidden_size, eps=...)
    rotary: type  # rotary embedding, rotary(config=...)(x, position_ids) -> (cos, sin)


class Arch:
    """One architecture: HF tensor names in, TensorRT-LLM names and config.json out."""

    hf_architecture: ClassVar[str]
    trt_architecture: ClassVar[str]
    per_layer: ClassVar[dict[str, Rule]]  # TRT name under transformer.layers.{i}. -> rule
    embedding: ClassVar[str] = "model.embed_tokens.weight"
    final_norm: ClassVar[dict[str, Rule]]  # TRT name under transformer.ln_f. -> rule (prefix "")
    ignore_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)
    # HF tensors the export folds a constant into before rounding to the checkpoint dtype (name under
    # model.layers.{i}., or a full top-level name) -> the constant; verify rounds the source the same way.
    rounding_offsets: ClassVar[dict[str, float]] = {}

    def transformers_modules(self) -> TransformersModules:
        raise NotImplementedError

    def trt_config(self, cfg: ModelConfig, dtype: str, mapping: Mapping) -> dict:
        raise NotImplementedError

    def hf_layer_tensors(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Per-layer HF tensors besides attention (norms, MLP), under `model.layers.{i}.`."""
        raise NotImplementedError

    def hf_final_norm(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def hf_tensors(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Every HF tensor this arch reads, with the shape the config implies."""
        h, d = cfg.hidden_size, cfg.head_dim
        out = {"model.embed_tokens.weight": (cfg.vocab_size, h), **self.hf_final_norm(cfg)}
        if not cfg.tie_word_embeddings:
            out["lm_head.weight"] = (cfg.vocab_size, h)
        attention = {
            "self_attn.q_proj.weight": (cfg.num_attention_heads * d, h),
            "self_attn.k_proj.weight": (cfg.num_key_value_heads * d, h),
            "self_attn.v_proj.weight": (cfg.num_key_value_heads * d, h),
            "self_attn.o_proj.weight": (h, cfg.num_attention_heads * d),
        }
        for layer in range(cfg.num_hidden_layers):
            for name, shape in {**attention, **self.hf_layer_tensors(cfg)}.items():
                out[f"model.layers.{layer}.{name}"] = shape
        return out

    def validate(self, cfg: ModelConfig, mapping: Mapping) -> None:
        mapping.validate(cfg.num_hidden_layers)
        tp, g = mapping.tp_size, cfg.num_key_value_heads
        if cfg.num_attention_heads % tp:
            raise ConfigError(f"num_attention_heads={cfg.num_attention_heads} is not divisible by tp_size={tp}")
        if g % tp and tp % g:
            raise ConfigError(f"num_key_value_heads={g} and tp_size={tp}: one must divide the other")
        if cfg.intermediate_size % tp:
            raise ConfigError(f"intermediate_size={cfg.intermediate_size} is not divisible by tp_size={tp}")

    def rank_plan(self, ctx: RankContext) -> list[Out]:
        cfg, m = ctx.cfg, ctx.mapping
        outs: list[Out] = []
        if m.is_first_stage(ctx.rank):
            outs.append(Out("transformer.vocab_embedding.weight", copy(self.embedding)(ctx, "")))
        for local, layer in enumerate(m.layers(ctx.rank, cfg.num_hidden_layers)):
            pre = f"model.layers.{layer}."
            for trt_name, rule in self.per_layer.items():
                outs.append(Out(f"transformer.layers.{local}.{trt_name}", rule(ctx, pre)))
        if m.is_last_stage(ctx.rank):
            for trt_name, rule in self.final_norm.items():
                outs.append(Out(f"transformer.ln_f.{trt_name}", rule(ctx, "")))
            head = self.embedding if cfg.tie_word_embeddings else "lm_head.weight"
            outs.append(Out("lm_head.weight", lm_head(head)(ctx, "")))
        return outs

    def common_trt_config(self, cfg: ModelConfig, dtype: str, mapping: Mapping) -> dict:
        """PretrainedConfig fields shared by LLaMAConfig and GPTConfig (tensorrt_llm/models/modeling_utils.py)."""
        return {
            "architecture": self.trt_architecture,
            "dtype": dtype,
            "logits_dtype": "float32",
            "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_size": cfg.head_dim,  # always explicit: the default hidden/heads is wrong for Minitron-8B
            "intermediate_size": cfg.intermediate_size,
            "norm_epsilon": cfg.norm_eps,
            "position_embedding_type": "rope_gpt_neox",
            "rotary_base": cfg.rope_theta,
            "rotary_scaling": cfg.rope_scaling.to_trt() if cfg.rope_scaling else None,
            "use_parallel_embedding": False,
            "embedding_sharding_dim": 0,
            "share_embedding_table": False,  # lm_head.weight is always written
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "qk_layernorm": False,
            "mapping": mapping.to_dict(),
            "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        }
