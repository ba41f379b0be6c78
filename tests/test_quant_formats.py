"""Dequantization rules (trt_minitron/checkpoints/quant_formats.py) against ModelOpt's own packing and fake quantization.

Unit level, on random tensors: every rule is compared with the ModelOpt function that wrote or
defines the format. The layer-level comparison on real calibrated models is test_quant_conversion.py.
"""

from __future__ import annotations

import pytest
import torch

from trt_minitron.checkpoints.quant_formats import (
    FORMATS,
    ActQuant,
    QuantLinear,
    cat_cols,
    cat_rows,
    e2m1_round,
    fp8_qdq,
    get_format,
    int8_qdq,
    unpack_fp4_cols,
    unpack_int4_rows,
)
from trt_minitron.checkpoints.quantized import QuantSpec
from trt_minitron.errors import CheckpointError, ConfigError
from trt_minitron.quantize.teacher import mismatch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_int4_unpack_inverts_modelopt_packing():
    from modelopt.torch.export.quant_utils import pack_int4_in_uint8

    codes = torch.randint(-8, 8, (6, 256)).float()
    scales = torch.rand(6, 2) + 0.5
    packed = pack_int4_in_uint8(codes * scales.repeat_interleave(128, 1), scales, 128).view(torch.int8)
    assert packed.shape == (3, 256) and packed.dtype == torch.int8
    assert torch.equal(unpack_int4_rows(packed), codes.to(torch.int8))
    # Low nibble = even row: byte (r, c) = row 2r | row 2r+1 << 4.
    assert int(packed.view(torch.uint8)[0, 0]) == (int(codes[0, 0]) & 0xF) | ((int(codes[1, 0]) & 0xF) << 4)


def test_nvfp4_weight_and_activation_match_modelopt_qtensor():
    from modelopt.torch.quantization.qtensor import NVFP4QTensor

    w = torch.randn(8, 64)
    q, wsf, wsf2 = NVFP4QTensor.quantize(w, 16)
    want = q.dequantize(dtype=torch.float32, scale=wsf, double_scale=wsf2, block_sizes={-1: 16})
    lin = get_format("nvfp4").dequantize({"weight": q._quantized_data, "weights_scaling_factor": wsf,
                                          "weights_scaling_factor_2": wsf2, "activation_scaling_factor": wsf2})
    assert torch.equal(lin.weight, want)
    # Dynamic NVFP4 input quantization = NVFP4 block quantization under the global activation scale.
    x = torch.randn(5, 64) * 3
    asf = x.abs().max() / (6 * 448)
    qx, sx, _ = NVFP4QTensor.quantize(x, 16, weights_scaling_factor_2=asf)
    want_x = qx.dequantize(dtype=torch.float32, scale=sx, double_scale=asf, block_sizes={-1: 16})
    assert torch.equal(lin.act_quant.__class__(asf)(x), want_x)


def test_e2m1_rounding_matches_modelopt_including_ties():
    from modelopt.torch.quantization.qtensor import NVFP4QTensor

    x = torch.cat([torch.linspace(-7, 7, 2001), torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, -2.5])])
    codes = NVFP4QTensor._cast_fp4(x.clone())
    want = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6])[codes.long()]
    assert torch.equal(e2m1_round(x), want)
    packed = (codes[1::2] << 4 | codes[0::2]).reshape(1, -1)  # two consecutive inputs per byte, low = even
    assert torch.equal(unpack_fp4_cols(packed)[0], want)


def test_fp8_and_int8_fake_quant_match_modelopt():
    from modelopt.torch.quantization.tensor_quant import _tensor_quant, fp8_eager

    x = torch.randn(64, 512) * 5
    for amax in (x.abs().max(), x.abs().max() / 3):  # the second saturates
        assert mismatch(fp8_qdq(x, amax / 448), fp8_eager(x, amax)) < 1e-3
        assert mismatch(int8_qdq(x, amax / 127), _tensor_quant(x, amax, 8, False, False)) < 1e-3
    assert int8_qdq(torch.tensor([-1000.0, 1000.0]), torch.tensor(1.0)).tolist() == [-128, 127]  # full int8 range


@pytest.mark.parametrize("qformat", sorted(FORMATS))
def test_check_names_the_tensor_that_is_wrong(qformat):
    fmt = FORMATS[qformat]
    infos = fmt.linear_tensors(256, 256, torch.bfloat16)
    good = {s: torch.zeros(i.shape, dtype=i.dtype) for s, i in infos.items()}
    fmt.check(good, "transformer.layers.0.mlp.fc", torch.bfloat16)
    for suffix, info in infos.items():
        if suffix == "weight":
            continue
        missing = {s: t for s, t in good.items() if s != suffix}
        with pytest.raises(CheckpointError, match=f"missing transformer.layers.0.mlp.fc.{suffix}"):
            fmt.check(missing, "transformer.layers.0.mlp.fc", torch.bfloat16)
        wrong = {**good, suffix: torch.zeros((3,), dtype=torch.float64)}
        with pytest.raises(CheckpointError, match=rf"mlp.fc.{suffix} is float64\[3\]"):
            fmt.check(wrong, "transformer.layers.0.mlp.fc", torch.bfloat16)


def test_layouts_per_format():
    """Names, shapes and dtypes a (512 x 256) linear has in each format (the issue's table)."""
    got = {q: {s: (str(i.dtype).removeprefix("torch."), list(i.shape))
               for s, i in f.linear_tensors(512, 256, torch.bfloat16).items()} for q, f in FORMATS.items()}
    assert got["fp8"] == {"weight": ("float8_e4m3fn", [512, 256]), "weights_scaling_factor": ("float32", [1]),
                          "activation_scaling_factor": ("float32", [1])}
    assert got["int8_sq"] == {"weight": ("int8", [512, 256]), "weights_scaling_factor": ("float32", [512]),
                              "activation_scaling_factor": ("float32", [1]),
                              "prequant_scaling_factor": ("bfloat16", [256])}
    assert got["int4_awq"] == {"weight": ("int8", [256, 256]), "weights_scaling_factor": ("float32", [512, 2]),
                               "prequant_scaling_factor": ("bfloat16", [256])}
    assert got["w4a8_awq"] == {**got["int4_awq"], "weights_scaling_factor_2": ("float32", [1]),
                               "activation_scaling_factor": ("float32", [1])}
    grouped64 = get_format("int4_awq", 64).linear_tensors(512, 256, torch.bfloat16)["weights_scaling_factor"]
    assert (grouped64.dtype, grouped64.shape) == (torch.float32, (512, 4))
    with pytest.raises(ConfigError, match="group size 32 is not supported for int4_awq; choose 128 or 64"):
        get_format("int4_awq", 32)
    assert got["nvfp4"] == {"weight": ("uint8", [512, 128]), "weights_scaling_factor": ("float8_e4m3fn", [512, 16]),
                            "weights_scaling_factor_2": ("float32", []), "activation_scaling_factor": ("float32", [])}


def test_rank_merges_reproduce_the_full_layer():
    w, x = torch.randn(8, 6), torch.randn(3, 6)
    pqs, act = torch.rand(6) + 0.5, ActQuant("int8", torch.tensor(0.05))
    full = QuantLinear(w, pqs, act)
    rows = cat_rows([QuantLinear(w[:4], pqs, act), QuantLinear(w[4:], pqs, act)])
    assert torch.equal(rows(x), full(x))
    assert torch.equal(full.to("cpu")(x), full(x)) and full.to("meta").weight.device.type == "meta"
    cols = cat_cols([QuantLinear(w[:, :3], pqs[:3], act), QuantLinear(w[:, 3:], pqs[3:], act)])
    assert torch.allclose(cols(x), full(x), atol=1e-6)
    with pytest.raises(CheckpointError, match="rank 1 quantizes this layer's input differently"):
        cat_rows([QuantLinear(w[:4], pqs, act), QuantLinear(w[4:], pqs * 2, act)])
    with pytest.raises(CheckpointError, match="rank 1 quantizes"):
        cat_cols([QuantLinear(w[:, :3], pqs[:3], act), QuantLinear(w[:, 3:], pqs[3:], ActQuant("int8", torch.tensor(1.)))])


def test_quant_spec_reads_config_json_block():
    assert QuantSpec.from_config({"quantization": {"quant_algo": None, "kv_cache_quant_algo": None}}) is None
    spec = QuantSpec.from_config({"quantization": {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": "FP8",
                                                   "group_size": 128, "has_zero_point": False,
                                                   "pre_quant_scale": True, "exclude_modules": ["lm_head"]}})
    assert spec.format.qformat == "int4_awq" and spec.kv_cache_quant_algo == "FP8" and spec.exclude_modules == ("lm_head",)
    assert QuantSpec.from_config({"quantization": {"quant_algo": "W4A8_AWQ", "group_size": 64}}).format.group_size == 64
    for q, match in [({"quant_algo": "MIXED_PRECISION"}, "unsupported quant_algo 'MIXED_PRECISION'"),
                     ({"quant_algo": "W4A16_AWQ", "group_size": 32}, "group_size 32 is not supported; supported: 128, 64"),
                     ({"quant_algo": "W4A16_AWQ", "has_zero_point": True}, "has_zero_point"),
                     ({"quant_algo": "FP8", "kv_cache_quant_algo": "INT8"}, "unsupported kv_cache_quant_algo 'INT8'"),
                     ({"quant_algo": None, "kv_cache_quant_algo": "FP8"}, "without quantized weights")]:
        with pytest.raises(CheckpointError, match=match):
            QuantSpec.from_config({"quantization": q})
    with pytest.raises(ConfigError, match="unknown --qformat 'int3'; choose one of fp8, int8_sq"):
        get_format("int3")
