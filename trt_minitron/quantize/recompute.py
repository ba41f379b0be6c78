"""ModelOpt's fake quantization of one linear layer, rebuilt from the source weights and a checkpoint's scales.

This is `verify`'s teacher for a quantized checkpoint (quantize's own check, teacher.py, uses the calibrated
model itself, which verify no longer has). Per linear and rank: an `nn.Linear` holding the source weights as
ModelOpt's model held them (divided by the pre-quant scale the export folded into them), quantized by
`mtq.quantize` with the format's own ModelOpt config (so ModelOpt chooses the quantizers, block layout and
rounding), whose amax values are then set from the checkpoint's scales (amax = scale x the quantizer's
maxbound, as the export divides it) and whose input pre-quant scale is the float32 one quantize saved, rounded
as the checkpoint stores it. Its `weight_quantizer(weight)` and `input_quantizer(x)` are what a correct
checkpoint must dequantize to.

What this cannot check: calibration values themselves (activation and KV amax, the pre-quant scales' choice)
are taken from the checkpoint and the sidecar, so a consistent but poor calibration passes here and shows in
verify's quantization-cost report instead. What it checks: every stored weight code against the source weight
and its scale (a scale off by 2x, swapped nibbles, a wrong layout, a dropped pre-quant scale all move nearly
every element), and that the reference model's activation and KV rounding is ModelOpt's.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Mapping

import torch

from ..checkpoints.quant_formats import ASF, FP8_MAX, WSF, WSF2
from ..checkpoints.quantized import QuantSpec


@dataclass(frozen=True)
class TeacherLinear:
    """ModelOpt's fake-quant values for one rank's linear: the weight and a function of the GEMM input."""

    weight: torch.Tensor  # weight_quantizer(weight), float32 (out, in)
    raw_weight: torch.Tensor  # the weight before rounding (source / pre-quant scale): for rounding ties
    module: torch.nn.Module  # the quantized nn.Linear

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module.input_quantizer(x.float()).float()


def _config(spec: QuantSpec) -> dict:
    from .modelopt_run import quant_config

    cfg = quant_config(spec.format, None)
    cfg["algorithm"] = "max"  # calibration only creates the quantizers; their amax values come from the checkpoint
    return cfg


def _set_amax(quantizer, scale: torch.Tensor) -> None:
    quantizer.amax = (scale.float() * quantizer.maxbound).reshape(quantizer.amax.shape).to(quantizer.amax)


@torch.no_grad()
def teacher_linear(spec: QuantSpec, weight: torch.Tensor, pre_quant_scale: torch.Tensor | None,
                   stored: Mapping[str, torch.Tensor], x: torch.Tensor) -> TeacherLinear:
    """ModelOpt's fake-quant linear for one rank.

    weight: the source weight (float32, this rank's rows/columns as export lays them out); pre_quant_scale: the
    float32 scale ModelOpt divided it by (this rank's input columns), or None; stored: the checkpoint's tensors
    of this linear (by suffix) for the amax values; x: a sample input [tokens, in] for the quantizers' set-up."""
    import modelopt.torch.quantization as mtq

    raw = weight.float() if pre_quant_scale is None else weight.float() / pre_quant_scale.float()[None, :]
    linear = torch.nn.Linear(raw.shape[1], raw.shape[0], bias=False)
    linear.weight.data = raw.clone()
    holder = torch.nn.Sequential(linear)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # "Inserted 3 quantizers" per call
        warnings.simplefilter("ignore")
        mtq.quantize(holder, _config(spec), lambda m: m(x[:1].float()))
    linear = holder[0]
    wq = linear.weight_quantizer
    stages = list(wq) if isinstance(wq, mtq.nn.SequentialQuantizer) else [wq]
    for quantizer, name in zip(stages, (WSF, WSF2)):
        _set_amax(quantizer, stored[name])
    iq = linear.input_quantizer
    if iq.is_enabled:
        _set_amax(iq, stored[ASF])
    if pre_quant_scale is not None:
        iq._enable_pre_quant_scale = True
        # As the checkpoint stores it (and as quantize's check rounds it): in the checkpoint dtype.
        iq.pre_quant_scale = pre_quant_scale.to(spec.dtype).float()
    return TeacherLinear(wq(linear.weight).float(), raw, linear)


def teacher_kv(scale: torch.Tensor):
    """ModelOpt's FP8 KV-cache quantizer (FP8_KV_CFG's bmm quantizer) at the checkpoint's scale."""
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    from .modelopt_run import require_modelopt

    mtq = require_modelopt()
    entry = next(e for e in mtq.FP8_KV_CFG["quant_cfg"] if "bmm_quantizer" in str(e.get("quantizer_name", "")))
    q = TensorQuantizer(QuantizerAttributeConfig(**entry["cfg"]))
    q.amax = (scale.float() * FP8_MAX).reshape(())
    return q
