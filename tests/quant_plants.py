"""Doctored calibrations of quantized TensorRT-LLM checkpoints that the conversion check cannot see (it rebuilds
ModelOpt's quantization at the checkpoint's own scales): each multiplies scale tensors of the rank files and the
float32 pre-quant scale sidecar, the weights' scales changed to match where the doctoring needs it (so the checkpoint
computes exactly what a model calibrated that way would). tests/test_verify_calibration.py and
benchmarks/verify_tolerance.py --bugs plant them in the checkpoints of tests/quant_fixtures.py.
"""

from __future__ import annotations

from safetensors.torch import load_file, save_file

from trt_minitron.checkpoints.quantized import PQS_SIDECAR

L0, L1 = "transformer.layers.0.", "transformer.layers.1."


def scale(ckpt, factors: dict[str, float], sidecar: dict[str, float] = {}) -> None:  # noqa: B006
    """Multiply rank-file tensors (every rank holding them) and sidecar entries by the given factors."""
    for f in sorted(ckpt.glob("rank*.safetensors")):
        t = load_file(f)
        for name, k in factors.items():
            if name in t:
                t[name] = (t[name].float() * k).to(t[name].dtype)
        save_file(t, f, metadata={"format": "pt"})
    if sidecar:
        t = load_file(ckpt / PQS_SIDECAR)
        for name, k in sidecar.items():
            t[f"{name}.pre_quant_scale"] = t[f"{name}.pre_quant_scale"] * k
        save_file(t, ckpt / PQS_SIDECAR)


QKV_HF = [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
# (checkpoint, rank-file factors, sidecar factors, the tensor the mismatch names, the ratio it states)
PLANTS = [
    ("activation scale x1.5", ("llama", "fp8", 1), {f"{L0}attention.qkv.activation_scaling_factor": 1.5}, {},
     "layer 0 attention.qkv.activation_scaling_factor (rank 0)", "(x1.5)"),
    ("activation scale x1.5, tp 2", ("nemotron", "fp8", 2), {f"{L1}mlp.proj.activation_scaling_factor": 1.5}, {},
     "layer 1 mlp.proj.activation_scaling_factor (rank 0)", "(x1.5)"),
    ("KV scale x4", ("llama", "fp8+kv", 2), {f"{L1}attention.kv_cache_scaling_factor": 4.0}, {},
     "layer 1 attention.kv_cache_scaling_factor (rank 0)", "(x4)"),
    ("KV scale x4 (AWQ)", ("nemotron", "int4_awq+kv", 1), {f"{L0}attention.kv_cache_scaling_factor": 4.0}, {},
     "layer 0 attention.kv_cache_scaling_factor (rank 0)", "(x4)"),
    # SmoothQuant's x * s, W / s (s: the pre-quant scale): s x2 halves every output channel's weight amax (codes
    # unchanged) and doubles the input's amax; in the rank file (bfloat16) and the sidecar (float32) alike.
    ("SmoothQuant scale x2", ("llama", "int8_sq", 2),
     {f"{L0}mlp.fc.prequant_scaling_factor": 2.0, f"{L0}mlp.fc.weights_scaling_factor": 0.5,
      f"{L0}mlp.fc.activation_scaling_factor": 2.0, f"{L0}mlp.gate.prequant_scaling_factor": 2.0,
      f"{L0}mlp.gate.weights_scaling_factor": 0.5, f"{L0}mlp.gate.activation_scaling_factor": 2.0},
     {"model.layers.0.mlp.gate_proj": 2.0, "model.layers.0.mlp.up_proj": 2.0},
     "layer 0 mlp.fc.activation_scaling_factor (rank 0)", "(x2)"),
    # AWQ's W / s in groups, x * s: s x2 halves every group's weight scale (codes unchanged).
    ("AWQ pre-quant scale x2", ("llama", "int4_awq+kv", 2),
     {f"{L0}attention.qkv.prequant_scaling_factor": 2.0, f"{L0}attention.qkv.weights_scaling_factor": 0.5},
     dict.fromkeys(QKV_HF, 2.0), "layer 0 attention.qkv.prequant_scaling_factor (rank 0)", "(x2)"),
    ("AWQ pre-quant scale x2 (W4A8)", ("nemotron", "w4a8_awq", 1),
     {f"{L1}attention.qkv.prequant_scaling_factor": 2.0, f"{L1}attention.qkv.weights_scaling_factor": 0.5,
      f"{L1}attention.qkv.activation_scaling_factor": 2.0},
     dict.fromkeys([n.replace("layers.0", "layers.1") for n in QKV_HF], 2.0),
     "layer 1 attention.qkv.activation_scaling_factor (rank 0)", "(x2)"),
]
