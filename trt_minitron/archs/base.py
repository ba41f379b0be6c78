"""Rules that turn Hugging Face tensors into TensorRT-LLM tensors for one rank.

A rule is a function of the rank context returning `produce(reader) -> Tensor`; the reader is a
checkpoint Source (real data) or a MetaReader (dry run), so the same code yields shapes and data.
Split conventions follow TensorRT-LLM: ColumnLinear (qkv, fc, gate, lm_head) splits dim 0,
RowLinear (dense, proj) splits dim 1, norms and the (non-parallel) embedding are replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..mapping import Mapping
from ..sources.base import RowStream


class Reader(Protocol):
    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor: ...


Produce = Callable[[Reader], "torch.Tensor | RowStream"]


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


Rule = Callable[[RankContext, str], Produce]  # (context, HF layer prefix "model.layers.3.") -> produce


@dataclass(frozen=True)
class Out:
    name: str
    produce: Produce


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).contiguous()


def _rows(r: Reader, name: str, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor | RowStream:
    """Rows [start:stop] in `dtype`: streamed file to file when the source already stores them so."""
    stream_rows = getattr(r, "stream_rows", None)  # real sources that can; never the dry-run reader
    if stream_rows is not None:
        stream = stream_rows(name, start, stop)
        if stream is not None and stream.dtype == dtype:
            return stream
    return _cast(r.read(name, 0, start, stop), dtype)


def copy(hf: str) -> Rule:
    def rule(ctx: RankContext, pre: str) -> Produce:
        def produce(r: Reader):
            shape = _shape(r, pre + hf)
            if len(shape) == 2:  # matrices (embedding) may stream; 1-D norms are read
                return _rows(r, pre + hf, 0, shape[0], ctx.dtype)
            return _cast(r.read(pre + hf), ctx.dtype)

        return produce

    return rule


def plus_one(hf: str) -> Rule:
    """Zero-centred layernorm1p gamma folded to a plain LayerNorm weight: (gamma + 1) in float32, then cast."""
    return lambda ctx, pre: lambda r: _cast(r.read(pre + hf).float() + 1.0, ctx.dtype)


def split_rows(hf: str) -> Rule:
    """ColumnLinear weight: this rank's contiguous block of output rows."""

    def rule(ctx: RankContext, pre: str) -> Produce:
        def produce(r: Reader) -> torch.Tensor:
            # Block size from the tensor itself: the reader knows shapes without reading data.
            per = _shape(r, pre + hf)[0] // ctx.tp
            return _rows(r, pre + hf, ctx.tp_rank * per, (ctx.tp_rank + 1) * per, ctx.dtype)

        return produce

    return rule


def split_cols(hf: str) -> Rule:
    """RowLinear weight: this rank's contiguous block of input columns."""

    def rule(ctx: RankContext, pre: str) -> Produce:
        def produce(r: Reader) -> torch.Tensor:
            per = _shape(r, pre + hf)[1] // ctx.tp
            return _cast(r.read(pre + hf, 1, ctx.tp_rank * per, (ctx.tp_rank + 1) * per), ctx.dtype)

        return produce

    return rule


def fused_qkv(q: str, k: str, v: str) -> Rule:
    """[Q_rank; K_rank; V_rank]: query heads split by rank; KV heads split, or repeated when tp > kv heads
    (TensorRT-LLM dup_kv_weight: each KV head repeated tp/kv times consecutively, then chunked)."""

    def rule(ctx: RankContext, pre: str) -> Produce:
        cfg, d = ctx.cfg, ctx.cfg.head_dim
        q_per = cfg.num_attention_heads // ctx.tp
        g = cfg.num_key_value_heads
        if g >= ctx.tp:
            kv_first, kv_count = ctx.tp_rank * (g // ctx.tp), g // ctx.tp
        else:
            kv_first, kv_count = ctx.tp_rank // (ctx.tp // g), 1

        def produce(r: Reader) -> torch.Tensor:
            parts = [
                r.read(pre + q, 0, ctx.tp_rank * q_per * d, (ctx.tp_rank + 1) * q_per * d),
                r.read(pre + k, 0, kv_first * d, (kv_first + kv_count) * d),
                r.read(pre + v, 0, kv_first * d, (kv_first + kv_count) * d),
            ]
            return _cast(torch.cat(parts, dim=0), ctx.dtype)

        return produce

    return rule


def lm_head(hf: str) -> Rule:
    """Vocab rows padded with zeros to a multiple of tp (TensorRT-LLM pad_vocab_size), then split."""

    def rule(ctx: RankContext, pre: str) -> Produce:
        vocab = ctx.cfg.vocab_size
        per = -(-vocab // ctx.tp)
        start, stop = ctx.tp_rank * per, min((ctx.tp_rank + 1) * per, vocab)

        def produce(r: Reader):
            if stop - start == per:
                return _rows(r, hf, start, stop, ctx.dtype)
            rows = r.read(hf, 0, start, stop)
            if stop - start < per:
                pad = torch.zeros((per - (stop - start), rows.shape[1]), dtype=rows.dtype, device=rows.device)
                rows = torch.cat([rows, pad], dim=0)
            return _cast(rows, ctx.dtype)

        return produce

    return rule


def _shape(r: Reader, name: str) -> tuple[int, ...]:
    infos = getattr(r, "infos", None)
    if infos is not None:
        return infos[name].shape
    return r.tensors()[name].shape  # type: ignore[attr-defined]


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
