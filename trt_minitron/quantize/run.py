"""`quantize`: a checkpoint -> calibrated with ModelOpt on CNN/DailyMail -> a quantized TensorRT-LLM
(or unified Hugging Face) checkpoint, checked layer by layer against ModelOpt's fake-quant model.

Steps: validate everything cheap first (format, device, tp, group sizes, calibration articles, tokenizer);
tokenize the calibration articles; then, by default, calibrate, export and check one decoder layer at a
time, reading each from the source when its turn comes (by_layer.py; memory independent of depth,
resumable with --resume). `--whole-model` keeps the earlier path for comparison: the whole model loaded at
once (float32 on CPU), calibrated, exported by ModelOpt, checked, assembled (assemble.py). transformers gets
its config from our ModelConfig (hf_model.py), never from the source's config.json. Everything is written
into a temporary folder that is renamed when complete.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from ..archs import get_arch
from ..archs.config import ModelConfig, load_json
from ..checkpoints.quant_formats import KV_CACHE_DTYPES, QuantFormat, get_format
from ..checkpoints.quantized import PQS_SIDECAR, QUANT_CHECKPOINT_DTYPES, RankTensors, write_prequant_scales
from ..errors import ConfigError, Interrupted, MissingDependencyError, TrtMinitronError, one_line
from ..export.run import peak_rss_bytes
from ..options import QuantizeOptions
from ..outputs import TOKENIZER_CORE, TOKENIZER_FILES, atomic_output_dir, check_output, write_marker
from ..sources import Source, TensorInfo, open_source, source_paths
from ..sources.checks import check_source
from ..tensors.dtypes import torch_dtype
from ..tensors.finite import require_finite_source
from ..tensors.mapping import Mapping
from .assemble import assemble_checkpoint
from .calib import calibration_plan, dataset_record, load_articles, tokens_digest
from .layer_store import LayerStore, resume_folder
from .teacher import CHECK_TOKENS, FLIP_FRACTION, LayerCheck, check_conversion, judge

OUTPUT_FORMATS = ("trtllm", "hf")
DEVICES = ("auto", "cpu", "cuda")
REPORT = "trt_minitron_quantize.json"


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
    layerwise: bool = True
    resumed_layers: int = 0  # layers an earlier interrupted --resume run had finished


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
    if opts.resume and opts.whole_model:
        raise ConfigError("--resume continues a layer-by-layer run; --whole-model calibrates everything at once")
    if opts.tokenizer is not None and not Path(opts.tokenizer).is_dir():
        raise ConfigError(f"--tokenizer {opts.tokenizer}: no such folder (it takes a folder holding tokenizer files, "
                          "e.g. tokenizer.json or tokenizer.model)")
    local = Path(opts.src)
    check_output(opts.output, overwrite=opts.overwrite, protect=[local] if local.exists() else [])
    return fmt, resolve_device(opts.device, fmt)


def run_quantize(opts: QuantizeOptions) -> QuantizeResult:
    """Entry point of `trt-minitron quantize`.

    Raises:
        TrtMinitronError: bad input (exit 2) or a failed conversion check (VerificationFailed, exit 1);
        nothing is left at --output or beside it, except the finished layers of a --resume run.
    """
    from .modelopt_run import require_modelopt

    fmt, device = validate(opts)
    require_modelopt()
    start = time.perf_counter()
    output = Path(opts.output).absolute()
    local = Path(opts.src)
    protect = [local] if local.exists() else []
    source = open_source(opts.src)
    work = output.parent / f".{output.name}.work-{os.getpid()}"  # scratch: tokenizer files, ModelOpt's export
    store, finished, told = None, False, False
    try:
        mapping = Mapping(opts.tp, opts.pp)
        arch = get_arch(source.config.architecture)
        arch.validate(source.config, mapping)
        check_source(arch, source)  # the same check as export's: layer count, every tensor, every shape
        require_finite_source(source)  # before calibrating on it (safetensors: exponent bits in place; others row blocks)
        check_group_size(fmt, source.config, opts.tp)
        articles = load_articles(opts.calib)
        with atomic_output_dir(output, overwrite=opts.overwrite, protect=protect + source_paths(source)) as tmp:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            tokenizer, tokenizer_dir = calibration_tokenizer(source, opts.tokenizer, work)
            batches, rows = calibration_plan(tokenizer, articles, opts.calib.max_len, opts.calib.batch_size)
            check_token_ids(batches, source.config.vocab_size, tokenizer_dir)
            if opts.whole_model:
                result = _quantize(opts, fmt, device, source, batches, work, tmp, start)
            else:
                _note_resumable(output, opts)
                from .by_layer import quantize_by_layer, run_identity

                identity = run_identity(opts, fmt, device, source, tokens_digest(batches))
                store = LayerStore.open(resume_folder(output) if opts.resume else work / "layers", identity,
                                        source.config.num_hidden_layers, keep=opts.resume)
                done = quantize_by_layer(opts, fmt, device, source, batches, store, tmp)
                result = QuantizeResult(output, fmt.qformat, opts.kv_cache_dtype, time.perf_counter() - start,
                                        done.calibration_seconds, done.export_seconds, peak_rss_bytes(),
                                        done.weight_bytes_unquantized, done.weight_bytes, done.checks,
                                        resumed_layers=done.resumed_layers)
            _write_tokenizer(source, opts.tokenizer, tmp)
            _write_report(tmp / REPORT, opts, fmt, device, articles, rows, batches, result)
            write_marker(tmp, format=f"quantized {opts.format}", source=str(opts.src), qformat=fmt.qformat)
        finished = True
        _print_closing(result, opts)
        return result
    except (Interrupted, TrtMinitronError) as e:
        if store is not None and store.keep and store.done:  # store.close keeps them: say so in the one line
            told = True
            e.args = (f"{e}{',' if isinstance(e, Interrupted) else ';'} except the {store.done} finished layer(s) in "
                      f"{store.folder}: rerun with --resume to continue",)
        raise
    finally:
        if store is not None and store.close(finished) and not told:
            print(f"trt-minitron: note: {store.done} finished layer(s) kept in {store.folder}; rerun the same command "
                  "with --resume to continue", file=sys.stderr)
        source.close()
        shutil.rmtree(work, ignore_errors=True)


def _note_resumable(output: Path, opts: QuantizeOptions) -> None:
    """A run without --resume leaves an earlier --resume run's layers alone, and says so."""
    folder = resume_folder(output)
    if not opts.resume and folder.is_dir():
        print(f"trt-minitron: note: {folder} holds layers of an interrupted --resume run; this run starts afresh "
              "without touching them (pass --resume to continue it instead)", file=sys.stderr)


def calibration_tokenizer(source: Source, given: Path | None, work: Path):
    """(transformers tokenizer for the calibration text, the folder it was loaded from): --tokenizer's, or the
    source's own files written into `work` beside our config.json (model_type from our registry)."""
    from transformers import AutoTokenizer

    if given is None:
        folder = work / "tokenizer"
        folder.mkdir()
        written = source.write_tokenizer(folder)
        if not set(written) & set(TOKENIZER_CORE):
            raise ConfigError(f"{source.description} carries no tokenizer, and calibration needs text: pass "
                              "--tokenizer DIR (a folder with the model's tokenizer.json or tokenizer.model)")
        (folder / "config.json").write_text(json.dumps(source.config.to_hf()) + "\n")
        what = f"the tokenizer of {source.description}"
    else:
        folder, what = Path(given), f"--tokenizer {given}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # transformers raises ValueError, OSError, KeyError, ... for unusable tokenizer files
        why = one_line(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 200)
        hint = "" if given else "; pass --tokenizer DIR with a working one"
        raise ConfigError(f"cannot load {what} ({why}){hint}") from None
    return tokenizer, folder


def check_token_ids(batches: list[torch.Tensor], vocab_size: int, where: Path) -> None:
    """Every calibration token must index the model's embedding (a wrong --tokenizer would not)."""
    top = max(int(b.max()) for b in batches)
    if top >= vocab_size:
        raise ConfigError(f"the tokenizer in {where} produced token id {top}, but the model has only {vocab_size} "
                          "embedding rows: is it this model's tokenizer?")


def _write_tokenizer(source: Source, given: Path | None, tmp: Path) -> None:
    """The output's tokenizer: --tokenizer's files if given, else the source's own."""
    if given is None:
        source.write_tokenizer(tmp)
        return
    for name in TOKENIZER_FILES:
        if (Path(given) / name).is_file():
            shutil.copyfile(Path(given) / name, tmp / name)


def _quantize(opts: QuantizeOptions, fmt: QuantFormat, device: str, source: Source, batches: list[torch.Tensor],
              work: Path, tmp: Path, start: float) -> QuantizeResult:
    """--whole-model: the whole model in memory, calibrated and exported by ModelOpt at once."""
    from .hf_model import load_whole_model
    from .modelopt_run import calibrate, export_hf, export_trtllm, quant_config, round_prequant_scales

    cfg, dtype = source.config, torch_dtype(opts.dtype)
    model = load_whole_model(source, device)
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
            judge(checks)
            bar = progress.add_task("write", total=None)
            before, after = assemble_checkpoint(source, work / "modelopt", tmp, Mapping(opts.tp, opts.pp), opts.dtype,
                                                on_bytes=lambda done, total: progress.update(bar, completed=done,
                                                                                           total=total))
    seconds = time.perf_counter() - start
    return QuantizeResult(Path(opts.output), fmt.qformat, opts.kv_cache_dtype, seconds, t1 - t0, t2 - t1,
                          peak_rss_bytes(), before, after, checks, layerwise=False)


def save_prequant_scales(model: torch.nn.Module, path: Path) -> int:
    """The post-export model's float32 pre-quant scales (what its weights were divided by) as a small safetensors
    sidecar, by Hugging Face module name: verify rebuilds ModelOpt's weights from the source with them, since the
    checkpoint keeps them rounded to its dtype. Returns how many (0 for formats without them: an empty file)."""
    from .modelopt_run import prequant_scales

    return write_prequant_scales(path, prequant_scales(model))


def summary(checks: list[LayerCheck]) -> dict:
    """Worst values over all layers."""
    return {"layers": len({c.layer for c in checks}), "checks": len(checks),
            "weight_mismatch": max(c.weight_mismatch for c in checks),
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


def _write_report(path: Path, opts: QuantizeOptions, fmt: QuantFormat, device: str, articles: list[str],
                  rows: list[list[int]], batches: list[torch.Tensor], result: QuantizeResult) -> None:
    from .by_layer import versions
    from .hf_model import calibration_dtype
    from .modelopt_run import quant_config

    algorithm = quant_config(fmt, opts.kv_cache_dtype)
    report = {
        "qformat": fmt.qformat, "quant_algo": fmt.quant_algo, "group_size": fmt.group_size,
        "kv_cache_dtype": opts.kv_cache_dtype,
        "source": opts.src, "format": opts.format, "dtype": opts.dtype, "tp": opts.tp, "pp": opts.pp,
        "device": device,
        # What the calibration used, enough to run it again (verify's recomputation, issue 20).
        "calibration": {
            **asdict(opts.calib), "articles_used": len(articles), "dataset": dataset_record(opts.calib, articles),
            "tokenizer": str(Path(opts.tokenizer).resolve()) if opts.tokenizer else "the source's",
            "order": "articles tokenized (truncated to max_len), sorted by token count, longest first (ties in "
                     "dataset order), grouped by batch_size, each batch cut to its shortest article",
            "sample_ids": rows, "batch_shapes": [list(b.shape) for b in batches], "seed": None,
            "tokens_sha256": tokens_digest(batches),
            "device": device, "dtype": str(calibration_dtype(device)).removeprefix("torch."),
            "mode": ("layer by layer: each decoder layer calibrated alone on the float activations entering it "
                     "(ModelOpt's layerwise scheme with get_qdq_activations_from_prev_layer=False)"
                     if result.layerwise else "whole model: one ModelOpt calibration over the whole model"),
            "modelopt_algorithm": algorithm.get("algorithm"), "modelopt_quant_cfg": algorithm.get("quant_cfg"),
        },
        "versions": {**versions(), "trt-minitron": version("trt-minitron")},
        "seconds": {"total": result.seconds, "calibration": result.calibration_seconds,
                    "export": result.export_seconds},
        "resumed_layers": result.resumed_layers,
        "peak_rss_bytes": result.peak_rss_bytes,
        "weight_bytes_unquantized": result.weight_bytes_unquantized, "weight_bytes": result.weight_bytes,
        "conversion_check": None if not result.conversion else {
            "what": "per layer, teacher-forced against ModelOpt's fake-quant model: fraction of dequantized weight and "
                    "GEMM-input elements that differ (allowed: rounding-tie flips), and the output's max relative "
                    "difference on the same input (informational)",
            "allowed_mismatch": FLIP_FRACTION, "worst": summary(result.conversion),
            "layers": [asdict(c) for c in result.conversion]},
    }
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _print_closing(r: QuantizeResult, opts: QuantizeOptions) -> None:
    kv = " + FP8 KV cache" if r.kv_cache_dtype else ""
    w = summary(r.conversion) if r.conversion else None
    check = (f", {w['layers']} layers match ModelOpt ({w['checks']} linears and KV caches; mismatching elements: "
             f"weights {w['weight_mismatch']:.1e}, inputs {w['input_mismatch']:.1e})") if w else ""
    how = "layer by layer" + (f", {r.resumed_layers} layers resumed" if r.resumed_layers else "") if r.layerwise \
        else "whole model"
    print(f"quantized {r.qformat}{kv} ({opts.format}, tp {opts.tp}, pp {opts.pp}, {how}): weights "
          f"{r.weight_bytes_unquantized / 1e9:.3f} GB {opts.dtype} -> {r.weight_bytes / 1e9:.3f} GB "
          f"({r.weight_bytes / max(r.weight_bytes_unquantized, 1):.2f}x) in {r.seconds:.1f} s (calibration "
          f"{r.calibration_seconds:.1f} s, export {r.export_seconds:.1f} s){check}, peak RSS "
          f"{r.peak_rss_bytes / 2**30:.2f} GiB -> {opts.output}", file=sys.stderr)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, disable=not sys.stderr.isatty(), console=None)
