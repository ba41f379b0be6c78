"""`verify` on ModelOpt's unified Hugging Face checkpoint (`quantize --format hf`): its labels checked against its
tensors, then the same proof as a quantized TensorRT-LLM checkpoint (verify/quantized.py), per Hugging Face linear.

Labels first (no number is run on a checkpoint whose labels and tensors disagree, since consumers would load
something else than it holds): hf_quant_config.json and config.json's quantization_config must agree; quant_algo,
group_size and exclude_modules must describe exactly the tensors present (every linear exclude_modules does not
match holds the format's tensors, every one it matches a plain weight); kv_cache_quant_algo FP8 means a k_scale and
v_scale per attention, and none without it (checkpoints/unified.py states the layout).

Then per layer, teacher-forced on the source's own inputs: each quantized linear against ModelOpt's fake quantization
of the source weight at the checkpoint's scales (judge_linear); a pre-quant scale the export folded into the norm
feeding the linear (AWQ) is judged where it now lives, the norm, which must equal ModelOpt's fold of the source norm
and quantize's float32 scale, rounded to the checkpoint dtype; every other unquantized tensor must equal the source
rounded; the FP8 KV-cache rounding of K and V, each at its own scale, against ModelOpt's quantizer. The checkpoint runs
through transformers' own decoder layer for its architecture, its linears replaced by their dequantized GEMMs
(formats.py) and its attention rounding K (after rope) and V to FP8, for the quantization cost.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import torch

from ..archs import get_arch
from ..checkpoints.hf import UNIFIED, HFCheckpoint
from ..checkpoints.quant_formats import PQS, KVQuant
from ..checkpoints.quantized import PQS_SIDECAR_HF, QuantSpec, check_sidecar, load_prequant_scales
from ..checkpoints.unified import K_SCALE, V_SCALE, label_format, linear_tensors, to_format
from ..checkpoints.unified_label import Label, read_label
from ..errors import ConfigError
from ..quantize.teacher import FLIP_FRACTION, LayerCheck
from ..sources import TensorInfo, open_source
from ..sources.checks import check_source
from ..tensors.dtypes import dtype_name
from .hf_side import layer_output, load_module
from .matching import match_hf_reference
from .quantized import QuantizedVerifyResult, _Layer, judge_kv, judge_linear, modelopt_version, text_ids, verify_quantized
from .source_side import causal_additive_mask

KV_ATTENTION = "trt_minitron_fp8_kv"  # transformers attention implementation that rounds K and V first


def _kv_rounding_attention(module, query, key, value, attention_mask, **kwargs):
    """The architecture's eager attention on K (after rope) and V rounded as the FP8 KV cache stores them."""
    rounding = getattr(module, "kv_rounding", None)
    if rounding is not None:
        module.kv_seen = key, value
        key, value = rounding[0](key), rounding[1](value)
    eager = importlib.import_module(type(module).__module__).eager_attention_forward
    return eager(module, query, key, value, attention_mask, **kwargs)


class _Emulated(torch.nn.Module):
    """A linear as the checkpoint computes it: a QuantLinear's emulated GEMM, or a plain weight."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.linear, torch.Tensor):
            return x @ self.linear.T
        return self.linear(x).to(x.dtype)


def expected_tensors(ckpt: HFCheckpoint, label: Label, fmt) -> tuple[dict[str, TensorInfo], set[str]]:
    """Every tensor the labels say the folder holds (transformers' names, each quantized linear's as ModelOpt's unified
    export writes them, the KV scales), and those that may be absent (a pre-quant scale folded into a norm)."""
    expected = ckpt.expected()
    optional = set()
    f32 = torch.float32
    for name, module in ckpt.meta_model().named_modules():
        if not isinstance(module, torch.nn.Linear) or label.excludes(name) or f"{name}.weight" not in expected:
            continue
        del expected[f"{name}.weight"]
        out_f, in_f = module.weight.shape
        for suffix, info in linear_tensors(fmt, out_f, in_f, ckpt.dtype).items():
            expected[f"{name}.{suffix}"] = info
            if suffix == "pre_quant_scale":
                optional.add(f"{name}.{suffix}")
    if label.kv_cache_quant_algo:
        for i in range(ckpt.config.num_hidden_layers):
            for scale in (K_SCALE, V_SCALE):
                expected[f"model.layers.{i}.self_attn.{scale}"] = TensorInfo((), f32)
    return expected, optional


class UnifiedSide:
    """The checkpoint side of verify_quantized for a unified Hugging Face checkpoint."""

    target = "hf"  # rounded as `export --format hf` rounds: every tensor cast only
    scope = "every quantized linear"

    def __init__(self, ckpt: HFCheckpoint, label: Label, fmt, what: str):
        self.ckpt, self.label, self.fmt, self.what = ckpt, label, fmt, what
        self.spec = QuantSpec(fmt, label.kv_cache_quant_algo, ckpt.dtype, label.exclude_modules)
        self.dtype, self.hidden_size = ckpt.dtype, ckpt.config.hidden_size
        self.num_layers = ckpt.config.num_hidden_layers
        self.embedding_name = ckpt.arch.embedding
        self.scales = load_prequant_scales(ckpt.path, PQS_SIDECAR_HF)
        check_sidecar(self.spec, self.scales, ckpt.path, PQS_SIDECAR_HF)
        self._meta = ckpt.meta_model()
        self._config = ckpt.config
        self.notes: list[str] = []
        if label.kv_cache_quant_algo:
            from transformers.modeling_utils import AttentionInterface

            AttentionInterface.register(KV_ATTENTION, _kv_rounding_attention)
            self._config = copy.copy(ckpt.config)
            self._config._attn_implementation = KV_ATTENTION

    def start(self, source, num_tokens: int) -> tuple[list[str], int]:
        pos = torch.arange(num_tokens)[None]
        self._rope = self.ckpt.modules.rotary(config=self.ckpt.config)(torch.zeros(1), pos)  # [1, T, dim]: any batch
        self._mask, self._pos = causal_additive_mask(num_tokens), pos
        final = [n for n in self.ckpt.infos if n.startswith("model.norm.")]
        bad = [n for n in final if not torch.equal(self.ckpt.read(n), source.read(n).to(self.dtype))]
        return bad, sum(1 for n in self.ckpt.infos if "norm" in n)

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        name = self.embedding_name
        rows = {i: self.ckpt.read(name, 0, i, i + 1)[0] for i in set(ids.tolist())}
        return torch.stack([rows[i] for i in ids.tolist()]).float()

    def _linear(self, full: str) -> dict[str, torch.Tensor]:
        """A quantized linear's stored tensors as formats.py names them."""
        stored = {n.rsplit(".", 1)[1]: self.ckpt.read(n) for n in self.ckpt.infos if n.rsplit(".", 1)[0] == full}
        return to_format(self.fmt, stored, self.dtype, full)

    def layer(self, i: int, src: _Layer, x_in: torch.Tensor,
              stream: torch.Tensor) -> tuple[list[LayerCheck], list[str], torch.Tensor]:
        pre = f"model.layers.{i}."
        has_pqs = PQS in self.fmt.linear_tensors(32, max(32, self.fmt.group_size or 0), self.dtype)
        checks, differences, linears, folded = [], [], {}, {}
        for name in src.linears:
            full = pre + name
            if self.label.excludes(full):
                linears[name] = self.ckpt.read(f"{full}.weight").float()
                if not torch.equal(self.ckpt.read(f"{full}.weight"), src.weights.read(f"{full}.weight").to(self.dtype)):
                    differences.append(f"{full}.weight")
                continue
            stored = self._linear(full)
            pqs = None
            if has_pqs:
                pqs = self.scales.get(full)
                if pqs is None:
                    raise ConfigError(f"{self.ckpt.path / PQS_SIDECAR_HF} has no pre-quant scale for {full}")
            if has_pqs and PQS not in stored:
                if full not in src.fed_by:
                    differences.append(f"{full}.pre_quant_scale (absent, and no norm feeds this linear to carry it)")
                    continue
                folded[full] = pqs
            # A folded scale is in the norm: the linear's own input transform has none (ones).
            linears[name] = self.fmt.dequantize({**stored, PQS: torch.ones(src.inputs[full].shape[-1], dtype=self.dtype)}
                                                if full in folded else stored)
            weight = src.weights.read(f"{full}.weight")
            w, x, y = judge_linear(self.spec, stored, weight, pqs, src.inputs[full], folded=full in folded,
                                   ours=linears[name])
            checks.append(LayerCheck(i, name, w, x, y))
            if w > FLIP_FRACTION and not self.notes and self._narrow_export(full, weight, pqs):
                self.notes.append(f"layer {i} {name}'s codes are exactly ModelOpt's unified export computed in "
                                  f"{dtype_name(self.dtype)}: it casts each weight to the export dtype before dividing it "
                                  "by its scale (double rounding); `trt-minitron quantize --format hf` exports in float32")
        differences += self._norm_differences(src, folded)
        for norm in {src.fed_by[f] for f in folded}:  # a scale in the norm and in a linear it feeds: applied twice
            twice = [lin for lin, n in src.fed_by.items()
                     if n == norm and lin not in folded and f"{lin}.pre_quant_scale" in self.ckpt.infos]
            differences += [f"{lin}.pre_quant_scale (its norm {norm} carries the folded scale too)" for lin in twice]
        module = self._decoder_layer(i, linears)
        attn = module.self_attn
        if self.label.kv_cache_quant_algo:
            k_scale, v_scale = (self.ckpt.read(f"{pre}self_attn.{s}").float() for s in (K_SCALE, V_SCALE))
            attn.kv_rounding = KVQuant(k_scale), KVQuant(v_scale)
        out = layer_output(module(torch.cat([x_in, stream]), attention_mask=self._mask, position_ids=self._pos,
                                  position_embeddings=self._rope))
        if self.label.kv_cache_quant_algo:
            k, v = (t[:x_in.shape[0]] for t in attn.kv_seen)  # the teacher-forced texts' K and V
            for which, t, rounding in (("k", k, attn.kv_rounding[0]), ("v", v, attn.kv_rounding[1])):
                mis, rel = judge_kv(rounding(t).float(), rounding.scale, t)
                checks.append(LayerCheck(i, f"self_attn.kv_cache.{which}", 0.0, mis, rel))
        return checks, differences, out[x_in.shape[0]:]

    def _narrow_export(self, full: str, weight: torch.Tensor, pqs: torch.Tensor | None) -> bool:
        """Whether linear `full`'s stored codes are ModelOpt's quant_utils.to_quantized_weight of the source weight (over
        its pre-quant scale) cast to the checkpoint dtype first, as unified_export_hf._export_quantized_weight does
        with its `dtype`: the diagnosis of a weight mismatch in checkpoints exported that way."""
        from modelopt.torch.export.quant_utils import to_quantized_weight

        raw = weight if pqs is None else weight / pqs[None, :]
        names = {n.rsplit(".", 1)[1]: n for n in self.ckpt.infos if n.rsplit(".", 1)[0] == full}
        scale2 = self.ckpt.read(names["weight_scale_2"]) if "weight_scale_2" in names else None
        codes = to_quantized_weight(raw.to(self.dtype), self.ckpt.read(names["weight_scale"]), self.fmt.qformat, scale2,
                                    self.fmt.group_size)
        stored = self.ckpt.read(names["weight"])
        return codes.shape == stored.shape and torch.equal(codes.view(torch.uint8), stored.view(torch.uint8))

    def _norm_differences(self, src: _Layer, folded: dict[str, torch.Tensor]) -> list[str]:
        """The layer's norms against the source rounded to the checkpoint dtype, or, where the linears a norm feeds
        have their pre-quant scale folded into it, against ModelOpt's fold (quant_utils.fuse_prequant_layernorm,
        float32: (w + offset) * s - offset, bias * s; offset 1 for a layernorm1p gamma)."""
        bad = []
        for norm in sorted(set(src.fed_by.values())):
            scales = [folded[lin] for lin, n in src.fed_by.items() if n == norm and lin in folded]
            if scales and any(not torch.equal(s, scales[0]) for s in scales[1:]):
                bad.append(f"{norm} (the linears it feeds have different pre-quant scales in the sidecar)")
                continue
            for leaf in ("weight", "bias"):
                name = f"{norm}.{leaf}"
                if name not in self.ckpt.infos:
                    continue
                want = src.weights.read(name)
                if scales:
                    offset = self.ckpt.arch.rounding_offsets.get(name.split(".", 3)[3], 0.0) if leaf == "weight" else 0.0
                    want = (want + offset) * scales[0] - offset
                if not torch.equal(self.ckpt.read(name), want.to(self.dtype)):
                    bad.append(name + (" (with its linears' folded pre-quant scale)" if scales else ""))
        return bad

    def _decoder_layer(self, i: int, linears: dict) -> torch.nn.Module:
        with torch.device("meta"):
            module = self.ckpt.modules.decoder_layer(self._config, i)
        for name, linear in linears.items():
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent), child, _Emulated(linear))
        return load_module(module, self.ckpt, f"model.layers.{i}.")

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return load_module(self._meta.get_submodule("model.norm"), self.ckpt, "model.norm.")(x)

    def lm_head_rows(self, start: int, stop: int) -> torch.Tensor:
        return self.ckpt.read(self.ckpt.head, 0, start, stop).float()


def verify_unified(path: Path, reference_src, dataset_file, num_samples: int, max_tokens: int) -> QuantizedVerifyResult:
    """Labels against tensors, then conversion and cost on CNN/DailyMail texts (see the module docstring)."""
    ckpt = HFCheckpoint(path)
    label, problems = read_label(path, ckpt.raw)
    if label is None:  # checkpoint_kind saw a label; a quantization_config that is not ModelOpt's is refused there
        raise ConfigError(f"{path} states no ModelOpt quantization")
    if label.quant_algo is None:
        raise ConfigError(f"{path}: quant_algo is null (a KV-cache-only checkpoint), which verify does not judge")
    fmt, more = label_format(label, str(path))
    expected, optional = expected_tensors(ckpt, label, fmt)
    problems += more + ckpt.config_problems() + ckpt.tensor_problems(expected, optional)
    what = f"{UNIFIED} ({ckpt.arch.hf_architecture}, {label.describe()}, {ckpt.describe().split(', ')[-1]})"
    if problems:
        return QuantizedVerifyResult(label.quant_algo, label.kv_cache_quant_algo, dtype_name(ckpt.dtype), 0, 0, (), (), 0, None,
                                     modelopt_version(), tuple(ckpt.notes), what, tuple(problems))
    cfg = ckpt.config
    ids = text_ids(path, cfg.vocab_size, dataset_file, num_samples, max_tokens)
    side = UnifiedSide(ckpt, label, fmt, what)
    source = open_source(reference_src)
    try:
        vocab, notes = match_hf_reference(ckpt, source.config, str(reference_src))
        check_source(get_arch(source.config.architecture), source)
        return verify_quantized(side, source, ids, vocab, tuple(ckpt.notes + notes))
    finally:
        source.close()
