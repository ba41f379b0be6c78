"""What an architecture is, stated once: its names in every format, its config fields, its numerics, and the
rules that turn Hugging Face tensors into TensorRT-LLM tensors for one rank.

A rule is called with the rank context and the HF layer prefix and returns a Recipe: its Layout (which
source rows, what cast) lets export plan by arithmetic and write without materialising the tensor
(layout.py, transfer.py); called with a reader, the Recipe returns the tensor itself. Split conventions
follow TensorRT-LLM: ColumnLinear (qkv, fc, gate, lm_head) splits dim 0, RowLinear (dense, proj) splits
dim 1, norms and the (non-parallel) embedding are replicated.

`register` (archs/__init__.py) checks every class attribute below at import, so an architecture missing a
fact fails when its module is imported, not halfway through an export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol
from typing import Mapping as Mapping_

from ..errors import ConfigError
from ..tensors.dtypes import as_torch
from ..tensors.info import MetaReader, RowStream, TensorInfo
from ..tensors.layout import Block, Layout, materialize
from ..tensors.mapping import Mapping

if TYPE_CHECKING:
    import torch

    from .config import ModelConfig


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
            import torch

            info = layout.info(infos)
            return torch.empty(info.shape, dtype=as_torch(info.dtype), device="meta")
        return materialize(layout, reader)


Produce = Callable[[Reader], "torch.Tensor | RowStream"]  # a Recipe, or any function of a reader


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


class Rule:
    """One TensorRT-LLM tensor made from the HF tensors `inputs` (names under the layer prefix for per-layer
    rules): `rule(ctx, prefix)` is the Recipe of that tensor for the rank `ctx`."""

    inputs: tuple[str, ...]
    # How tensor-parallel ranks hold the tensor: None replicated, 0 rows (ColumnLinear), 1 columns (RowLinear),
    # "qkv" the fused [Q_r; K_r; V_r] per rank. Readers of written checkpoints merge ranks by asking this.
    tp_split: ClassVar[int | str | None] = None

    def __call__(self, ctx: RankContext, pre: str) -> Recipe:
        return Recipe(lambda shapes: self.layout(ctx, pre, shapes))

    def layout(self, ctx: RankContext, pre: str, shapes: Mapping_[str, TensorInfo]) -> Layout:
        raise NotImplementedError


@dataclass(frozen=True)
class copy(Rule):  # noqa: N801 - rules read as verbs in the tables
    """Replicated tensor (norm, embedding), cast to the export dtype."""

    hf: str

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.hf,)

    def layout(self, ctx, pre, shapes):
        return Layout((_all_rows(shapes, pre + self.hf),), ctx.dtype)


@dataclass(frozen=True)
class plus_one(copy):  # noqa: N801
    """Zero-centred layernorm1p gamma folded to a plain LayerNorm weight: (gamma + 1) in float32, then cast."""

    def layout(self, ctx, pre, shapes):
        return Layout((_all_rows(shapes, pre + self.hf),), ctx.dtype, plus_one=True)


@dataclass(frozen=True)
class split_rows(copy):  # noqa: N801
    """ColumnLinear weight: this rank's contiguous block of output rows."""

    tp_split = 0

    def layout(self, ctx, pre, shapes):
        per = _shape(shapes, pre + self.hf)[0] // ctx.tp  # from the tensor itself: shapes are known without data
        return Layout((Block(pre + self.hf, ctx.tp_rank * per, (ctx.tp_rank + 1) * per),), ctx.dtype)


@dataclass(frozen=True)
class split_cols(copy):  # noqa: N801
    """RowLinear weight: this rank's contiguous block of input columns."""

    tp_split = 1

    def layout(self, ctx, pre, shapes):
        rows, cols = (*_shape(shapes, pre + self.hf), 0)[:2]
        per = cols // ctx.tp
        span = (ctx.tp_rank * per, (ctx.tp_rank + 1) * per) if ctx.tp > 1 else None  # tp 1: whole rows
        return Layout((Block(pre + self.hf, 0, rows, span),), ctx.dtype)


@dataclass(frozen=True)
class fused_qkv(Rule):  # noqa: N801
    """[Q_rank; K_rank; V_rank]: query heads split by rank; KV heads split, or repeated when tp > kv heads
    (TensorRT-LLM dup_kv_weight: each KV head repeated tp/kv times consecutively, then chunked)."""

    q: str
    k: str
    v: str
    tp_split = "qkv"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v)

    def __call__(self, ctx: RankContext, pre: str) -> Recipe:
        cfg, d = ctx.cfg, ctx.cfg.head_dim
        q_per = cfg.num_attention_heads // ctx.tp
        g = cfg.num_key_value_heads
        if g >= ctx.tp:
            kv_first, kv_count = ctx.tp_rank * (g // ctx.tp), g // ctx.tp
        else:
            kv_first, kv_count = ctx.tp_rank // (ctx.tp // g), 1
        blocks = (Block(pre + self.q, ctx.tp_rank * q_per * d, (ctx.tp_rank + 1) * q_per * d),
                  Block(pre + self.k, kv_first * d, (kv_first + kv_count) * d),
                  Block(pre + self.v, kv_first * d, (kv_first + kv_count) * d))
        layout = Layout(blocks, ctx.dtype)  # independent of the source shapes: built once per rank
        return Recipe(lambda _shapes: layout)


@dataclass(frozen=True)
class lm_head(copy):  # noqa: N801
    """Vocab rows padded with zeros to a multiple of tp (TensorRT-LLM pad_vocab_size), then split."""

    tp_split = 0

    def layout(self, ctx, pre, shapes):
        vocab = ctx.cfg.vocab_size
        per = -(-vocab // ctx.tp)
        start, stop = ctx.tp_rank * per, min((ctx.tp_rank + 1) * per, vocab)
        return Layout((Block(pre + self.hf, start, stop),), ctx.dtype, pad_rows=per - (stop - start))


def _hidden(c: ModelConfig) -> tuple[int, ...]:
    return (c.hidden_size,)


def _vocab_rows(c: ModelConfig) -> tuple[int, ...]:
    return (c.vocab_size, c.hidden_size)


def _kv_rows(c: ModelConfig) -> tuple[int, ...]:
    return (c.num_key_value_heads * c.head_dim, c.hidden_size)


def _ffn_rows(c: ModelConfig) -> tuple[int, ...]:
    return (c.intermediate_size, c.hidden_size)


def _q_width(c: ModelConfig) -> tuple[int, ...]:
    return (c.num_attention_heads * c.head_dim,)


def _kv_width(c: ModelConfig) -> tuple[int, ...]:
    return (c.num_key_value_heads * c.head_dim,)


def _ffn(c: ModelConfig) -> tuple[int, ...]:
    return (c.intermediate_size,)


# Shapes the config implies for transformers' decoder tensor names (per-layer names under model.layers.{i}.).
HF_SHAPES: dict[str, Callable[[ModelConfig], tuple[int, ...]]] = {
    "model.embed_tokens.weight": _vocab_rows,
    "lm_head.weight": _vocab_rows,
    "model.norm.weight": _hidden,
    "model.norm.bias": _hidden,
    "input_layernorm.weight": _hidden,
    "input_layernorm.bias": _hidden,
    "post_attention_layernorm.weight": _hidden,
    "post_attention_layernorm.bias": _hidden,
    "self_attn.q_proj.weight": lambda c: (c.num_attention_heads * c.head_dim, c.hidden_size),
    "self_attn.k_proj.weight": _kv_rows,
    "self_attn.v_proj.weight": _kv_rows,
    "self_attn.o_proj.weight": lambda c: (c.hidden_size, c.num_attention_heads * c.head_dim),
    "mlp.gate_proj.weight": _ffn_rows,
    "mlp.up_proj.weight": _ffn_rows,
    "mlp.down_proj.weight": lambda c: (c.hidden_size, c.intermediate_size),
    # linear biases, for an architecture whose per_layer rules read them
    "self_attn.q_proj.bias": _q_width,
    "self_attn.k_proj.bias": _kv_width,
    "self_attn.v_proj.bias": _kv_width,
    "self_attn.o_proj.bias": _hidden,
    "mlp.gate_proj.bias": _ffn,
    "mlp.up_proj.bias": _ffn,
    "mlp.down_proj.bias": _hidden,
}
NORMS = ("rmsnorm", "layernorm")
# TensorRT-LLM's per-layer linears (names under transformer.layers.{i}.); an arch's biases are "<linear>.bias" rules.
# ColumnLinear ranks hold output rows (split_rows, fused_qkv), RowLinear ranks input columns (split_cols):
# check_arch_class holds every arch's weight rules to this, so readers of quantized companions may ask it.
COLUMN_LINEARS = ("attention.qkv", "mlp.fc", "mlp.gate")
ROW_LINEARS = ("attention.dense", "mlp.proj")
LINEARS = COLUMN_LINEARS + ROW_LINEARS
ATTENTION_LINEARS = ("attention.qkv", "attention.dense")
MLP_LINEARS = ("mlp.fc", "mlp.gate", "mlp.proj")


@dataclass(frozen=True)
class TransformersModules:
    """transformers' own classes for an architecture: `verify` runs the source through them, one layer at a time."""

    config: type  # e.g. LlamaConfig
    causal_lm: type  # LlamaForCausalLM (verify --full)
    decoder_layer: type  # LlamaDecoderLayer(config, layer_idx)
    norm: type  # final norm, constructed as norm(hidden_size, eps=...)
    rotary: type  # rotary embedding, rotary(config=...)(x, position_ids) -> (cos, sin)


class Arch:
    """One architecture: every fact trt-minitron knows about it. Attributes without a default are required."""

    # --- names: each registered class states its own
    hf_architecture: ClassVar[str]  # config.json "architectures" entry
    model_type: ClassVar[str]  # config.json "model_type" (written by `export --format hf`)
    trt_architecture: ClassVar[str]  # TensorRT-LLM config.json "architecture" export writes
    trt_aliases: ClassVar[tuple[str, ...]] = ()  # other "architecture" values read back as this arch
    # --- the HF config.json: field names and values
    hidden_acts: ClassVar[tuple[str, ...]]  # accepted hidden_act spellings; the first is kept and written
    norm_eps_keys: ClassVar[tuple[str, ...]]  # the norm epsilon key written, then other keys read as it
    partial_rotary: ClassVar[bool] = False  # rope on the first partial_rotary_factor of each head
    default_rotary_fraction: ClassVar[float] = 1.0  # when the config states none
    rotary_fraction_aliases: ClassVar[tuple[str, ...]] = ()  # older names of partial_rotary_factor
    # --- numerics (the reference model, TensorRT-LLM config.json)
    gated: ClassVar[bool]  # MLP act(fc(x)) * gate(x) (HF act(gate_proj) * up_proj), else act(fc(x))
    norm: ClassVar[str]  # "rmsnorm" or "layernorm" (with bias), weights as stored in the checkpoint
    trt_hidden_act: ClassVar[str]  # TensorRT-LLM's name of the activation
    # --- tensors: TRT name -> rule over HF names (the one table export, --format hf and reading back use)
    # TRT name under transformer.layers.{i}. -> rule (HF prefix model.layers.{i}.). Linear biases are rules too
    # ("attention.qkv.bias": fused_qkv of the q/k/v biases, "mlp.fc.bias": split_rows, RowLinear biases copy):
    # an arch has exactly the biases listed here, and every flag below is derived from them.
    per_layer: ClassVar[dict[str, Rule]]
    final_norm: ClassVar[dict[str, Rule]]  # TRT name under transformer.ln_f. -> rule (prefix "")
    embedding: ClassVar[str] = "model.embed_tokens.weight"
    ignore_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)
    hf_shapes: ClassVar[dict[str, Callable[[ModelConfig], tuple[int, ...]]]] = HF_SHAPES
    # Norm weights (names under model.layers.{i}., or full top-level names): what a format's norm rules apply to.
    hf_norm_weights: ClassVar[tuple[str, ...]] = ("input_layernorm.weight", "post_attention_layernorm.weight",
                                                  "model.norm.weight")
    # Config flags that switch linear biases on, flag -> the linears it covers (those the arch has): the transformers
    # config.json flags (read, and written by `export --format hf`) and the TensorRT-LLM config class's fields.
    # Their values are derived from per_layer; an arch whose biases a flag cannot state fails at import.
    hf_bias_flags: ClassVar[dict[str, tuple[str, ...]]] = {"attention_bias": ATTENTION_LINEARS,
                                                           "mlp_bias": MLP_LINEARS}
    trt_bias_flags: ClassVar[dict[str, tuple[str, ...]]]
    # HF tensors the export folds a constant into before rounding to the checkpoint dtype (name as in
    # hf_norm_weights) -> the constant; verify rounds the source the same way.
    rounding_offsets: ClassVar[dict[str, float]] = {}
    # --- what other formats and tools call it (None / (): no claim; two archs may not claim the same name)
    gguf_architecture: ClassVar[str | None] = None  # GGUF general.architecture read as this arch
    # llama.cpp's converter (convert_hf_to_gguf.py), undone by sources/gguf: q/k rows permuted per head for its
    # rope (LlamaModel.permute); a constant added to every norm weight; where it writes the norm epsilon
    # (keys under {arch}.attention., the first present is read).
    gguf_permuted_qk: ClassVar[bool] = False
    gguf_norm_offset: ClassVar[float] = 0.0
    gguf_norm_eps_keys: ClassVar[tuple[str, ...]] = ("layer_norm_rms_epsilon",)
    nemo_activations: ClassVar[tuple[str, ...]] = ()  # .nemo model_config.yaml activations read as this arch
    nemo_normalization: ClassVar[str | None] = None  # the .nemo normalization those activations require
    modelopt_decoder_type: ClassVar[str]  # ModelOpt's export decoder_type

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "hf_architecture", "model_type", "trt_architecture", "hidden_acts", "norm_eps_keys", "gated", "norm",
        "trt_hidden_act", "per_layer", "final_norm", "trt_bias_flags", "modelopt_decoder_type")
    OWN: ClassVar[tuple[str, ...]] = ("hf_architecture", "model_type", "trt_architecture")

    # --- hooks a new architecture may override
    def transformers_modules(self) -> TransformersModules:
        """transformers' classes for this architecture (imported here, when verify needs them)."""
        raise NotImplementedError

    def trt_config_fields(self, cfg: ModelConfig) -> dict[str, Any]:
        """config.json fields of this architecture's TensorRT-LLM config class, besides the common ones."""
        raise NotImplementedError

    def check_hf_config(self, raw: dict, where: str) -> None:
        """Refuse (ConfigError) what this architecture's config.json may say that trt-minitron does not compute."""

    def hf_config_fields(self, cfg: ModelConfig) -> dict[str, Any]:
        """config.json fields `export --format hf` writes for this architecture besides the common ones."""
        return {}

    # --- derived from the facts above
    def trt_config(self, cfg: ModelConfig, dtype: str, mapping: Mapping) -> dict:
        return {**self.common_trt_config(cfg, dtype, mapping), **self.trt_config_fields(cfg)}

    def layer_tp_split(self, trt_name: str) -> int | str | None:
        """How ranks hold the per-layer tensor `trt_name` (under transformer.layers.{i}.): Rule.tp_split; a quantized
        linear's companions follow its weight (quant_formats). KeyError for a name the architecture does not write."""
        return self.per_layer[trt_name].tp_split

    def biased(self, linears: tuple[str, ...]) -> bool:
        """Whether the linears among `linears` carry biases (check_arch_class holds them all or none)."""
        return any(f"{name}.bias" in self.per_layer for name in linears)

    def bias_flags(self, flags: Mapping_[str, tuple[str, ...]]) -> dict[str, bool]:
        """Each flag's value for this arch (hf_bias_flags, trt_bias_flags, or a format's own)."""
        return {flag: self.biased(linears) for flag, linears in flags.items()}

    def check_bias_flags(self, stated: Mapping_[str, bool], flags: Mapping_[str, tuple[str, ...]], where: str,
                         spelled: str = "{flag}={value}") -> None:
        """The one refusal of a config that states biases other than this arch's: ConfigError naming the flag."""
        for flag, on in stated.items():
            if on != self.biased(flags[flag]):
                linears = ", ".join(n for n in flags[flag] if f"{n}.weight" in self.per_layer)
                raise ConfigError(f"{spelled.format(flag=flag, value=str(on).lower())} in {where} is not supported: "
                                  f"{self.hf_architecture} has {'' if on else 'biases on '}{linears}"
                                  f"{' without biases' if on else ''}")

    def final_norm_tensors(self) -> list[str]:
        return [n for rule in self.final_norm.values() for n in rule.inputs]

    def hf_tensors(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Every HF tensor this arch reads, in transformers' order, with the shape the config implies."""
        out = {self.embedding: self.hf_shapes[self.embedding](cfg)}
        out.update((n, self.hf_shapes[n](cfg)) for n in self.final_norm_tensors())
        if not cfg.tie_word_embeddings:
            out["lm_head.weight"] = self.hf_shapes["lm_head.weight"](cfg)
        layer = {n: self.hf_shapes[n](cfg) for rule in self.per_layer.values() for n in rule.inputs}
        for i in range(cfg.num_hidden_layers):
            out.update((f"model.layers.{i}.{n}", shape) for n, shape in layer.items())
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

    def torch_out(self, ctx: RankContext, name: str) -> Out:
        """The output `name` of rank ctx.rank made in torch's dtype: a plan made with a dtypes.DType (no torch) asks
        here for a rule without a Layout, which computes in torch, to dry-run it on meta tensors."""
        real = RankContext(ctx.cfg, ctx.mapping, ctx.rank, as_torch(ctx.dtype))
        return next(o for o in self.rank_plan(real) if o.name == name)

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
            "hidden_act": self.trt_hidden_act,
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


def check_arch_class(cls: type[Arch]) -> None:
    """Raise TypeError naming what an architecture class lacks or contradicts (run by `register`, at import)."""
    name = cls.__name__
    missing = [a for a in Arch.REQUIRED if not hasattr(cls, a)]
    missing += [a for a in Arch.OWN if hasattr(cls, a) and a not in cls.__dict__ and a not in missing]
    missing += [f"{m}()" for m in ("transformers_modules", "trt_config_fields")
                if getattr(cls, m) is getattr(Arch, m)]
    if missing:
        raise TypeError(f"architecture {name} does not state {', '.join(missing)} (see archs/base.py Arch)")
    problems = []
    if cls.norm not in NORMS:
        problems.append(f"norm {cls.norm!r} is not one of {NORMS}")
    if not cls.hidden_acts or not cls.norm_eps_keys:
        problems.append("hidden_acts and norm_eps_keys need at least one entry")
    for flags in (cls.hf_bias_flags, cls.trt_bias_flags):
        for flag, linears in flags.items():
            have = {n for n in linears if f"{n}.weight" in cls.per_layer}
            if len({f"{n}.bias" in cls.per_layer for n in have}) > 1:
                problems.append(f"the flag {flag} covers {sorted(have)}, which must all have biases or none")
    covered = {n for linears in cls.trt_bias_flags.values() for n in linears}
    stray = sorted(n for n in cls.per_layer if n.endswith(".bias") and n.rsplit(".", 1)[0] in LINEARS
                   and n.rsplit(".", 1)[0] not in covered)
    if stray:
        problems.append(f"no TensorRT-LLM config field in trt_bias_flags states the biases {stray}")
    if cls.gated != ("mlp.gate.weight" in cls.per_layer):
        problems.append(f"gated={cls.gated} but per_layer {'lacks' if cls.gated else 'has'} mlp.gate.weight")
    wrong_split = sorted(f"{n}.weight" for n in LINEARS if f"{n}.weight" in cls.per_layer
                         and (cls.per_layer[f"{n}.weight"].tp_split in (0, "qkv")) != (n in COLUMN_LINEARS))
    if wrong_split:
        problems.append(f"{wrong_split} split across ranks against TensorRT-LLM's Column/RowLinear (archs/base.py LINEARS)")
    names = [n for rule in (*cls.per_layer.values(), *cls.final_norm.values()) for n in rule.inputs]
    unknown = sorted({n for n in [cls.embedding, *names] if n not in cls.hf_shapes})
    if unknown:
        problems.append(f"no shape in hf_shapes for {unknown}")
    if bool(cls.nemo_activations) != (cls.nemo_normalization is not None):
        problems.append("nemo_activations and nemo_normalization go together")
    if problems:
        raise TypeError(f"architecture {name}: {'; '.join(problems)}")
