"""Parameter trees of the quantized linear layers, from tensorrt_llm/quantization/layers.py (index file id
790827869, a 1.x version): names, per-rank shapes and dtypes as the module declares them, i.e. AFTER
modeling_utils.preprocess_weights has converted the checkpoint's tensors (see models/modeling_utils.py here).

  FP8Linear / FP8RowLinear: weight (out, in) fp8, weights_scaling_factor (1,) and activation_scaling_factor (1,)
      float32, bias;
  Int8SmoothQuantLinear / RowLinear: weight (out, in) int8, weights_scaling_factor (out,) float32,
      activation_scaling_factor (1,) float32, prequant_scaling_factor (in,) in the model dtype, bias;
  WeightOnlyGroupwiseQuantLinear / RowLinear (AWQ): in and out features padded up to a multiple of
      max(128 if W4A8 else 64, group_size) * tp_size; weight (in, out / 4) in the model dtype (int4 packed four to a
      16-bit word), weights_scaling_factor (in / group, out) model dtype, prequant_scaling_factor (1, in) model
      dtype when pre_quant_scale, alpha (1,) float32 for W4A8, and activation_scaling_factor (1,) float32 for W4A8
      on the ROW linear only.
Column linears split out features by tp, row linears in features (ColumnLinear / RowLinear)."""

from __future__ import annotations

import math

from ..models._layers import Linear

F32 = "float32"


class _QuantLinear(Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool, tp_size: int, row: bool):
        super().__init__(in_features, out_features, bias, tp_size)
        self.row = row
        self.out_r = out_features if row else out_features // tp_size
        self.in_r = in_features // tp_size if row else in_features

    def _bias(self) -> None:
        if self.bias:
            self.param("bias", (self.out_r,))


class FP8Linear(_QuantLinear):
    def __init__(self, in_features, out_features, bias=True, tp_size=1, row=False):
        super().__init__(in_features, out_features, bias, tp_size, row)
        self.param("weight", (self.out_r, self.in_r), "fp8")
        self.param("activation_scaling_factor", (1,), F32)
        self.param("weights_scaling_factor", (1,), F32)
        self._bias()


class Int8SmoothQuantLinear(_QuantLinear):
    def __init__(self, in_features, out_features, bias=True, tp_size=1, row=False):
        super().__init__(in_features, out_features, bias, tp_size, row)
        self.param("activation_scaling_factor", (1,), F32)
        self.param("weights_scaling_factor", (self.out_r,), F32)
        self.param("prequant_scaling_factor", (self.in_r,))
        self.param("weight", (self.out_r, self.in_r), "int8")
        self._bias()


class WeightOnlyGroupwiseQuantLinear(_QuantLinear):
    def __init__(self, in_features, out_features, group_size=128, pre_quant_scale=False, bias=False, tp_size=1,
                 use_w4a8_awq=False, row=False):
        multiple = max(128 if use_w4a8_awq else 64, group_size) * tp_size
        self.is_padded = in_features % multiple > 0 or out_features % multiple > 0
        in_features = math.ceil(in_features / multiple) * multiple
        out_features = math.ceil(out_features / multiple) * multiple
        super().__init__(in_features, out_features, bias, tp_size, row)
        self.param("weight", (self.in_r, self.out_r // 4))
        self.param("weights_scaling_factor", (self.in_r // group_size, self.out_r))
        if pre_quant_scale:
            self.param("prequant_scaling_factor", (1, self.in_r))
        if use_w4a8_awq:
            self.param("alpha", (1,), F32)
            if row:
                self.param("activation_scaling_factor", (1,), F32)
        self._bias()
