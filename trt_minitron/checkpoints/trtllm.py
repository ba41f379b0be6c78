"""Reading a TensorRT-LLM checkpoint folder back: config.json -> ModelConfig + Mapping, the tensors every rank
file must hold (derived by dry-running the same arch rules that export uses), and `check_rank_files`, the one check
that the files hold exactly that, run by build (--dry-run too), verify and the torch backend before anything else."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..archs import arch_for_trt, get_arch
from ..archs.base import RankContext, Recipe
from ..archs.config import ModelConfig, RopeScaling, _Fields, load_json
from ..errors import CheckpointError, ConfigError
from ..tensors.claims import check_layer_count, layer_indices
from ..tensors.dtypes import BY_NAME, CHECKPOINT_DTYPES, of_torch, torch_dtype
from ..tensors.finite import range_has_nonfinite, refusal, scannable
from ..tensors.info import MetaReader, TensorInfo
from ..tensors.mapping import Mapping
from ..tensors.stheader import Header, read_header

if TYPE_CHECKING:
    import torch

RANK_FILE = re.compile(r"rank(\d+)\.safetensors")
LAYER = re.compile(r"transformer\.layers\.(\d+)\.")


@dataclass(frozen=True)
class TrtCheckpoint:
    path: Path
    raw: dict  # config.json as written
    model: ModelConfig
    mapping: Mapping
    dtype: str

    def rank_file(self, rank: int) -> Path:
        return self.path / f"rank{rank}.safetensors"

    @cached_property
    def quant(self):
        """The checkpoint's quantization (checkpoints/quantized.QuantSpec), None when its weights are not quantized."""
        return quant_spec(self.raw, str(self.path / "config.json"))

    def expected_tensors(self, rank: int) -> dict[str, TensorInfo]:
        """Name -> shape/dtype (torch's) that rank{rank}.safetensors must contain (a quantized checkpoint's
        scales included)."""
        dtype = torch_dtype(self.dtype)
        plain = {n: TensorInfo(shape, dtype) for n, shape in self.expected_shapes(rank).items()}
        return plain if self.quant is None else self.quant.expected_tensors(plain)

    def optional_tensors(self, rank: int) -> dict[str, TensorInfo]:
        """Tensors rank{rank}.safetensors may hold besides the expected ones (ModelOpt's K and V scales)."""
        return {} if self.quant is None else self.quant.optional_tensors(self.expected_shapes(rank))

    def describe(self) -> str:
        """What config.json says the weights are, for messages: "unquantized bfloat16", "W4A16_AWQ (group 128) ..."."""
        if self.quant is None:
            return f"unquantized {self.dtype}"
        q = self.quant
        group = f" group_size {q.format.group_size}" if q.format.group_sizes else ""
        kv = f", kv_cache_quant_algo {q.kv_cache_quant_algo}" if q.kv_cache_quant_algo else ""
        return f"{q.quant_algo}{group}{kv}, exclude_modules {list(q.exclude_modules)}"

    def expected_shapes(self, rank: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor of rank{rank}.safetensors before quantization (all in the checkpoint
        dtype), by arithmetic on the export rules' layouts: no torch unless an architecture has a rule without
        a layout."""
        arch = get_arch(self.model.architecture)
        f32 = BY_NAME["float32"]
        infos = {n: TensorInfo(s, f32) for n, s in arch.hf_tensors(self.model).items()}
        ctx = RankContext(self.model, self.mapping, rank, BY_NAME[self.dtype])  # the layouts only carry it
        out = {}
        for o in arch.rank_plan(ctx):
            if isinstance(o.produce, Recipe):
                out[o.name] = o.produce.layout(infos).info(infos).shape
            else:  # a plain-function rule: dry-run it on meta tensors
                rule = arch.torch_out(ctx, o.name)
                meta = {n: TensorInfo(s, torch_dtype("float32")) for n, s in arch.hf_tensors(self.model).items()}
                out[o.name] = tuple(rule.produce(MetaReader(meta)).shape)
        return out

    @property
    def dtype_bytes(self) -> int:
        return BY_NAME[self.dtype].itemsize

    def expected_bytes(self, rank: int) -> int:
        """Bytes of tensor data rank{rank}.safetensors must hold (without torch unless the checkpoint is quantized),
        from one layer times the layers of the rank: O(1) in num_hidden_layers, which a config-only checkpoint
        states with nothing to hold it to."""
        one = replace(self, model=replace(self.model, num_hidden_layers=self.mapping.pp_size))  # a layer per stage
        if self.quant is None:
            sizes = {n: math.prod(s) * self.dtype_bytes for n, s in one.expected_shapes(rank).items()}
        else:
            sizes = {n: info.nbytes for n, info in one.expected_tensors(rank).items()}
        layer = sum(b for n, b in sizes.items() if LAYER.match(n))
        return sum(sizes.values()) - layer + layer * (self.model.num_hidden_layers // self.mapping.pp_size)

    def representative_ranks(self) -> list[int]:
        """Ranks that differ in what they hold (every tp rank of the first, a middle and the last stage), so the
        largest rank is found without visiting every rank a config claims."""
        m = self.mapping
        stages = sorted({0, min(1, m.pp_size - 1), m.pp_size - 1})
        return [s * m.tp_size + t for s in stages for t in range(m.tp_size)]


def quant_spec(raw: dict, where: str = "config.json"):
    """QuantSpec of a config.json (None when unquantized); a quantization this tool cannot read is a CheckpointError."""
    q = raw.get("quantization") or {}
    if not isinstance(q, dict):
        raise CheckpointError(f"{where}: 'quantization' must be an object, got {type(q).__name__}")
    if q.get("quant_algo") is None and q.get("kv_cache_quant_algo") is None:
        return None  # unquantized: planning stays torch-free
    from .quantized import QuantSpec

    return QuantSpec.from_config(raw, where)


def read_checkpoint(path: str | Path) -> TrtCheckpoint:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{path} is not a TensorRT-LLM checkpoint: no config.json")
    raw = load_json(cfg_path)
    other = folder_kind(raw)
    if other is not None:
        raise ConfigError(f"{path} is {other}, not a TensorRT-LLM checkpoint; make one with `trt-minitron export`")
    return TrtCheckpoint(path, raw, *model_config_from_trt(raw, str(cfg_path)))


def folder_kind(config: dict) -> str | None:
    """What a folder whose config.json is `config` holds when it is not a TensorRT-LLM checkpoint, else None."""
    if "pretrained_config" in config and "build_config" in config:
        return "a TensorRT-LLM engine folder"
    if "architecture" not in config and ("architectures" in config or "model_type" in config):
        return "a Hugging Face model"
    return None


def model_config_from_trt(d: dict, where: str = "config.json") -> tuple[ModelConfig, Mapping, str]:
    """Inverse of Arch.trt_config for the architectures trt-minitron writes."""
    arch = arch_for_trt(d.get("architecture"), where)
    dtype = d.get("dtype")
    if dtype not in CHECKPOINT_DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r} in {where}; supported: {', '.join(CHECKPOINT_DTYPES)}")
    quant_spec(d, where)  # a quantization this tool cannot read is refused here, with the config
    m = d.get("mapping") or {}
    if not isinstance(m, dict):
        raise ConfigError(f"{where}: 'mapping' must be an object, got {type(m).__name__}")
    f = _Fields(d, where)  # every number a JSON integer or number of the right sign, all bad fields named at once
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        f.integer(key)
    for key in ("intermediate_size", "num_key_value_heads", "head_size", "max_position_embeddings"):
        f.integer(key, default=None)
    f.number("norm_epsilon", default=None)
    f.number("rotary_base", default=None)
    f.number("rotary_pct", default=None, upper=1.0)
    mf = _Fields(m, f"{where}: mapping")
    for key in ("world_size", "tp_size", "pp_size"):
        mf.integer(key, default=None)
    f.bad += mf.bad
    f.raise_if_bad()
    try:
        heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        rs = d.get("rotary_scaling")
        scaling = None
        if rs:
            kind = rs.get("type", rs.get("rope_type"))
            scaling = RopeScaling(rope_type=kind, factor=float(rs.get("factor", 1.0)),
                                  low_freq_factor=float(rs.get("low_freq_factor", 1.0)),
                                  high_freq_factor=float(rs.get("high_freq_factor", 4.0)),
                                  original_max_position_embeddings=int(
                                      rs.get("original_max_position_embeddings", 8192)))
        model = ModelConfig(
            architecture=arch.hf_architecture,
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(d.get("intermediate_size") or 4 * hidden),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_size") or hidden // heads),
            hidden_act=arch.hidden_acts[0],
            norm_eps=float(d.get("norm_epsilon", 1e-5)),
            max_position_embeddings=int(d.get("max_position_embeddings") or 2048),
            rope_theta=float(d.get("rotary_base", 10000.0)),
            partial_rotary_factor=float(d.get("rotary_pct", 1.0)) if arch.partial_rotary else 1.0,
            rope_scaling=scaling,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        )
        mapping = Mapping(tp_size=int(m.get("tp_size", 1)), pp_size=int(m.get("pp_size", 1)))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: missing or malformed field {e}") from None
    model.validate(where)
    if int(m.get("world_size", mapping.world_size)) != mapping.world_size:
        raise ConfigError(f"{where}: mapping.world_size={m.get('world_size')} != tp_size*pp_size="
                          f"{mapping.world_size}")
    return model, mapping, dtype


def rank_file_indices(ckpt: TrtCheckpoint) -> list[int]:
    """The ranks whose rank{r}.safetensors is in the folder, found by listing it (O(files), whatever config.json
    claims); a file beyond the mapping's world size is refused."""
    found = sorted(int(m.group(1)) for p in ckpt.path.iterdir() if (m := RANK_FILE.fullmatch(p.name)))
    world = ckpt.mapping.world_size
    beyond = [f"rank{r}.safetensors" for r in found if r >= world]
    if beyond:
        raise CheckpointError(f"{ckpt.path}: {beyond[:5]} lie beyond config.json's mapping (world_size {world} = "
                              f"tp_size {ckpt.mapping.tp_size} x pp_size {ckpt.mapping.pp_size})")
    return found


def check_rank_files(ckpt: TrtCheckpoint, *, scan_weights: bool = False) -> None:
    """The one check of a TensorRT-LLM checkpoint's rank files, before anything plans, builds or computes from them:
    every rank file present (and no other); the numbers config.json states (layers, vocab_size, hidden_size) agreeing
    with the tensors the headers list, compared by counting names (never by looping over a claimed size); exactly
    the expected tensors (missing and extra both named) with their shapes and dtypes; every scale tensor of a
    quantized checkpoint finite and > 0 (ModelOpt asserts it when exporting: modelopt/torch/export/quant_utils.py
    get_scaling_factor, get_prequant_scaling_factor); with `scan_weights`, every float tensor free of NaN/Inf."""
    found, world = rank_file_indices(ckpt), ckpt.mapping.world_size
    if len(found) < world:
        have = set(found)
        missing = [f"rank{r}.safetensors" for r in range(world) if r not in have] if world - len(found) <= 64 else []
        raise CheckpointError(f"{ckpt.path}: missing rank files {missing}" if missing else
                              f"{ckpt.path}: config.json's mapping has world_size {world}, but the folder holds "
                              f"{len(found)} rank files")
    headers = [read_header(ckpt.rank_file(r)) for r in range(world)]
    for rank, header in enumerate(headers):
        check_claims(ckpt, rank, header)
    for rank, header in enumerate(headers):
        _check_tensor_set(ckpt, rank, header)
    if ckpt.quant is not None:
        _check_scales(ckpt)
    if scan_weights:
        for rank, header in enumerate(headers):
            _scan_weights(ckpt, rank, header)


def check_claims(ckpt: TrtCheckpoint, rank: int, header: Header) -> None:
    """config.json's layers, vocab_size and hidden_size against what rank{rank}'s header lists (O(header))."""
    f, cfg, m = ckpt.rank_file(rank), ckpt.model, ckpt.mapping
    per_stage = cfg.num_hidden_layers // m.pp_size
    stage = f" / pp_size {m.pp_size}" if m.pp_size > 1 else ""
    check_layer_count(f"{ckpt.path / 'config.json'} says num_hidden_layers{stage}", per_stage,
                      layer_indices(header.entries, LAYER.pattern), f"{f.name}'s tensors", "transformer.layers.{}")
    e = header.entries
    claims = [("vocab_size", cfg.vocab_size, "transformer.vocab_embedding.weight", 0, "rows"),
              ("hidden_size", cfg.hidden_size, "transformer.vocab_embedding.weight", 1, "columns"),
              ("hidden_size", cfg.hidden_size, "transformer.ln_f.weight", 0, "values"),
              ("vocab_size", -(-cfg.vocab_size // m.tp_size), "lm_head.weight", 0, "rows")]
    for key, want, name, dim, what in claims:
        if name in e and len(e[name].shape) > dim and e[name].shape[dim] != want:
            per = f" ({want} rows per rank at tp {m.tp_size})" if name == "lm_head.weight" and m.tp_size > 1 else ""
            raise CheckpointError(f"{f}: config.json says {key}={getattr(cfg, key)}{per}, but {name} has "
                                  f"{e[name].shape[dim]} {what}")


def _check_tensor_set(ckpt: TrtCheckpoint, rank: int, header: Header) -> None:
    f = ckpt.rank_file(rank)
    if ckpt.quant is None:
        want_dt = BY_NAME[ckpt.dtype].safetensors
        expected = {n: (shape, want_dt) for n, shape in ckpt.expected_shapes(rank).items()}
    else:  # scales and packed weights have dtypes of their own
        expected = {n: (i.shape, of_torch(i.dtype).safetensors) for n, i in ckpt.expected_tensors(rank).items()}
    entries = header.entries
    lacking = sorted(set(expected) - set(entries))
    if lacking:
        raise CheckpointError(f"{f}: missing tensors {_few(lacking)} that a {ckpt.describe()} checkpoint holds")
    optional = ckpt.optional_tensors(rank)
    extra = sorted(set(entries) - set(expected) - set(optional))
    if extra:
        raise CheckpointError(f"{f}: tensors {_few(extra)} that a {ckpt.describe()} checkpoint does not hold "
                              "(config.json does not say what they are)")
    expected.update((n, (i.shape, of_torch(i.dtype).safetensors)) for n, i in optional.items() if n in entries)
    for name, (shape, want) in expected.items():
        dt, got = entries[name].dtype.safetensors, entries[name].shape
        if got != shape or dt != want:
            raise CheckpointError(f"{f}: tensor {name} is {dt}{list(got)}, expected {want}{list(shape)} in a "
                                  f"{ckpt.describe()} checkpoint")


def _few(names: list[str]) -> str:
    return f"{names[:5]}{f' and {len(names) - 5} more' if len(names) > 5 else ''}"


def _check_scales(ckpt: TrtCheckpoint) -> None:
    """Every scale tensor finite and > 0 (they are small: read them all)."""
    from .quantized import PlainRankFile, is_scale, require_positive_scale

    for rank in range(ckpt.mapping.world_size):
        f = PlainRankFile(ckpt.rank_file(rank))
        for name in sorted(n for n in f.infos if is_scale(n)):
            require_positive_scale(f.path, name, f.read(name))


def _scan_weights(ckpt: TrtCheckpoint, rank: int, header: Header) -> None:
    """Every float tensor of rank{rank} free of NaN/Inf, by exponent bits (finite.py)."""
    f = ckpt.rank_file(rank)
    for name, e in sorted(header.entries.items(), key=lambda kv: kv[1].begin):
        if scannable(e.dtype) and range_has_nonfinite(f, header.data_start + e.begin, e.end - e.begin, e.dtype.name):
            from .quantized import PlainRankFile

            raise CheckpointError(refusal(str(f), name, PlainRankFile(f), e.shape))


class MergedCheckpoint:
    """A TensorRT-LLM checkpoint's tensors with tensor-parallel ranks merged, read one tensor (or row block)
    at a time from the rank files (plain reads, no mmap), so memory is one layer, not the model.

    Merging by concatenation reproduces what tensor-parallel execution computes: a KV head repeated
    for tp > kv heads stays repeated (`kv_heads_merged` heads)."""

    def __init__(self, ckpt: TrtCheckpoint):
        from ..tensors.stfile import SafetensorsFile

        self.ckpt = ckpt
        if ckpt.quant is not None:  # float8 weights: a reader that accepts them (the source reader refuses them)
            from .quantized import PlainRankFile as SafetensorsFile  # noqa: N814
        self.files = [SafetensorsFile(ckpt.rank_file(r)) for r in range(ckpt.mapping.world_size)]
        m, cfg = ckpt.mapping, ckpt.model
        self.tp, self.pp = m.tp_size, m.pp_size
        self.per_stage = cfg.num_hidden_layers // self.pp
        self.q_per_rank = cfg.num_attention_heads // self.tp
        self.arch = get_arch(cfg.architecture)  # how ranks hold each tensor: the rules export wrote them with
        self.kv_per_rank = -(-cfg.num_key_value_heads // self.tp)

    @property
    def kv_heads_merged(self) -> int:
        return self.kv_per_rank * self.tp

    def stage_files(self, stage: int):
        return self.files[stage * self.tp:(stage + 1) * self.tp]

    def replicated(self, stage: int, name: str) -> torch.Tensor:
        import torch

        files = self.stage_files(stage)
        first = files[0].read(name)
        for f in files[1:]:
            if not torch.equal(first, f.read(name)):
                raise CheckpointError(f"{name} differs between {files[0].path.name} and {f.path.name}, "
                                      "which must hold the same (replicated) tensor")
        return first

    def layer(self, layer: int, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Global layer `layer`'s tensors, TensorRT-LLM names relative to `transformer.layers.{local}.`,
        each cast to `dtype` (if given) as soon as it is read."""

        stage, local = divmod(layer, self.per_stage)
        pre = f"transformer.layers.{local}."
        files = self.stage_files(stage)
        out = {}
        for full in sorted(n for n in files[0].infos if n.startswith(pre)):
            name = full[len(pre):]
            out[name] = self._merge_plain(stage, full, name)
            if dtype is not None:
                out[name] = out[name].to(dtype)
        return out

    def _merge_plain(self, stage: int, full: str, name: str) -> torch.Tensor:
        import torch

        files = self.stage_files(stage)
        split = self.arch.per_layer[name].tp_split if name in self.arch.per_layer else None
        if split == "qkv":
            return self._merge_qkv([f.read(full) for f in files])
        if split is not None:
            return torch.cat([f.read(full) for f in files], split)
        return self.replicated(stage, full)

    def quantized_layer(self, layer: int) -> dict:
        """Global layer `layer` of a quantized checkpoint: each quantized linear dequantized per rank and merged
        as tensor-parallel execution combines it (`attention.qkv` ... -> QuantLinear), its KV-cache rounding
        (`kv_cache` -> KVQuant or None), every other tensor as `layer` gives it."""
        from .quant_formats import KV_SCALE, cat_cols, cat_rows
        from .quantized import K_SCALE, LINEARS, V_SCALE

        spec = self.ckpt.quant
        stage, local = divmod(layer, self.per_stage)
        pre = f"transformer.layers.{local}."
        files = self.stage_files(stage)
        names = sorted(n for n in files[0].infos if n.startswith(pre))
        quantized = [b for b in LINEARS if f"{pre}{b}.weight" in files[0].infos and spec.quantizes(pre + b)]
        out: dict = {}
        for full in names:
            name = full[len(pre):]
            base, leaf = name.rsplit(".", 1)
            if base not in quantized and leaf not in (KV_SCALE, K_SCALE, V_SCALE):
                out[name] = self._merge_plain(stage, full, name)
        for base in quantized:
            prefix = pre + base
            parts = [spec.linear(_linear_tensors(f, prefix), prefix) for f in files]
            try:
                split = self.arch.layer_tp_split(f"{base}.weight")
                if split == "qkv":
                    out[base] = cat_rows(parts).with_weight(self._merge_qkv([p.weight for p in parts]))
                else:
                    out[base] = cat_cols(parts) if split == 1 else cat_rows(parts)
            except CheckpointError as e:
                raise CheckpointError(f"{prefix} (layer {layer}): {e}") from None
        out["kv_cache"] = self._merge_kv(spec, [spec.kv_quant(_linear_tensors(f, pre + "attention"), pre + "attention")
                                                for f in files])
        return out

    def _merge_kv(self, spec, per_rank: list):
        """One KVQuant over the merged KV heads: a single scale, or each rank's scale on its own heads."""
        import torch

        from .quant_formats import KVQuant

        if per_rank[0] is None:
            return None
        scales = torch.stack([k.scale.reshape(()) for k in per_rank])
        if bool((scales == scales[0]).all()):
            return per_rank[0]
        return KVQuant(scales.repeat_interleave(self.kv_per_rank)[:, None, None])

    def _merge_qkv(self, per_rank: list[torch.Tensor]) -> torch.Tensor:
        import torch

        d = self.ckpt.model.head_dim
        sizes = [self.q_per_rank * d, self.kv_per_rank * d, self.kv_per_rank * d]
        parts = [torch.split(w, sizes, 0) for w in per_rank]
        return torch.cat([p[i] for i in range(3) for p in parts], 0)

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` (1-D) of transformer.vocab_embedding.weight, checked equal on every tp rank."""
        import torch

        name = "transformer.vocab_embedding.weight"
        unique = sorted(set(ids.tolist()))
        rows = {}
        for i in unique:
            files = self.stage_files(0)
            first = files[0].read(name, 0, i, i + 1)
            for f in files[1:]:
                if not torch.equal(first, f.read(name, 0, i, i + 1)):
                    raise CheckpointError(f"{name} row {i} differs between {files[0].path.name} and {f.path.name}")
            rows[i] = first[0]
        return torch.stack([rows[i] for i in ids.tolist()])

    def final_norm(self) -> dict[str, torch.Tensor]:
        """transformer.ln_f tensors ("weight", and "bias" where present)."""
        last = self.stage_files(self.pp - 1)[0]
        return {n.rsplit(".", 1)[1]: self.replicated(self.pp - 1, n) for n in sorted(last.infos)
                if n.startswith("transformer.ln_f.")}

    def lm_head_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the merged lm_head (vocab padding rows of the last rank excluded)."""
        import torch

        files = self.stage_files(self.pp - 1)
        if "lm_head.weight" not in files[0].infos:  # shared embedding table (not written by trt-minitron)
            return self.stage_files(0)[0].read("transformer.vocab_embedding.weight", 0, start, stop)
        per = files[0].infos["lm_head.weight"].shape[0]
        parts = []
        for r, f in enumerate(files):
            lo, hi = max(start, r * per), min(stop, (r + 1) * per)
            if lo < hi:
                parts.append(f.read("lm_head.weight", 0, lo - r * per, hi - r * per))
        return torch.cat(parts, 0)


def _linear_tensors(f, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors directly under `prefix.` in one rank file (a linear's weight and scales), read now."""
    return {n: f.read(n) for n in f.infos if n.rsplit(".", 1)[0] == prefix}


def check_replicated_norms(merged: MergedCheckpoint) -> None:
    """Every replicated per-layer tensor (norms, RowLinear biases: the arch's rules say which) and the final norm is
    identical on all tp ranks of its stage (they are small: read them all)."""
    replicated = {n for n, rule in merged.arch.per_layer.items() if rule.tp_split is None}
    for stage in range(merged.pp):
        for name in merged.stage_files(stage)[0].infos:
            short = name.split(".", 3)[3] if name.startswith("transformer.layers.") else None
            if short in replicated or name.startswith("transformer.ln_f."):
                merged.replicated(stage, name)
