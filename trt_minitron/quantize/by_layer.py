"""`quantize` layer by layer (the default): calibrate, export and check one decoder layer at a time.

For each layer in turn: its weights are read from the source into a one-layer shell (hf_model.py), ModelOpt
calibrates it on the activations entering it (layerwise.py), ModelOpt's exporter turns it into checkpoint
tensors (layer_export.py), the conversion check compares them with ModelOpt's fake-quant layer (teacher.py),
and they are committed to the layer store (layer_store.py) before the next layer is read. Then the output is
assembled from the store: our config.json and the source's embedding, norms and lm_head around ModelOpt's
layers (assemble.py for TensorRT-LLM, hf_checkpoint.py for the unified Hugging Face format).

Peak memory: one layer in the calibration dtype (float32 on CPU) and its exported copy, plus the calibration
activations twice (batch tokens x hidden x 4 bytes each), plus one block of embedding rows; independent of
the number of layers (benchmarks/quantize_memory.py measures it).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..archs import get_arch
from ..checkpoints.quant_formats import QuantFormat
from ..checkpoints.quantized import PQS_SIDECAR, PlainRankFile, QuantSpec, write_prequant_scales
from ..errors import CheckpointError
from ..options import QuantizeOptions
from ..sources import source_paths
from ..sources.base import Source, TensorInfo
from ..tensors.dtypes import torch_dtype
from ..tensors.mapping import Mapping as TPMapping
from .hf_model import calibration_dtype
from .layer_store import LayerStore
from .layerwise import CalibratedLayer, LayerInput, calibrate_layers, capture_inputs
from .progress import LayerProgress
from .teacher import CHECK_TOKENS, LayerCheck, check_layer, judge

PQS = "pqs/"  # layer-file prefix of the float32 pre-quant scales (quantize's sidecar)
HF = "hf/"  # layer-file prefix of a unified HF layer's tensors


@dataclass(frozen=True)
class ByLayerResult:
    weight_bytes_unquantized: int
    weight_bytes: int
    checks: list[LayerCheck]
    calibration_seconds: float
    export_seconds: float
    resumed_layers: int  # finished layers taken over from an earlier --resume run


def versions() -> dict[str, str]:
    return {p: version(p) for p in ("nvidia-modelopt", "transformers", "torch")}


def source_fingerprint(source: Source) -> dict:
    """What identifies the source for --resume: our reading of its config, and its files' names, sizes and
    modification times (a digest; contents are not hashed, which would read the whole checkpoint)."""
    files = []
    for p in source_paths(source):
        for f in [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()):
            st = f.stat()
            files.append([str(f), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return {"description": source.description, "config": asdict(source.config), "files_sha256": digest}


def run_identity(opts: QuantizeOptions, fmt: QuantFormat, device: str, source: Source, tokens_sha256: str) -> dict:
    """Everything a --resume run must share with the run it continues."""
    options = {"qformat": fmt.qformat, "group_size": fmt.group_size, "kv_cache_dtype": opts.kv_cache_dtype,
               "tp": opts.tp, "pp": opts.pp, "format": opts.format, "dtype": opts.dtype, "device": device,
               "calibration": asdict(opts.calib)}
    return {"source": source_fingerprint(source), "options": options, "calibration_tokens_sha256": tokens_sha256,
            "versions": versions()}


class StoredTensors(Mapping[str, torch.Tensor]):
    """Tensors of the store's layer files whose names start with `prefix` (stripped), read when asked for with
    plain reads (a memory map would keep every page read resident): RankTensors' interface, over every layer."""

    def __init__(self, files: list[Path], prefix: str):
        self._files = [PlainRankFile(f) for f in files]
        self._where = {n[len(prefix):]: (h, n) for h in self._files for n in h.infos if n.startswith(prefix)}

    def info(self, name: str) -> TensorInfo:
        h, n = self._where[name]
        return h.infos[n]

    def __getitem__(self, name: str) -> torch.Tensor:
        h, n = self._where[name]
        return h.read(n)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _layer_ranks(mapping: TPMapping, layer: int, num_layers: int) -> tuple[list[int], int]:
    """The ranks holding `layer` and its index within their pipeline stage."""
    ranks = [r for r in range(mapping.world_size) if layer in mapping.layers(r, num_layers)]
    return ranks, layer - mapping.layers(ranks[0], num_layers).start


def _trtllm_layer(layer: CalibratedLayer, opts: QuantizeOptions, source: Source) -> tuple[dict, dict]:
    """Export one layer to TensorRT-LLM tensors, check them against ModelOpt's fake-quant layer, and return
    (tensors for the store, meta for the manifest)."""
    from .layer_export import export_layer_trtllm
    from .modelopt_run import prequant_scales, round_prequant_scales

    cfg, mapping, dtype = source.config, TPMapping(opts.tp, opts.pp), torch_dtype(opts.dtype)
    quantization, per_tp = export_layer_trtllm(layer.shell, get_arch(cfg.architecture).modelopt_decoder_type, dtype,
                                               opts.tp)
    scales = prequant_scales(layer.layer, f"model.layers.{layer.index}.")  # after the export, before rounding
    round_prequant_scales(layer.shell, dtype)
    layer.shell.float()  # see quantize._quantize: the checkpoint does not round to bfloat16
    spec = QuantSpec.from_config({"quantization": quantization, "dtype": opts.dtype}, "ModelOpt's export")
    stage, local = _layer_ranks(mapping, layer.index, cfg.num_hidden_layers)
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(mapping.world_size)]
    for r in stage:
        ranks[r] = {f"transformer.layers.{local}.{n}": t for n, t in per_tp[mapping.tp_rank(r)].items()}
    probe = layer.probes[0]
    checks = check_layer(layer.layer, layer.index, probe.hidden, probe.kwargs, cfg, spec, mapping, ranks)
    judge(checks)
    tensors = {f"rank{r}/{n}": t for r in stage for n, t in ranks[r].items()}
    tensors.update({PQS + n: t for n, t in scales.items()})
    return tensors, {"quantization": quantization, "checks": [asdict(c) for c in checks]}


def _hf_layer(layer: CalibratedLayer, opts: QuantizeOptions, store: LayerStore) -> tuple[dict, dict]:
    from .layer_export import export_layer_hf

    hf_quant_config, quantization_config, tensors = export_layer_hf(layer.shell, torch_dtype(opts.dtype),
                                                                    store.scratch())
    named = {f"{HF}model.layers.{layer.index}.{n}": t for n, t in tensors.items()}
    return named, {"hf_quant_config": hf_quant_config, "quantization_config": quantization_config, "checks": []}


def _same(store: LayerStore, key: str) -> dict:
    """A manifest field every layer must agree on (ModelOpt's quantization block)."""
    values = [m[key] for m in store.layers]
    if any(v != values[0] for v in values):
        bad = next(i for i, v in enumerate(values) if v != values[0])
        raise CheckpointError(f"ModelOpt exported layer {bad} with {key} {values[bad]}, layer 0 with {values[0]}")
    return values[0]


def quantize_by_layer(opts: QuantizeOptions, fmt: QuantFormat, device: str, source: Source,
                      batches: list[torch.Tensor], store: LayerStore, tmp: Path) -> ByLayerResult:
    """Calibrate and export every layer not yet in `store`, then write the checkpoint into `tmp`."""
    from .assemble import write_checkpoint
    from .hf_checkpoint import write_hf_quantized
    from .modelopt_run import quant_config

    cfg = source.config
    trtllm = opts.format == "trtllm"
    cal_dtype = calibration_dtype(device)
    resumed = store.done
    captured: list[LayerInput] = []
    if resumed < cfg.num_hidden_layers:
        probe_ids = [batches[0][:1, :CHECK_TOKENS]] if trtllm else []
        captured = capture_inputs(source, [*batches, *probe_ids], device, cal_dtype)
        if resumed:  # the kwargs are recomputed (cheap); the hidden states are the saved ones
            captured = [LayerInput(h.to(device), x.kwargs) for h, x in zip(store.hidden(), captured, strict=True)]
    inputs, probes = captured[:len(batches)], captured[len(batches):]

    progress = LayerProgress(cfg.num_hidden_layers, resumed, len(batches))
    calibration_s = export_s = 0.0
    try:
        started = time.perf_counter()  # of the layer being read and calibrated
        for layer in calibrate_layers(source, quant_config(fmt, opts.kv_cache_dtype), inputs, device, cal_dtype,
                                      start=resumed, probes=probes, on_layer=progress.start_layer,
                                      on_batch=progress.batch):
            calibrated = time.perf_counter()
            calibration_s += calibrated - started
            progress.phase("export and check", layer.index)
            tensors, meta = _trtllm_layer(layer, opts, source) if trtllm else _hf_layer(layer, opts, store)
            store.save_layer(layer.index, tensors, meta, layer.next_hidden)
            del tensors
            progress.finish_layer(layer.index)
            started = time.perf_counter()
            export_s += started - calibrated
        progress.phase("writing the checkpoint")
        t1 = time.perf_counter()
        files = [f for _, f in store.layer_files()]
        if trtllm:
            mapping = TPMapping(opts.tp, opts.pp)
            ranks = [StoredTensors(files, f"rank{r}/") for r in range(mapping.world_size)]
            before, after = write_checkpoint(source, _same(store, "quantization"), ranks, tmp, mapping, opts.dtype,
                                             "ModelOpt's per-layer export")
            scales = StoredTensors(files, PQS)
            write_prequant_scales(tmp / PQS_SIDECAR, {n: scales[n] for n in scales})
        else:
            stored = [StoredTensors([f], HF) for f in files]
            before, after = write_hf_quantized(source, [lambda s=s: {n: s[n] for n in s} for s in stored],
                                               [{n: s.info(n) for n in s} for s in stored],
                                               _same(store, "quantization_config"), _same(store, "hf_quant_config"),
                                               tmp, torch_dtype(opts.dtype))
        export_s += time.perf_counter() - t1
    finally:
        progress.close()
    checks = [LayerCheck(**c) for meta in store.layers for c in meta["checks"]]
    return ByLayerResult(before, after, checks, calibration_s, export_s, resumed)
