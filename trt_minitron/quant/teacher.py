"""Conversion check: a quantized checkpoint's dequantized layers against ModelOpt's fake-quant model.

Teacher-forced, layer by layer: one forward of the fake-quant Hugging Face model records every
quantized linear's input and output (and the K/V entering the KV-cache quantizers); each
checkpoint layer, dequantized by formats.py, is then run on exactly that input. Whole-model logits
cannot be compared this tightly: once activations are quantized, float-order noise flips a rounding
somewhere and the difference grows layer by layer.

Which Hugging Face modules feed which TensorRT-LLM layer, and how ranks split them, comes from the
architecture's own export rules (archs/), applied to the recorded outputs instead of to weights:
a column-parallel rule that picks weight rows picks the matching output features.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..archs import get_arch
from ..archs.base import RankContext
from ..config import ModelConfig
from ..mapping import Mapping as TPMapping
from ..sources.base import MetaReader, TensorInfo
from .checkpoint import COLUMN_LINEARS, LINEARS, QuantSpec, RankTensors
from .formats import cat_cols


@dataclass(frozen=True)
class LayerCheck:
    """Largest |ours - ModelOpt| of one layer's output (one rank for column-parallel layers)."""

    layer: int
    name: str  # TensorRT-LLM name under transformer.layers.{i}. (attention.qkv, ..., attention.kv_cache)
    rank: int | None  # None: ranks merged (row-parallel layers, KV cache)
    max_abs_diff: float
    max_abs_ref: float

    @property
    def rel(self) -> float:
        """Difference relative to the largest output magnitude of the layer."""
        return self.max_abs_diff / max(self.max_abs_ref, 1e-30)


class _Recorder(MetaReader):
    """Meta reader that remembers which source tensors a rule reads."""

    def __init__(self, infos: dict[str, TensorInfo]):
        super().__init__(infos)
        self.names: list[str] = []

    def read(self, name, dim=None, start=0, stop=None):
        self.names.append(name)
        return super().read(name, dim, start, stop)


class _OutputReader:
    """Recorded outputs (tokens, out) presented as (out, tokens) 'weights', so row rules pick output features."""

    def __init__(self, outputs: dict[str, torch.Tensor]):
        self._t = {f"{m}.weight": y.reshape(-1, y.shape[-1]).T.float() for m, y in outputs.items()}
        self.infos = {n: TensorInfo(tuple(t.shape), t.dtype) for n, t in self._t.items()}

    def read(self, name, dim=None, start=0, stop=None):
        t = self._t[name]
        return t if dim is None else t.narrow(dim, start, (t.shape[dim] if stop is None else stop) - start)


def hf_modules(cfg: ModelConfig, layer: int, trt_name: str) -> list[str]:
    """Hugging Face modules a TensorRT-LLM linear is built from, in order (e.g. q, k, v for attention.qkv)."""
    arch = get_arch(cfg.architecture)
    rec = _Recorder({n: TensorInfo(s, torch.float32) for n, s in arch.hf_tensors(cfg).items()})
    ctx = RankContext(cfg, TPMapping(1, 1), 0, torch.float32)
    arch.per_layer[f"{trt_name}.weight"](ctx, f"model.layers.{layer}.")(rec)
    return [n.removesuffix(".weight") for n in rec.names]


@contextmanager
def _record(model: torch.nn.Module, names: set[str]) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    modules = dict(model.named_modules())
    for name in names:
        def hook(_m, args, out, name=name):
            seen[name] = (args[0].detach(), out.detach())
        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _kv_quantizers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """`model.layers.{i}.self_attn.{k,v}_bmm_quantizer` modules that are enabled, by name."""
    out = {}
    for name, m in model.named_modules():
        if name.endswith(("k_bmm_quantizer", "v_bmm_quantizer")) and getattr(m, "is_enabled", False):
            out[name] = m
    return out


@torch.no_grad()
def check_conversion(model: torch.nn.Module, ckpt_dir: Path, cfg: ModelConfig, input_ids: torch.Tensor,
                     ) -> list[LayerCheck]:
    """Every quantized linear (and FP8 KV cache) of the checkpoint against `model`, ModelOpt's fake-quant model."""
    from ..config import load_json

    config = load_json(ckpt_dir / "config.json")
    spec = QuantSpec.from_config(config, str(ckpt_dir / "config.json"))
    if spec is None:
        raise ValueError(f"{ckpt_dir} is not quantized")
    m = config["mapping"]
    mapping = TPMapping(int(m["tp_size"]), int(m["pp_size"]))
    ranks = [RankTensors(ckpt_dir / f"rank{r}.safetensors") for r in range(mapping.world_size)]
    arch = get_arch(cfg.architecture)

    sources = {(i, n): hf_modules(cfg, i, n) for i in range(cfg.num_hidden_layers) for n in LINEARS
               if f"{n}.weight" in arch.per_layer}
    kv_quantizers = _kv_quantizers(model)
    wanted = {mod for mods in sources.values() for mod in mods} | set(kv_quantizers)
    with _record(model, wanted) as seen:
        model(input_ids.to(next(model.parameters()).device))

    checks = []
    for (layer, name), modules in sources.items():
        stage_ranks = [r for r in range(mapping.world_size) if layer in mapping.layers(r, cfg.num_hidden_layers)]
        local = layer - mapping.layers(stage_ranks[0], cfg.num_hidden_layers).start
        prefix = f"transformer.layers.{local}.{name}"
        x = seen[modules[0]][0].float()
        if name in COLUMN_LINEARS:
            outputs = _OutputReader({mod: seen[mod][1] for mod in modules})
            rule = arch.per_layer[f"{name}.weight"]
            for r in stage_ranks:
                ctx = RankContext(cfg, mapping, r, torch.float32)
                want = rule(ctx, f"model.layers.{layer}.")(outputs).T
                got = spec.linear(ranks[r], prefix)(x).reshape(want.shape)
                checks.append(_diff(layer, name, r, got, want))
        else:
            merged = cat_cols([spec.linear(ranks[r], prefix) for r in stage_ranks])
            want = seen[modules[0]][1].float()
            checks.append(_diff(layer, name, None, merged(x).reshape(want.shape), want))

    if spec.kv_cache_quant_algo is not None:
        for qname, quantizer in kv_quantizers.items():
            layer = int(qname.split("layers.")[1].split(".")[0])
            r = next(r for r in range(mapping.world_size) if layer in mapping.layers(r, cfg.num_hidden_layers))
            local = layer - mapping.layers(r, cfg.num_hidden_layers).start
            kv = spec.kv_quant(ranks[r], f"transformer.layers.{local}.attention")
            x = seen[qname][0]
            want = _modelopt_at_scale(quantizer, x, kv.scale)
            checks.append(_diff(layer, "attention.kv_cache." + qname.rsplit(".", 1)[1][0], None, kv(x), want))
    return checks


def _modelopt_at_scale(quantizer: torch.nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ModelOpt's FP8 quantizer output on x with its amax set to the scale the checkpoint stores (x 448).

    The export writes max(k, v, 1.0)-style clamped KV scales, not the calibrated amax, so the
    checkpoint is compared with ModelOpt's rounding at the stored scale."""
    saved = quantizer.amax.clone()
    try:
        quantizer.amax = (scale * 448.0).to(saved)
        return quantizer(x).float()
    finally:
        quantizer.amax = saved


def _diff(layer: int, name: str, rank: int | None, got: torch.Tensor, want: torch.Tensor) -> LayerCheck:
    return LayerCheck(layer, name, rank, float((got.float() - want.float()).abs().max()),
                      float(want.float().abs().max()))


def worst(checks: list[LayerCheck]) -> LayerCheck:
    """The check with the largest relative difference."""
    return max(checks, key=lambda c: c.rel)
