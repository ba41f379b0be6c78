"""`quantize`: a checkpoint -> calibrated with ModelOpt on CNN/DailyMail -> a quantized TensorRT-LLM
(or unified Hugging Face) checkpoint, checked layer by layer against ModelOpt's fake-quant model.

Steps: validate everything cheap first (format, device, tp, group sizes, calibration articles);
present the source as a Hugging Face folder (`.nemo` and GGUF through `export --format hf`); load it
with transformers and calibrate (memory: the whole model, float32 on CPU); export with ModelOpt;
check the dequantized layers against the fake-quant model (teacher.py); write config.json from our
ModelConfig plus ModelOpt's quantization block (assemble.py) into a temporary folder; rename.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..archs import get_arch
from ..archs.config import ModelConfig, load_json
from ..checkpoints.quant_formats import KV_CACHE_DTYPES, QuantFormat, get_format
from ..checkpoints.quantized import PQS_SIDECAR, QUANT_CHECKPOINT_DTYPES, RankTensors, write_prequant_scales
from ..errors import ConfigError, MissingDependencyError, VerificationFailed
from ..export.hf_writer import write_hf_checkpoint
from ..export.run import peak_rss_bytes
from ..options import QuantizeOptions
from ..outputs import atomic_output_dir, check_output, write_marker
from ..sources import Source, TensorInfo, open_source, source_paths
from ..sources.checks import check_source
from ..sources.hf import HFSource
from ..tensors.dtypes import torch_dtype
from ..tensors.finite import require_finite_source
from ..tensors.mapping import Mapping
from .assemble import assemble_checkpoint
from .calib import calibration_batches, load_articles
from .teacher import FLIP_FRACTION, LayerCheck, check_conversion, failures

OUTPUT_FORMATS = ("trtllm", "hf")
DEVICES = ("auto", "cpu", "cuda")
REPORT = "trt_minitron_quantize.json"
CHECK_TOKENS = 128


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    qformat: str
    kv_cache_dtype: str | None
    seconds: float
    calibration_seconds: float
    export_seconds: float
    peak_rss_bytes: int
    weight_bytes_unquantized: int  # what `export --dtype <dtype>` writes for the same tp/pp
    weight_bytes: int  # tensor data in the quantized checkpoint
    conversion: list[LayerCheck]


def resolve_device(device: str, fmt: QuantFormat) -> str:
    """cpu or cuda; NVFP4 refused without CUDA (ModelOpt's NVFP4 fake-quant forward asserts CUDA tensors)."""
    if device not in DEVICES:
        raise ConfigError(f"unsupported --device {device!r}; choose one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise MissingDependencyError("--device cuda: torch sees no CUDA GPU")
    resolved = "cuda" if device == "auto" and has_cuda else ("cpu" if device == "auto" else device)
    if fmt.needs_cuda_forward and resolved != "cuda":
        raise MissingDependencyError(f"--qformat {fmt.qformat} needs a CUDA GPU: ModelOpt's {fmt.qformat} fake-quant "
                                     "forward (calibration and the conversion check) runs only on CUDA tensors")
    return resolved


def check_group_size(fmt: QuantFormat, cfg: ModelConfig, tp: int) -> None:
    """Grouped formats need every linear's per-rank input width to be a multiple of the group (ModelOpt's rule)."""
    g = fmt.group_size
    if not g:
        return
    widths = {"hidden_size": cfg.hidden_size, "num_attention_heads*head_dim": cfg.num_attention_heads * cfg.head_dim,
              "intermediate_size": cfg.intermediate_size}
    for name, width in widths.items():
        if width % (tp * g):
            fits = [s for s in fmt.group_sizes if all(w % (tp * s) == 0 for w in widths.values())]
            hint = f" (--group-size {fits[0]} fits)" if fits else ""
            raise ConfigError(f"--qformat {fmt.qformat} quantizes weights in groups of {g} input channels: "
                              f"{name}={width} split over tp={tp} is not a multiple of {g}{hint}")


def validate(opts: QuantizeOptions) -> tuple[QuantFormat, str]:
    """Every check that needs no model: the format, device, dtype, output, calibration settings."""
    fmt = get_format(opts.qformat)
    if opts.group_size is not None:
        if fmt.qformat not in ("int4_awq", "w4a8_awq"):
            raise ConfigError(f"--group-size applies to int4_awq and w4a8_awq, not {fmt.qformat}")
        fmt = get_format(opts.qformat, opts.group_size)
    if opts.kv_cache_dtype not in (None, *KV_CACHE_DTYPES):
        raise ConfigError(f"unsupported --kv-cache-dtype {opts.kv_cache_dtype!r}; choose {', '.join(KV_CACHE_DTYPES)}")
    if opts.format not in OUTPUT_FORMATS:
        raise ConfigError(f"unsupported --format {opts.format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if opts.dtype not in QUANT_CHECKPOINT_DTYPES:
        raise ConfigError(f"unsupported --dtype {opts.dtype!r} for a quantized checkpoint; choose "
                          f"{' or '.join(QUANT_CHECKPOINT_DTYPES)} (ModelOpt's exporter writes only these)")
    if opts.tp < 1 or opts.pp < 1:
        raise ConfigError(f"--tp {opts.tp} and --pp {opts.pp} must be >= 1")
    if opts.format == "hf" and opts.tp * opts.pp != 1:
        raise ConfigError("--format hf writes one unsharded checkpoint; drop --tp/--pp")
    opts.calib.validate()
    local = Path(opts.src)
    check_output(opts.output, overwrite=opts.overwrite, protect=[local] if local.exists() else [])
    return fmt, resolve_device(opts.device, fmt)


def run_quantize(opts: QuantizeOptions) -> QuantizeResult:
    """Entry point of `trt-minitron quantize`.

    Raises:
        TrtMinitronError: bad input (exit 2) or a failed conversion check (VerificationFailed, exit 1);
        nothing is left at --output or beside it.
    """
    from .modelopt_run import require_modelopt

    fmt, device = validate(opts)
    require_modelopt()
    start = time.perf_counter()
    output = Path(opts.output)
    local = Path(opts.src)
    protect = [local] if local.exists() else []
    source = open_source(opts.src)
    work = output.parent / f".{output.name}.work-{os.getpid()}"  # scratch: the HF copy, ModelOpt's own export
    try:
        mapping = Mapping(opts.tp, opts.pp)
        arch = get_arch(source.config.architecture)
        arch.validate(source.config, mapping)
        check_source(arch, source)  # the same check as export's: layer count, every tensor, every shape
        if isinstance(source, HFSource):  # transformers loads it as it is; other sources are checked as_hf_folder
            require_finite_source(source)
        check_group_size(fmt, source.config, opts.tp)
        articles = load_articles(opts.calib)
        with atomic_output_dir(output, overwrite=opts.overwrite, protect=protect + source_paths(source)) as tmp:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            source = as_hf_folder(source, work / "hf")
            result = _quantize(opts, fmt, device, source, articles, work, tmp, start)
            write_marker(tmp, format=f"quantized {opts.format}", source=str(opts.src), qformat=fmt.qformat)
        _print_closing(result, opts)
        return result
    finally:
        source.close()
        shutil.rmtree(work, ignore_errors=True)


def as_hf_folder(source: Source, folder: Path) -> HFSource:
    """The source as a Hugging Face folder transformers can load: itself, or written there in its stored dtype."""
    if isinstance(source, HFSource):
        return source
    folder.mkdir()
    stored = source.tensors()["model.embed_tokens.weight"].dtype
    write_hf_checkpoint(source, folder, stored)
    source.close()  # a GGUF source holds the whole dequantized model
    return HFSource(folder)


def _quantize(opts: QuantizeOptions, fmt: QuantFormat, device: str, source: HFSource, articles: list[str],
              work: Path, tmp: Path, start: float) -> QuantizeResult:
    from transformers import AutoTokenizer

    from .modelopt_run import calibrate, export_hf, export_trtllm, load_model, quant_config, round_prequant_scales

    cfg, dtype = source.config, torch_dtype(opts.dtype)
    tokenizer = AutoTokenizer.from_pretrained(source.folder)
    batches = calibration_batches(tokenizer, articles, opts.calib.max_len, opts.calib.batch_size)
    model = load_model(source.folder, device)
    t0 = time.perf_counter()
    with _progress() as progress:
        bar = progress.add_task("calibrate", total=len(batches))
        done = [0]

        def advance() -> None:
            done[0] += 1
            passes, n = divmod(done[0] - 1, len(batches))  # AWQ runs the loop more than once
            progress.update(bar, completed=n + 1, description=f"calibrate (pass {passes + 1})")

        calibrate(model, quant_config(fmt, opts.kv_cache_dtype), batches, on_batch=advance)
        t1 = time.perf_counter()
        progress.update(bar, description="export (ModelOpt)", completed=0, total=None)
        if opts.format == "hf":
            export_hf(model, dtype, tmp)
            t2 = time.perf_counter()
            del model
            before = sum(TensorInfo(s, dtype).nbytes for s in get_arch(cfg.architecture).hf_tensors(cfg).values())
            after = _write_hf_config(tmp, cfg, opts.dtype)
            checks: list[LayerCheck] = []
        else:
            export_trtllm(model, cfg.architecture, dtype, opts.tp, opts.pp, work / "modelopt")
            t2 = time.perf_counter()
            progress.update(bar, description="conversion check")
            save_prequant_scales(model, tmp / PQS_SIDECAR)
            round_prequant_scales(model, dtype)
            model.float()  # a bfloat16 fake-quant model (CUDA) would round its outputs; the checkpoint does not
            checks = check_conversion(model, work / "modelopt", cfg, batches[0][:1, :CHECK_TOKENS])
            del model
            gc.collect()
            _judge(checks)
            bar = progress.add_task("write", total=None)
            before, after = assemble_checkpoint(source, work / "modelopt", tmp, Mapping(opts.tp, opts.pp), opts.dtype,
                                                on_bytes=lambda done, total: progress.update(bar, completed=done,
                                                                                           total=total))
        source.write_tokenizer(tmp)
    seconds = time.perf_counter() - start
    result = QuantizeResult(Path(opts.output), fmt.qformat, opts.kv_cache_dtype, seconds, t1 - t0, t2 - t1,
                            peak_rss_bytes(), before, after, checks)
    _write_report(tmp / REPORT, opts, fmt, device, len(articles), result)
    return result


def save_prequant_scales(model: torch.nn.Module, path: Path) -> int:
    """The post-export model's float32 pre-quant scales (what its weights were divided by) as a small safetensors
    sidecar, by Hugging Face module name: verify rebuilds ModelOpt's weights from the source with them, since the
    checkpoint keeps them rounded to its dtype. Returns how many (0 for formats without them: an empty file)."""
    return write_prequant_scales(path, {
        name: q._pre_quant_scale for name, m in model.named_modules()
        if (q := getattr(m, "input_quantizer", None)) is not None and getattr(q, "_pre_quant_scale", None) is not None})


def _judge(checks: list[LayerCheck]) -> None:
    bad = failures(checks)
    if bad:
        b = bad[0]
        raise VerificationFailed(f"conversion check failed in {len(bad)} layer(s), first layer {b.layer} {b.name}: "
                                 f"{b.weight_mismatch:.1%} of weight and {b.input_mismatch:.1%} of input elements "
                                 f"differ from ModelOpt's fake quantization (allowed {FLIP_FRACTION:.1%})")


def summary(checks: list[LayerCheck]) -> dict:
    """Worst values over all layers."""
    return {"layers": len(checks), "weight_mismatch": max(c.weight_mismatch for c in checks),
            "input_mismatch": max(c.input_mismatch for c in checks), "output_rel": max(c.output_rel for c in checks)}


def _write_hf_config(tmp: Path, cfg: ModelConfig, dtype: str) -> int:
    """ModelOpt's config.json replaced by ours (rope fields from our ModelConfig) plus its quantization_config,
    and its unquantized tensors cast to `dtype`; returns the tensor bytes written."""
    theirs = load_json(tmp / "config.json")
    ours = {**cfg.to_hf(), "torch_dtype": dtype, "quantization_config": theirs.get("quantization_config")}
    (tmp / "config.json").write_text(json.dumps(ours, indent=2) + "\n")
    return sum(_cast_unquantized(f, torch_dtype(dtype)) for f in sorted(tmp.glob("*.safetensors")))


def _cast_unquantized(path: Path, dtype: torch.dtype) -> int:
    """Rewrite one safetensors file with float32 weights, biases and pre-quant scales in `dtype`.

    ModelOpt's unified exporter leaves unquantized tensors in the calibration dtype (float32 on CPU);
    quantization scales (weight_scale, input_scale, ...) stay float32 as it writes them."""
    from ..tensors.stwriter import write_safetensors

    src = RankTensors(path)
    entries = []
    for name in src:
        info = src.info(name)
        if info.dtype == torch.float32 and name.endswith((".weight", ".bias", "pre_quant_scale")):
            entries.append((name, TensorInfo(info.shape, dtype), lambda n=name: src[n].to(dtype)))
        else:
            entries.append((name, info, lambda n=name: src[n]))
    tmp = path.with_suffix(".cast")
    write_safetensors(tmp, entries)
    tmp.replace(path)
    return sum(i.nbytes for _, i, _ in entries)


def _write_report(path: Path, opts: QuantizeOptions, fmt: QuantFormat, device: str, articles: int,
                  result: QuantizeResult) -> None:
    from importlib.metadata import version

    report = {
        "qformat": fmt.qformat, "quant_algo": fmt.quant_algo, "group_size": fmt.group_size,
        "kv_cache_dtype": opts.kv_cache_dtype,
        "source": opts.src, "format": opts.format, "dtype": opts.dtype, "tp": opts.tp, "pp": opts.pp,
        "device": device, "calibration": {**asdict(opts.calib), "articles_used": articles},
        "versions": {p: version(p) for p in ("nvidia-modelopt", "transformers", "torch")},
        "seconds": {"total": result.seconds, "calibration": result.calibration_seconds,
                    "export": result.export_seconds},
        "peak_rss_bytes": result.peak_rss_bytes,
        "weight_bytes_unquantized": result.weight_bytes_unquantized, "weight_bytes": result.weight_bytes,
        "conversion_check": None if not result.conversion else {
            "what": "per layer, teacher-forced against ModelOpt's fake-quant model: fraction of dequantized weight and "
                    "GEMM-input elements that differ (allowed: rounding-tie flips), and the output's max relative "
                    "difference on the same input (informational)",
            "allowed_mismatch": FLIP_FRACTION, "worst": summary(result.conversion),
            "layers": [asdict(c) for c in result.conversion]},
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def _print_closing(r: QuantizeResult, opts: QuantizeOptions) -> None:
    kv = " + FP8 KV cache" if r.kv_cache_dtype else ""
    w = summary(r.conversion) if r.conversion else None
    check = (f", {w['layers']} layers match ModelOpt (mismatching elements: weights {w['weight_mismatch']:.1e}, "
             f"inputs {w['input_mismatch']:.1e})") if w else ""
    print(f"quantized {r.qformat}{kv} ({opts.format}, tp {opts.tp}, pp {opts.pp}): weights "
          f"{r.weight_bytes_unquantized / 1e9:.3f} GB {opts.dtype} -> {r.weight_bytes / 1e9:.3f} GB "
          f"({r.weight_bytes / max(r.weight_bytes_unquantized, 1):.2f}x) in {r.seconds:.1f} s (calibration "
          f"{r.calibration_seconds:.1f} s, export {r.export_seconds:.1f} s){check}, peak RSS "
          f"{r.peak_rss_bytes / 2**30:.2f} GiB -> {opts.output}", file=sys.stderr)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, disable=not sys.stderr.isatty(), console=None)
