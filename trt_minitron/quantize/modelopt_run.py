"""The ModelOpt steps: load the source with transformers, calibrate (`mtq.quantize`), export.

Only this module (and teacher.py, through the model it is given) touches ModelOpt; it is imported
when `quantize` runs, so the rest of trt_minitron works without the `quant` extra.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..archs import get_arch
from ..checkpoints.quant_formats import QuantFormat
from ..errors import MissingDependencyError


def require_modelopt():
    """modelopt.torch.quantization, or a one-line error naming the extra to install."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "transformers X is not tested with this modelopt" on import
            import modelopt.torch.quantization as mtq
    except ImportError as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise MissingDependencyError(f"quantize needs NVIDIA ModelOpt, which cannot be imported ({why}): "
                                     "pip install 'trt-minitron[quant]'") from None
    return mtq


@contextlib.contextmanager
def quiet():
    """ModelOpt's per-call chatter ("Inserted 81 quantizers", once per layer) dropped, its warnings too."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def stdout_to_stderr():
    """ModelOpt prints progress chatter on stdout; keep stdout for results."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def load_model(folder: Path, device: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The HF model for calibration: by default float32 on CPU, bfloat16 on CUDA. Memory: the whole model."""
    from transformers import AutoModelForCausalLM

    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval()


def quant_config(fmt: QuantFormat, kv_cache_dtype: str | None) -> dict:
    """The ModelOpt config for the format (its group size set), with FP8 K/V quantizers for an FP8 KV cache."""
    mtq = require_modelopt()
    cfg = copy.deepcopy(getattr(mtq, fmt.modelopt_config))
    if fmt.group_size:
        for entry in cfg["quant_cfg"]:
            stages = entry.get("cfg") if isinstance(entry.get("cfg"), list) else [entry.get("cfg") or {}]
            for stage in stages:
                if isinstance(stage.get("block_sizes"), dict) and -1 in stage["block_sizes"]:
                    stage["block_sizes"][-1] = fmt.group_size
    if kv_cache_dtype == "fp8":
        cfg["quant_cfg"] = list(cfg["quant_cfg"]) + copy.deepcopy(list(mtq.FP8_KV_CFG["quant_cfg"]))
    return cfg


def calibrate(model: torch.nn.Module, cfg: dict, batches: list[torch.Tensor],
              on_batch: Callable[[], None] = lambda: None) -> None:
    """mtq.quantize with a forward loop over `batches` (AWQ runs the loop more than once)."""
    mtq = require_modelopt()
    device = next(model.parameters()).device

    def forward_loop(m: torch.nn.Module) -> None:
        for ids in batches:
            m(input_ids=ids.to(device))
            on_batch()

    with torch.no_grad(), stdout_to_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(model, cfg, forward_loop)


def export_trtllm(model: torch.nn.Module, architecture: str, dtype: torch.dtype, tp: int, pp: int,
                  out_dir: Path) -> None:
    """ModelOpt's TensorRT-LLM checkpoint (config.json + rank*.safetensors). Mutates `model` (see teacher.py)."""
    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    with torch.no_grad(), stdout_to_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_tensorrt_llm_checkpoint(model, get_arch(architecture).modelopt_decoder_type, dtype, export_dir=out_dir,
                                       inference_tensor_parallel=tp, inference_pipeline_parallel=pp)


def export_hf(model: torch.nn.Module, dtype: torch.dtype, out_dir: Path) -> None:
    """ModelOpt's unified Hugging Face checkpoint (hf_quant_config.json + quantization_config)."""
    from modelopt.torch.export import export_hf_checkpoint

    with torch.no_grad(), stdout_to_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, dtype=dtype, export_dir=out_dir)


def round_prequant_scales(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Round every input quantizer's pre-quant scale to `dtype`, as the export stores it; returns how many.

    Afterwards the fake-quant model computes what the checkpoint holds, so the conversion check
    compares like with like (the rounding itself is part of the quantization cost, not a conversion bug)."""
    n = 0
    for m in model.modules():
        q = getattr(m, "input_quantizer", None)
        if q is not None and getattr(q, "_pre_quant_scale", None) is not None:
            q.pre_quant_scale = q.pre_quant_scale.to(dtype).to(q.pre_quant_scale.dtype)
            n += 1
    return n


def prequant_scales(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's float32 pre-quant scales (what its weights were divided by) by Hugging Face module name
    (`prefix` + the name within `model`), for the sidecar (checkpoints/quantized.py): verify rebuilds ModelOpt's
    weights from the source with them, since the checkpoint keeps them rounded to its dtype. Take them after the
    export (which re-averages them)."""
    # clone(): round_prequant_scales later rounds the quantizer's buffer in place
    return {f"{prefix}{name}": q._pre_quant_scale.detach().float().cpu().reshape(-1).clone()
            for name, m in model.named_modules()
            if (q := getattr(m, "input_quantizer", None)) is not None and getattr(q, "_pre_quant_scale", None) is not None}
