"""`verify`'s calibration proof: the checkpoint's scales recomputed from the source with the recorded recipe.

The conversion check (quantized.py) rebuilds ModelOpt's fake quantization from the source *at the checkpoint's
scales*, so it trusts whatever calibration produced. This module does not: it reads the recipe `quantize`
recorded (trt_minitron_quantize.json: data, sample ids, token digest, ModelOpt config, device), calibrates the
source again layer by layer with quantize's own machinery (quantize/layerwise.py, one layer in memory), exports
each layer through ModelOpt's exporter (quantize/layer_export.py) at the checkpoint's tensor parallelism, and
compares every scale tensor of every rank (activation and KV amax, per-channel and group weight scales,
SmoothQuant and AWQ pre-quant scales) and the float32 pre-quant scale sidecar with the checkpoint's, bit for bit:
the same code on the same tokens in the same dtype gives the same bits (measured for every format at 1 and 2
threads, tests/test_verify_calibration.py). The first difference is named (layer, tensor, rank, element,
recomputed vs found).

Where the recipe cannot be replayed here (no report, a hub dataset or a file that is gone or changed, a CUDA
calibration on a machine without one, a ModelOpt whose config for the format differs), the calibration is
said to be not proven, with why, and verify judges the conversion only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..archs import get_arch
from ..checkpoints.quant_formats import KV_SCALE, get_format
from ..checkpoints.quantized import K_SCALE, V_SCALE, is_scale, load_prequant_scales
from ..checkpoints.trtllm import MergedCheckpoint
from ..errors import TrtMinitronError, one_line
from ..sources.base import Source
from ..tensors.dtypes import torch_dtype

REPORT = "trt_minitron_quantize.json"  # quantize/run.py writes it (quantize.run.REPORT)
WHOLE_MODEL = "whole model"  # how quantize's report says --whole-model ("mode" starts with it)


@dataclass(frozen=True)
class CalibrationProof:
    """The outcome: proven (every scale recomputed bit for bit), failed (`mismatch` names the first difference),
    or neither (`reason`: why the recipe could not be replayed here; the conversion is judged alone)."""

    proven: bool
    mismatch: str | None = None
    reason: str | None = None
    compared: int = 0  # scale tensors compared (every rank, plus the sidecar's)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.mismatch is not None

    def line(self) -> str:
        if self.failed:
            return f"calibration: FAILED, recomputed from the recorded recipe: {self.mismatch}"
        if self.proven:
            return (f"calibration proven: {self.compared} scale tensors recomputed from the source with the recorded "
                    f"recipe are bit-identical to the checkpoint's ({self.seconds:.1f} s)")
        return f"calibration not proven: {self.reason}; only the conversion at the checkpoint's scales is judged"


class NotReplayable(Exception):
    """The recorded recipe cannot be replayed here (said, not an error)."""


def read_recipe(ckpt_dir: Path) -> dict:
    """trt_minitron_quantize.json, or NotReplayable saying why not."""
    path = ckpt_dir / REPORT
    if not path.is_file():
        raise NotReplayable(f"no {REPORT} (the recipe `trt-minitron quantize` records) in {ckpt_dir}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotReplayable(f"{path} is unreadable ({one_line(str(e), 120)})") from None
    if not isinstance(report, dict) or not isinstance(report.get("calibration"), dict):
        raise NotReplayable(f"{path} records no calibration (written by a trt-minitron older than the recipe)")
    return report


def modelopt_config(report: dict) -> dict:
    """The ModelOpt config quantize used, rebuilt here from the recorded format, or NotReplayable when this
    ModelOpt makes another one than the recorded (a different version's defaults)."""
    from ..quantize.modelopt_run import quant_config

    cal = report["calibration"]
    try:
        fmt = get_format(report["qformat"], report.get("group_size"))
        cfg = quant_config(fmt, report.get("kv_cache_dtype"))
    except (KeyError, TypeError, TrtMinitronError) as e:
        raise NotReplayable(f"{REPORT} names no format this tool quantizes ({one_line(str(e), 120)})") from None
    ours = json.loads(json.dumps({"algorithm": cfg.get("algorithm"), "quant_cfg": cfg.get("quant_cfg")}, default=str))
    recorded = {"algorithm": cal.get("modelopt_algorithm"), "quant_cfg": cal.get("modelopt_quant_cfg")}
    if ours != recorded:
        raise NotReplayable(f"this ModelOpt ({_versions_here()['nvidia-modelopt']}) configures {report['qformat']} "
                            f"differently from the recorded run ({_recorded_versions(report)})")
    return cfg


def _versions_here() -> dict[str, str]:
    from ..quantize.by_layer import versions

    return versions()


def _recorded_versions(report: dict) -> str:
    v = report.get("versions") or {}
    return ", ".join(f"{k} {v[k]}" for k in ("nvidia-modelopt", "torch", "transformers") if k in v) or "versions unknown"


def calibration_device(report: dict) -> str:
    """Where to recalibrate: where quantize calibrated (the dtype follows the device), or NotReplayable."""
    from ..quantize.hf_model import calibration_dtype

    cal = report["calibration"]
    device = cal.get("device")
    if device not in ("cpu", "cuda"):
        raise NotReplayable(f"{REPORT} records calibration device {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise NotReplayable("it was calibrated on CUDA (bfloat16) and torch sees no CUDA GPU here")
    if cal.get("dtype") != str(calibration_dtype(device)).removeprefix("torch."):
        raise NotReplayable(f"it was calibrated in {cal.get('dtype')} on {device}; quantize calibrates in "
                            f"{calibration_dtype(device)} there")
    if str(cal.get("mode", "")).startswith(WHOLE_MODEL) and report.get("kv_cache_dtype") and "awq" in report["qformat"]:
        raise NotReplayable("AWQ with an FP8 KV cache was calibrated on the whole model (--whole-model), whose search "
                            "sees earlier layers' KV rounding; layer-by-layer recalibration does not reproduce it "
                            "(benchmarks/README.md, quantize_awq_kv.py)")
    return device


def recorded_tokens(report: dict, tokenizer_dir: Path) -> list[torch.Tensor]:
    """The calibration batches, rebuilt from the recorded data with the checkpoint's tokenizer and checked against
    the recorded articles digest, sample ids and token digest; NotReplayable when they cannot be."""
    from transformers import AutoTokenizer

    from ..quantize.calib import recorded_batches

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as e:  # transformers raises ValueError, OSError, KeyError, ... for unusable tokenizer files
        raise NotReplayable(f"no usable tokenizer in {tokenizer_dir} ({one_line(str(e), 120)})") from None
    try:
        return recorded_batches(report["calibration"], tokenizer)
    except TrtMinitronError as e:
        raise NotReplayable(f"the recorded calibration data is not available here: {e}") from None
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise NotReplayable(f"{REPORT}'s calibration block is incomplete or unreadable ({one_line(str(e), 120)})") \
            from None


def _differs(want: torch.Tensor, have: torch.Tensor) -> str | None:
    """None when bit-identical, else what differs (shape, dtype, or the first element and the ratio)."""
    if want.dtype != have.dtype or want.shape != have.shape:
        return f": recomputed {want.dtype}{list(want.shape)}, found {have.dtype}{list(have.shape)}"
    if torch.equal(want, have):
        return None
    w, h = want.float().reshape(-1), have.float().reshape(-1)
    i = int((w != h).nonzero()[0]) if bool((w != h).any()) else 0
    at = f" element {i}" if w.numel() > 1 else ""
    ratio = f" (x{float(h[i] / w[i]):.4g})" if float(w[i]) != 0 else ""
    return f"{at}: recomputed {float(w[i]):.6g}, found {float(h[i]):.6g}{ratio}"


def _folded_kv(ours: dict[str, torch.Tensor], theirs: set[str]) -> set[str]:
    """ModelOpt's separate K and V scales that quantize folds into the kv_cache_scaling_factor it writes (the one
    TensorRT-LLM uses, max(k, v): quantize/assemble.py rank_entries), unless the checkpoint keeps them."""
    return {name for name in ours if name.endswith((f".{K_SCALE}", f".{V_SCALE}")) and name not in theirs
            and name.rsplit(".", 1)[0] + f".{KV_SCALE}" in ours}


def compare_layer(merged: MergedCheckpoint, index: int, ranks: list[dict[str, torch.Tensor]],
                  prequant: dict[str, torch.Tensor], sidecar: dict[str, torch.Tensor]) -> tuple[int, str | None]:
    """(scale tensors compared, the first difference) between decoder layer `index` as recalibrated and exported
    (`ranks`: per tensor-parallel rank, names under the layer; `prequant`: float32 pre-quant scales by HF module)
    and the checkpoint's rank files and sidecar."""
    stage, local = divmod(index, merged.per_stage)
    pre = f"transformer.layers.{local}."
    n = 0
    for r, (ours, f) in enumerate(zip(ranks, merged.stage_files(stage), strict=True)):
        rank = stage * merged.tp + r
        theirs = {name[len(pre):] for name in f.infos if name.startswith(pre) and is_scale(name)}
        wanted = {name for name in ours if is_scale(name) and name not in _folded_kv(ours, theirs)}
        for name in sorted(wanted | theirs):
            where = f"layer {index} {name} (rank {rank})"
            if name not in theirs:
                return n, f"{where}: the recalibrated export has it, the checkpoint does not"
            if name not in wanted:
                return n, f"{where}: the checkpoint has it, the recalibrated export does not"
            n += 1
            why = _differs(ours[name], f.read(pre + name))
            if why is not None:
                return n, f"{where}{why}"
    for module in sorted(prequant):
        where = f"layer {index} {module} pre-quant scale (sidecar)"
        if module not in sidecar:
            return n, f"{where}: missing from the checkpoint's sidecar"
        n += 1
        why = _differs(prequant[module], sidecar[module])
        if why is not None:
            return n, f"{where}{why}"
    return n, None


def prove_calibration(merged: MergedCheckpoint, source: Source, tokenizer_dir: Path | None = None) -> CalibrationProof:
    """Recalibrate `source` with the recipe recorded in `merged`'s folder and compare every scale; see the module
    docstring. `tokenizer_dir`: where the calibration tokenizer is (default: the checkpoint's own, which quantize
    copies from the source or --tokenizer)."""
    ckpt = merged.ckpt
    try:
        report = read_recipe(ckpt.path)
        cfg = modelopt_config(report)
        device = calibration_device(report)
        batches = recorded_tokens(report, tokenizer_dir or ckpt.path)
    except NotReplayable as e:
        return CalibrationProof(False, reason=str(e))
    start = time.perf_counter()
    compared, mismatch = recalibrate_and_compare(merged, source, cfg, batches, device)
    if mismatch is not None and _recorded_versions(report) != _recorded_versions({"versions": _versions_here()}):
        mismatch += f" (recorded with {_recorded_versions(report)}; here {_recorded_versions({'versions': _versions_here()})})"
    return CalibrationProof(mismatch is None, mismatch, compared=compared, seconds=time.perf_counter() - start)


def recalibrate_and_compare(merged: MergedCheckpoint, source: Source, cfg: dict, batches: list[torch.Tensor],
                            device: str) -> tuple[int, str | None]:
    """Every decoder layer calibrated by ModelOpt on `batches` as quantize calibrates it, exported at the
    checkpoint's tp, compared (compare_layer); stops at the first difference. One layer in memory at a time."""
    from ..quantize.hf_model import calibration_dtype
    from ..quantize.layer_export import export_layer_trtllm
    from ..quantize.layerwise import calibrate_layers, capture_inputs
    from ..quantize.modelopt_run import prequant_scales

    ckpt = merged.ckpt
    decoder_type = get_arch(ckpt.model.architecture).modelopt_decoder_type
    dtype = calibration_dtype(device)
    sidecar = load_prequant_scales(ckpt.path)
    total = 0
    layers = calibrate_layers(source, cfg, capture_inputs(source, batches, device, dtype), device, dtype)
    for layer in layers:
        _, ranks = export_layer_trtllm(layer.shell, decoder_type, torch_dtype(ckpt.dtype), merged.tp)
        prequant = prequant_scales(layer.layer, f"model.layers.{layer.index}.")  # after the export, as quantize takes them
        n, mismatch = compare_layer(merged, layer.index, ranks, prequant, sidecar)
        total += n
        if mismatch is not None:
            layers.close()
            return total, mismatch
    return total, None
