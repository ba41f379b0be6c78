"""Conversion check: a quantized checkpoint's dequantized layers against ModelOpt's fake-quant model.

Teacher-forced, layer by layer: one forward of the fake-quant Hugging Face model records every
quantized linear's input and output (and the K/V entering the KV-cache quantizers). For each
checkpoint layer and rank, dequantized by formats.py, three things are compared with ModelOpt:
the weight (ModelOpt's `weight_quantizer(weight)`), the GEMM input (its `input_quantizer(x)`, which
applies the pre-quant scale too) and the layer output on the same x.

Weights and inputs are compared element by element: they must agree except for isolated rounding
flips (ModelOpt's fake quant computes x * (max / amax), the export x / (amax / max), so a value at a
rounding tie can land one step apart). A wrong scale, a swapped nibble or a dropped pre-quant scale
moves nearly every element. The output difference is reported but not judged: one flipped input
rounding moves a whole output row, and relu^2 outliers make that large relative to the layer.

Which Hugging Face modules feed which TensorRT-LLM layer, and how ranks split them, comes from the
architecture's own export rules (archs/), applied to ModelOpt's fake-quant weights exactly as
`export` applies them to real weights (and to recorded activations, for the per-rank slices).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from ..archs import get_arch
from ..archs.base import RankContext
from ..archs.config import ModelConfig, load_json
from ..checkpoints.quant_formats import cat_cols
from ..checkpoints.quantized import COLUMN_LINEARS, LINEARS, QuantSpec, RankTensors
from ..errors import CheckpointError, VerificationFailed
from ..sources.base import TensorInfo
from ..tensors.mapping import Mapping as TPMapping

# Largest fraction of weight or GEMM-input elements allowed to differ from ModelOpt's by more than float
# noise (1e-5 of the tensor's max) once exact ties are excluded. Measured: 0 in every tiny-model case
# (tests/test_quant_conversion.py) and on SmolLM2-135M, except W4A8 weights there, 1.3e-4 (an INT4 tie
# that the FP8 second step then rounds apart); planted errors move 29-100 % of the elements.
FLIP_FRACTION = 1e-3
CHECK_TOKENS = 128  # tokens of the first calibration article the check runs through the model (or each layer)
NOISE = 1e-5


@dataclass(frozen=True)
class LayerCheck:
    """One TensorRT-LLM layer (worst rank) against ModelOpt's fake-quant module(s)."""

    layer: int
    name: str  # under transformer.layers.{i}.: attention.qkv, ..., or attention.kv_cache.k / .v
    weight_mismatch: float  # fraction of dequantized weight elements != ModelOpt's fake-quant weight
    input_mismatch: float  # fraction of GEMM-input (or K/V cache) elements != ModelOpt's quantized ones
    output_rel: float  # max |ours - ModelOpt| / max |ModelOpt| of the layer output, informational

    @property
    def passed(self) -> bool:
        return self.weight_mismatch <= FLIP_FRACTION and self.input_mismatch <= FLIP_FRACTION


def mismatch(got: torch.Tensor, want: torch.Tensor, raw: torch.Tensor | None = None) -> float:
    """Fraction of elements where |got - want| exceeds float noise (NOISE x max |want|).

    With `raw` (the values before rounding), an element where got and want lie equally far from raw
    is a rounding tie resolved two ways, not an error: GGUF-derived weights sit on binary grids, and
    0.2 % of SmolLM2's FP8 weights in one layer landed exactly on FP8 midpoints."""
    got, want = got.float(), want.float()
    if got.shape != want.shape:
        return 1.0
    tol = NOISE * float(want.abs().max().clamp(min=1e-30))
    wrong = (got - want).abs() > tol
    if raw is not None:
        raw = raw.float()
        wrong &= ((got - raw).abs() - (want - raw).abs()).abs() > tol
    return float(wrong.float().mean())


def rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp(min=1e-30))


class TensorReader:
    """Named float32 tensors served to the arch rules in place of a checkpoint."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._t = {n: t.detach().float().cpu() for n, t in tensors.items()}
        self.infos = {n: TensorInfo(tuple(t.shape), t.dtype) for n, t in self._t.items()}

    def read(self, name, dim=None, start=0, stop=None):
        t = self._t[name]
        return t if dim is None else t.narrow(dim, start, (t.shape[dim] if stop is None else stop) - start)


def hf_modules(cfg: ModelConfig, layer: int, trt_name: str) -> list[str]:
    """Hugging Face modules a TensorRT-LLM linear is built from, in order (e.g. q, k, v for attention.qkv)."""
    rule = get_arch(cfg.architecture).per_layer[f"{trt_name}.weight"]
    return [f"model.layers.{layer}.{n.removesuffix('.weight')}" for n in rule.inputs]


@contextmanager
def _record(modules: Mapping[str, torch.nn.Module], names: set[str],
            ) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in names:
        def hook(_m, args, out, name=name):
            seen[name] = (args[0].detach().float().cpu(), out.detach().float().cpu())
        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _kv_quantizers(modules: Mapping[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Enabled `model.layers.{i}.self_attn.{k,v}_bmm_quantizer` modules, by name."""
    return {name: m for name, m in modules.items()
            if name.endswith(("k_bmm_quantizer", "v_bmm_quantizer")) and getattr(m, "is_enabled", False)}


@torch.no_grad()
def check_conversion(model: torch.nn.Module, ckpt_dir: Path, cfg: ModelConfig, input_ids: torch.Tensor,
                     ) -> list[LayerCheck]:
    """Every quantized linear (and FP8 KV cache) of the checkpoint against `model`, ModelOpt's fake-quant model.

    `model` must be the one the checkpoint was exported from, after the export (which mutates it), in float32:
    in bfloat16 ModelOpt rounds its fake-quantized values to bfloat16, which the checkpoint never does."""
    _require_float32(model)
    config = load_json(ckpt_dir / "config.json")
    spec = QuantSpec.from_config(config, str(ckpt_dir / "config.json"))
    if spec is None:
        raise ValueError(f"{ckpt_dir} is not quantized")
    m = config["mapping"]
    mapping = TPMapping(int(m["tp_size"]), int(m["pp_size"]))
    ranks = [RankTensors(ckpt_dir / f"rank{r}.safetensors") for r in range(mapping.world_size)]
    modules = dict(model.named_modules())
    device = next(model.parameters()).device
    return _check(modules, lambda: model(input_ids.to(device)), range(cfg.num_hidden_layers), cfg, spec, mapping,
                  ranks)


@torch.no_grad()
def check_layer(layer: torch.nn.Module, index: int, hidden: torch.Tensor, kwargs: dict, cfg: ModelConfig,
                spec: QuantSpec, mapping: TPMapping, ranks: Sequence[Mapping[str, torch.Tensor]]) -> list[LayerCheck]:
    """check_conversion for decoder layer `index` alone: `layer` (ModelOpt's fake-quant decoder layer, after the
    export, float32) run on `hidden` (with the model's other layer arguments `kwargs`); `ranks[r]`: rank r's
    tensors of this layer under their checkpoint names (empty for ranks of other pipeline stages)."""
    _require_float32(layer)
    modules = {f"model.layers.{index}" + (f".{n}" if n else ""): m for n, m in layer.named_modules()}
    return _check(modules, lambda: layer(hidden, **kwargs), [index], cfg, spec, mapping, ranks)


def _require_float32(model: torch.nn.Module) -> None:
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"the conversion check needs the fake-quant model in float32 (got {dtype}): model.float()")


def _check(modules: Mapping[str, torch.nn.Module], forward, layers, cfg: ModelConfig, spec: QuantSpec,
           mapping: TPMapping, ranks: Sequence[Mapping[str, torch.Tensor]]) -> list[LayerCheck]:
    """The checks of decoder `layers`, whose modules (by whole-model name) `forward` runs once."""
    arch = get_arch(cfg.architecture)
    device = next(p for m in modules.values() for p in m.parameters()).device
    sources = {(i, n): hf_modules(cfg, i, n) for i in layers for n in LINEARS if f"{n}.weight" in arch.per_layer}
    kv_quantizers = _kv_quantizers(modules)
    with _record(modules, {mod for mods in sources.values() for mod in mods} | set(kv_quantizers)) as seen:
        forward()

    checks = []
    for (layer, name), mods in sources.items():
        stage = _stage_ranks(mapping, cfg, layer)
        prefix = f"transformer.layers.{layer - mapping.layers(stage[0], cfg.num_hidden_layers).start}.{name}"
        rule = arch.per_layer[f"{name}.weight"]
        hf_pre = f"model.layers.{layer}."
        x = seen[mods[0]][0].reshape(-1, seen[mods[0]][0].shape[-1])
        first = modules[mods[0]]
        weights = TensorReader({f"{mod}.weight": modules[mod].weight_quantizer(modules[mod].weight) for mod in mods})
        raw_weights = TensorReader({f"{mod}.weight": modules[mod].weight for mod in mods})
        pqs = getattr(first.input_quantizer, "pre_quant_scale", None)
        raw_x = x if pqs is None else x * pqs.float().cpu()
        want_x = first.input_quantizer(x.to(device)).float().cpu()
        # x as a (tokens, in) 'weight': a row-parallel rule cuts the rank's input columns out of it.
        inputs, raw_inputs, want_inputs = (TensorReader({f"{mod}.weight": t for mod in mods}) for t in (x, raw_x, want_x))
        outputs = TensorReader({f"{mod}.weight": seen[mod][1].reshape(-1, seen[mod][1].shape[-1]).T for mod in mods})
        w_mis, x_mis, y_rel, linears = 0.0, 0.0, 0.0, []
        for r in stage:
            ctx = RankContext(cfg, mapping, r, torch.float32)
            lin = spec.linear(ranks[r], prefix)
            linears.append(lin)
            w_mis = max(w_mis, mismatch(lin.weight, rule(ctx, hf_pre)(weights), rule(ctx, hf_pre)(raw_weights)))
            if name in COLUMN_LINEARS:  # whole input per rank; its own slice of output features
                x_mis = max(x_mis, mismatch(lin.quantize_input(x), want_x, raw_x))
                y_rel = max(y_rel, rel_diff(lin(x), rule(ctx, hf_pre)(outputs).T))
            else:  # its own slice of input columns; outputs are summed over ranks (below)
                x_r = rule(ctx, hf_pre)(inputs)
                x_mis = max(x_mis, mismatch(lin.quantize_input(x_r), rule(ctx, hf_pre)(want_inputs),
                                            rule(ctx, hf_pre)(raw_inputs)))
        if name not in COLUMN_LINEARS:
            try:
                y_rel = rel_diff(cat_cols(linears)(x), seen[mods[0]][1].reshape(-1, seen[mods[0]][1].shape[-1]))
            except CheckpointError:  # ranks quantize the input differently: the input check already says where
                y_rel = float("inf")
        checks.append(LayerCheck(layer, name, w_mis, x_mis, y_rel))

    if spec.kv_cache_quant_algo is not None:
        for qname, quantizer in kv_quantizers.items():
            layer = int(qname.split("layers.")[1].split(".")[0])
            r = _stage_ranks(mapping, cfg, layer)[0]
            local = layer - mapping.layers(r, cfg.num_hidden_layers).start
            kv = spec.kv_quant(ranks[r], f"transformer.layers.{local}.attention")
            x = seen[qname][0]
            scale = _exported_kv_scale(modules[qname.rsplit(".", 1)[0]])
            want = _modelopt_at_scale(quantizer, x.to(device), scale.to(device)).cpu()
            checks.append(LayerCheck(layer, "attention.kv_cache." + qname.rsplit(".", 1)[1][0], 0.0,
                                     mismatch(kv(x), want, x), rel_diff(kv(x), want)))
    return checks


def _stage_ranks(mapping: TPMapping, cfg: ModelConfig, layer: int) -> list[int]:
    return [r for r in range(mapping.world_size) if layer in mapping.layers(r, cfg.num_hidden_layers)]


def _exported_kv_scale(attention: torch.nn.Module) -> torch.Tensor:
    """The kv_cache_scaling_factor ModelOpt's exporter derives: max of the K and V scales, each clamped to >= 1."""
    from modelopt.torch.export.quant_utils import get_kv_cache_scaling_factor

    return torch.stack([s.float().reshape(()) for s in get_kv_cache_scaling_factor(attention)]).max()


def _modelopt_at_scale(quantizer: torch.nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ModelOpt's FP8 quantizer output on x with its amax set to `scale` x 448.

    TensorRT-LLM rounds K and V with the one exported scale (clamped to >= 1.0, ModelOpt's
    recommendation for FP8 KV), not with each quantizer's calibrated amax."""
    saved = quantizer.amax.clone()
    try:
        quantizer.amax = (scale * 448.0).to(saved)
        return quantizer(x).float()
    finally:
        quantizer.amax = saved


def failures(checks: list[LayerCheck]) -> list[LayerCheck]:
    """Checks outside FLIP_FRACTION."""
    return [c for c in checks if not c.passed]


def judge(checks: list[LayerCheck]) -> None:
    """Raise VerificationFailed naming the first layer outside FLIP_FRACTION, if any."""
    bad = failures(checks)
    if bad:
        b = bad[0]
        raise VerificationFailed(f"conversion check failed in {len(bad)} layer(s), first layer {b.layer} {b.name}: "
                                 f"{b.weight_mismatch:.1%} of weight and {b.input_mismatch:.1%} of input elements "
                                 f"differ from ModelOpt's fake quantization (allowed {FLIP_FRACTION:.1%})")
