"""Quantized TensorRT-LLM checkpoint formats: what ModelOpt writes for one linear layer, and its exact inverse.

One class per format states the tensors a linear layer must hold (name, shape, dtype) and turns
them back into a float32 weight plus the activation quantization TensorRT-LLM applies to the
layer's input, as a `QuantLinear` whose `forward(x)` emulates the quantized GEMM. Pure torch:
no ModelOpt needed. The maths follows ModelOpt 0.47's export (`modelopt/torch/export/quant_utils.py`,
`to_quantized_weight`, `pack_int4_in_uint8`) and its fake quantizers (`tensor_quant.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..tensors.info import TensorInfo

FP8_MAX = 448.0
E2M1_MAX = 6.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
NVFP4_BLOCK = 16
F32 = torch.float32

WEIGHT = "weight"
WSF = "weights_scaling_factor"
WSF2 = "weights_scaling_factor_2"
ASF = "activation_scaling_factor"
PQS = "prequant_scaling_factor"
KV_SCALE = "kv_cache_scaling_factor"


def fp8_qdq(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x rounded to float8_e4m3fn on the grid `scale` (saturating), back in float32."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale


def int8_qdq(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x rounded to int8 (full range -128..127, as ModelOpt's narrow_range=False) on the grid `scale`."""
    return torch.round(x.float() / scale).clamp(-128, 127) * scale


def e2m1_round(x: torch.Tensor) -> torch.Tensor:
    """x (already scaled) rounded to the nearest FP4 e2m1 value, ties to even, saturating at +-6."""
    bounds = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], device=x.device)
    values = torch.tensor(E2M1_VALUES[:8], device=x.device)
    a = x.abs()
    idx = torch.searchsorted(bounds, a)
    idx = idx + torch.isin(a, bounds[[1, 3, 5]]).long()  # ModelOpt's _cast_fp4: ties at odd bounds round up
    return values[idx.clamp(max=7)] * torch.sign(x)


@dataclass(frozen=True)
class ActQuant:
    """Static per-tensor quantization of a GEMM input: `kind` "fp8" or "int8" on the grid `scale`."""

    kind: str
    scale: torch.Tensor  # float32 scalar tensor, as stored (activation_scaling_factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_qdq(x, self.scale) if self.kind == "fp8" else int8_qdq(x, self.scale)


@dataclass(frozen=True)
class NVFP4ActQuant:
    """Dynamic NVFP4 input quantization: per 16-element block, an FP8 block scale under the global `scale`."""

    scale: torch.Tensor  # activation_scaling_factor = global amax / (6 * 448)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        blocks = x.float().reshape(-1, NVFP4_BLOCK)
        amax = blocks.abs().amax(-1, keepdim=True)
        block_scale = (amax / (E2M1_MAX * self.scale)).clamp(2**-9, FP8_MAX).to(torch.float8_e4m3fn).float()
        step = block_scale * self.scale
        return (e2m1_round(blocks / step) * step).reshape(shape)


@dataclass(frozen=True)
class QuantLinear:
    """A dequantized linear layer: y = act_quant(x * pre_quant_scale) @ weight.T, all in float32.

    `weight` holds the dequantized values exactly (every stored code times its scales); the input
    transform is what TensorRT-LLM's quantized GEMM does to the activation before multiplying.
    """

    weight: torch.Tensor  # float32 (out, in)
    pre_quant_scale: torch.Tensor | None = None  # float32 (in,), multiplies the input (SmoothQuant, AWQ)
    act_quant: ActQuant | NVFP4ActQuant | None = None

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The GEMM's effective input: x scaled by the pre-quant scale, then fake-quantized."""
        x = x.float()
        if self.pre_quant_scale is not None:
            x = x * self.pre_quant_scale
        return x if self.act_quant is None else self.act_quant(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize_input(x) @ self.weight.T

    __call__ = forward

    def with_weight(self, weight: torch.Tensor) -> QuantLinear:
        """The same input transform over other weight rows (used to regroup fused qkv rows)."""
        return replace(self, weight=weight)

    def to(self, device: str | torch.device) -> QuantLinear:
        """All tensors on `device`."""
        act = None if self.act_quant is None else replace(self.act_quant, scale=self.act_quant.scale.to(device))
        pqs = None if self.pre_quant_scale is None else self.pre_quant_scale.to(device)
        return QuantLinear(self.weight.to(device), pqs, act)


def cat_rows(parts: list[QuantLinear]) -> QuantLinear:
    """Column-parallel ranks (qkv, fc, gate) merged: output rows concatenated, input transform shared."""
    _same_input_transform(parts, pre_quant_too=True)
    return parts[0].with_weight(torch.cat([p.weight for p in parts], 0))


def cat_cols(parts: list[QuantLinear]) -> QuantLinear:
    """Row-parallel ranks (dense, proj) merged: input columns and pre-quant scales concatenated.

    Exact because every per-tensor activation scale is replicated across ranks (checked)."""
    _same_input_transform(parts, pre_quant_too=False)
    pqs = None if parts[0].pre_quant_scale is None else torch.cat([p.pre_quant_scale for p in parts], 0)
    return QuantLinear(torch.cat([p.weight for p in parts], 1), pqs, parts[0].act_quant)


def _same_input_transform(parts: list[QuantLinear], pre_quant_too: bool) -> None:
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        same_act = (p.act_quant is None) == (first.act_quant is None) and (
            p.act_quant is None or (type(p.act_quant) is type(first.act_quant)
                                    and torch.equal(p.act_quant.scale, first.act_quant.scale)))
        same_pqs = not pre_quant_too or (
            (p.pre_quant_scale is None) == (first.pre_quant_scale is None)
            and (p.pre_quant_scale is None or torch.equal(p.pre_quant_scale, first.pre_quant_scale)))
        if not (same_act and same_pqs):
            raise CheckpointError(f"tensor-parallel rank {i} quantizes this layer's input differently from rank 0")


@dataclass(frozen=True)
class KVQuant:
    """FP8 KV cache: K (after rope) and V stored as float8_e4m3fn on the grid `scale` (kv_cache_scaling_factor)."""

    scale: torch.Tensor  # scalar, or [kv heads, 1, 1] when tensor-parallel ranks hold different scales

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, kv heads, tokens, head size] (or any shape, for a scalar scale) as the cache holds it."""
        return fp8_qdq(x, self.scale).to(x.dtype)

    def to(self, device: str | torch.device) -> KVQuant:
        return KVQuant(self.scale.to(device))


class QuantFormat:
    """One quant_algo: the tensors of a quantized linear layer and how to dequantize them."""

    qformat: ClassVar[str]  # `trt-minitron quantize --qformat` name
    quant_algo: ClassVar[str]  # config.json quantization.quant_algo (TensorRT-LLM QuantAlgo)
    modelopt_config: ClassVar[str]  # modelopt.torch.quantization config name
    weight_bits: ClassVar[int]
    group_sizes: ClassVar[tuple[int, ...]] = ()  # supported blocks along the input dimension, default first
    needs_cuda_forward: ClassVar[bool] = False

    def __init__(self, group_size: int | None = None):
        if group_size is not None and group_size not in self.group_sizes:
            allowed = f"choose {' or '.join(map(str, self.group_sizes))}" if self.group_sizes else "it has no groups"
            raise ConfigError(f"group size {group_size} is not supported for {self.qformat}; {allowed}")
        self.group_size: int | None = group_size or (self.group_sizes[0] if self.group_sizes else None)

    def linear_tensors(self, out_features: int, in_features: int, dtype: torch.dtype) -> dict[str, TensorInfo]:
        """Suffix (under the layer prefix) -> shape/dtype of each tensor a quantized linear must hold.

        `dtype` is the checkpoint's dtype (pre-quant scales are written in it)."""
        raise NotImplementedError

    def dequantize(self, t: Mapping[str, torch.Tensor]) -> QuantLinear:
        """The layer's tensors (keyed by suffix: weight, weights_scaling_factor, ...) -> QuantLinear."""
        raise NotImplementedError

    def check(self, t: Mapping[str, torch.Tensor], where: str, dtype: torch.dtype) -> None:
        """Every expected tensor present with its shape and dtype (`dtype`: the checkpoint's, config.json `dtype`)."""
        out_f, in_f = self._dims(t, where)
        expected = self.linear_tensors(out_f, in_f, dtype)
        for suffix, info in expected.items():
            if suffix not in t:
                raise CheckpointError(f"{where}: missing {where}.{suffix} for {self.quant_algo}")
            have = t[suffix]
            if tuple(have.shape) != info.shape or have.dtype != info.dtype:
                raise CheckpointError(f"{where}.{suffix} is {_fmt(have.dtype)}{list(have.shape)}, {self.quant_algo} "
                                      f"expects {_fmt(info.dtype)}{list(info.shape)}")

    def _dims(self, t: Mapping[str, torch.Tensor], where: str) -> tuple[int, int]:
        if WEIGHT not in t or t[WEIGHT].dim() != 2:
            raise CheckpointError(f"{where}: missing or non-2-D {where}.weight")
        return t[WEIGHT].shape[0], t[WEIGHT].shape[1]


def _fmt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.float().reshape(())


class FP8(QuantFormat):
    qformat, quant_algo, modelopt_config, weight_bits = "fp8", "FP8", "FP8_DEFAULT_CFG", 8

    def linear_tensors(self, out_features, in_features, dtype):
        return {WEIGHT: TensorInfo((out_features, in_features), torch.float8_e4m3fn),
                WSF: TensorInfo((1,), F32), ASF: TensorInfo((1,), F32)}

    def dequantize(self, t):
        return QuantLinear(t[WEIGHT].float() * _scalar(t[WSF]), None, ActQuant("fp8", _scalar(t[ASF])))


class Int8SmoothQuant(QuantFormat):
    qformat, quant_algo, modelopt_config, weight_bits = "int8_sq", "W8A8_SQ_PER_CHANNEL", "INT8_SMOOTHQUANT_CFG", 8

    def linear_tensors(self, out_features, in_features, dtype):
        return {WEIGHT: TensorInfo((out_features, in_features), torch.int8), WSF: TensorInfo((out_features,), F32),
                ASF: TensorInfo((1,), F32), PQS: TensorInfo((in_features,), dtype)}

    def dequantize(self, t):
        # The smoothing's inverse is already folded into the weight; the input is multiplied by the scale.
        return QuantLinear(t[WEIGHT].float() * t[WSF].float()[:, None], t[PQS].float(),
                           ActQuant("int8", _scalar(t[ASF])))


def unpack_int4_rows(packed: torch.Tensor) -> torch.Tensor:
    """int8 (out/2, in), two output rows per byte (low nibble = even row, high = odd; signed) -> int8 (out, in)."""
    b = packed.view(torch.uint8).to(torch.int16)
    low, high = b & 0x0F, (b >> 4) & 0x0F
    low, high = low - 16 * (low >= 8), high - 16 * (high >= 8)  # two's complement nibbles: [-8, 7]
    return torch.stack([low, high], 1).reshape(2 * packed.shape[0], packed.shape[1]).to(torch.int8)


class Int4AWQ(QuantFormat):
    qformat, quant_algo, modelopt_config, weight_bits = "int4_awq", "W4A16_AWQ", "INT4_AWQ_CFG", 4
    group_sizes = (128, 64)  # TensorRT-LLM's AWQ kernels take 64 or 128; SmolLM2's 576 needs 64

    def _dims(self, t, where):
        if WEIGHT not in t or t[WEIGHT].dim() != 2:
            raise CheckpointError(f"{where}: missing or non-2-D {where}.weight")
        return 2 * t[WEIGHT].shape[0], t[WEIGHT].shape[1]

    def linear_tensors(self, out_features, in_features, dtype):
        return {WEIGHT: TensorInfo((out_features // 2, in_features), torch.int8),
                WSF: TensorInfo((out_features, in_features // self.group_size), F32),
                PQS: TensorInfo((in_features,), dtype)}

    def _int4_weight(self, t) -> torch.Tensor:
        q = unpack_int4_rows(t[WEIGHT]).float()
        return q * t[WSF].float().repeat_interleave(self.group_size, dim=1)

    def dequantize(self, t):
        return QuantLinear(self._int4_weight(t), t[PQS].float(), None)


class W4A8AWQ(Int4AWQ):
    qformat, quant_algo, modelopt_config = "w4a8_awq", "W4A8_AWQ", "W4A8_AWQ_BETA_CFG"

    def linear_tensors(self, out_features, in_features, dtype):
        return {**super().linear_tensors(out_features, in_features, dtype),
                WSF2: TensorInfo((1,), F32), ASF: TensorInfo((1,), F32)}

    def dequantize(self, t):
        # INT4 groups, then the per-tensor FP8 step TensorRT-LLM's W4A8 kernel takes (weights to FP8).
        weight = fp8_qdq(self._int4_weight(t), _scalar(t[WSF2]))
        return QuantLinear(weight, t[PQS].float(), ActQuant("fp8", _scalar(t[ASF])))


def unpack_fp4_cols(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (out, in/2), two consecutive inputs per byte (low nibble = even input) -> e2m1 values (out, in)."""
    values = torch.tensor(E2M1_VALUES)
    low, high = values[(packed & 0x0F).long()], values[(packed >> 4).long()]
    return torch.stack([low, high], -1).reshape(packed.shape[0], 2 * packed.shape[1])


class NVFP4(QuantFormat):
    qformat, quant_algo, modelopt_config, weight_bits = "nvfp4", "NVFP4", "NVFP4_DEFAULT_CFG", 4
    group_sizes = (NVFP4_BLOCK,)
    needs_cuda_forward = True  # ModelOpt's dynamic block fake-quant asserts CUDA tensors

    def _dims(self, t, where):
        if WEIGHT not in t or t[WEIGHT].dim() != 2:
            raise CheckpointError(f"{where}: missing or non-2-D {where}.weight")
        return t[WEIGHT].shape[0], 2 * t[WEIGHT].shape[1]

    def linear_tensors(self, out_features, in_features, dtype):
        return {WEIGHT: TensorInfo((out_features, in_features // 2), torch.uint8),
                WSF: TensorInfo((out_features, in_features // NVFP4_BLOCK), torch.float8_e4m3fn),
                WSF2: TensorInfo((), F32), ASF: TensorInfo((), F32)}

    def dequantize(self, t):
        block = t[WSF].float() * _scalar(t[WSF2])
        weight = unpack_fp4_cols(t[WEIGHT]) * block.repeat_interleave(NVFP4_BLOCK, dim=1)
        return QuantLinear(weight, None, NVFP4ActQuant(_scalar(t[ASF])))


FORMATS: dict[str, QuantFormat] = {f.qformat: f for f in (FP8(), Int8SmoothQuant(), Int4AWQ(), W4A8AWQ(), NVFP4())}
BY_QUANT_ALGO: dict[str, QuantFormat] = {f.quant_algo: f for f in FORMATS.values()}
KV_CACHE_DTYPES = ("fp8",)


def get_format(qformat: str, group_size: int | None = None) -> QuantFormat:
    """The format for a `--qformat` name (with its group size), or a one-line ConfigError listing the choices."""
    if qformat not in FORMATS:
        raise ConfigError(f"unknown --qformat {qformat!r}; choose one of {', '.join(FORMATS)}")
    return type(FORMATS[qformat])(group_size)


def format_for_algo(quant_algo: str, where: str = "config.json") -> QuantFormat:
    """The format for a config.json quant_algo, or a one-line CheckpointError."""
    try:
        return BY_QUANT_ALGO[quant_algo]
    except KeyError:
        raise CheckpointError(f"unsupported quant_algo {quant_algo!r} in {where}; supported: "
                              f"{', '.join(BY_QUANT_ALGO)}") from None
