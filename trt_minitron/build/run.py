"""`trt-minitron build`: a validated TensorRT-LLM checkpoint -> engines (checkpoint dtype), in-process, one rank per worker.

Per rank, the TensorRT-LLM Python API along the path `trtllm-build` takes:
    PretrainedConfig.from_json_file -> set_rank -> MODEL_MAP[arch].from_checkpoint
    -> tensorrt_llm.builder.build(model, BuildConfig) -> Engine.save
The calls live in api.py, each noted there with the TensorRT-LLM source (file, commit) it was checked
against: the pydantic BuildConfig of the 1.2 line (PR #8330) is built with its constructor, the dataclass of
0.12-1.1 with from_dict; which one is detected, not guessed. Plugin dtypes: "auto" (TensorRT-LLM resolves it to
the checkpoint dtype: PluginConfig docstring and __getattribute__, plugin/plugin.py @c20322ffd3dc) or an
explicit dtype that must equal the checkpoint's, so a float32 checkpoint builds with float32 plugins.
`tensorrt_llm` is imported only inside functions that need it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from .. import __version__, outputs
from ..archs import get_arch
from ..checkpoints.trtllm import TrtCheckpoint, check_rank_files, rank_file_indices, read_checkpoint
from ..errors import ConfigError, MissingDependencyError
from ..options import FP8_GEMM, BuildOptions
from ..tensors.stheader import read_header
from ..trtllm import install as trtllm_install
from . import api as build_api
from .plan import DEFAULT_GPU_MEMORY, GIB, MemoryPlan, PlanRequest, make_plan

# quant_algo values whose builds keep FP8 context FMHA (builder.build(), file id 205252225).
FP8_FMHA_ALGOS = ("FP8", "W4A8_AWQ")
GROUPWISE_ALGOS = ("W4A16_AWQ", "W4A8_AWQ")
MANIFEST = outputs.ENGINE_MANIFEST
DOCKER_HINT = ("docker build -f docker/Dockerfile --target build -t trt-minitron:build . && "
               "docker run --gpus all ... trt-minitron:build build ...")


def build_settings(opts: BuildOptions, dtype: str, quant=None) -> dict:
    """The BuildConfig fields trt-minitron sets: every size explicit (older from_dict pops them without
    defaults), paged KV cache, packed input and context FMHA on; plugin dtypes "auto" or the checkpoint dtype;
    for a quantized checkpoint (`quant`: its QuantSpec) the plugin settings of `quant_plugin_settings`."""
    algo = None if quant is None else quant.quant_algo
    if opts.gemm_plugin == FP8_GEMM and algo != "FP8":
        raise ConfigError(f"--gemm-plugin fp8 needs an FP8 checkpoint (quant_algo FP8); this one's is {algo}")
    for name in ("gpt_attention_plugin", "gemm_plugin"):
        value = getattr(opts, name)
        # An explicit plugin dtype is used as given; "auto" is TensorRT-LLM's way to say "the model dtype".
        if value not in ("auto", "disable", FP8_GEMM) and value != dtype:
            raise ConfigError(f"--{name.replace('_', '-')} {value} does not match the checkpoint dtype {dtype}; "
                              f"use {dtype} or auto")
    plugin = lambda v: None if v == "disable" else v  # None = plugin off, in 0.12 and 1.x
    return {
        "max_input_len": opts.max_input_len,
        "max_seq_len": opts.max_seq_len,
        "max_batch_size": opts.max_batch_size,
        "max_beam_width": opts.max_beam_width,
        "max_num_tokens": opts.max_num_tokens,
        "opt_num_tokens": None,
        "kv_cache_type": "PAGED",  # C++ enum name for from_dict (0.13-1.1); the 1.2 KVCacheType matches it too
        "plugin_config": {
            "gpt_attention_plugin": plugin(opts.gpt_attention_plugin),
            "gemm_plugin": plugin(opts.gemm_plugin),
            "context_fmha": True,
            "paged_kv_cache": True,
            "remove_input_padding": True,
            **quant_plugin_settings(quant),
        },
    }


def quant_plugin_settings(quant) -> dict:
    """PluginConfig fields a quantized checkpoint gets, stated here rather than left to TensorRT-LLM's silent
    adjustments, so the manifest shows what the engine was built with (sources: api.py):
      - use_fused_mlp off unless quant_algo is FP8: trtllm-build turns it off for every other algorithm
        (commands/build.py @008b2b8d, "avoid ValueError if not supported quantization is chosen");
      - weight_only_groupwise_quant_matmul_plugin "auto" (= the checkpoint dtype) for W4A16_AWQ and W4A8_AWQ: the
        int4 group GEMM is a plugin (builder.build() sets it for per-group weight-only modes; the models'
        default_plugin_config says "auto");
      - use_fp8_context_fmha only for FP8 / W4A8_AWQ weights with an FP8 KV cache, and paged context FMHA off for
        an FP8 KV cache without it: builder.build() forces exactly this (paged context FMHA is on by default in
        1.2), warning each time; whether the GPU supports FP8 FMHA (SM >= 89) it still decides itself.
    W8A8_SQ_PER_CHANNEL needs no plugin (not in W8A8_SQ_PLUGIN_LIST: TensorRT's own int8 GEMM, quantization/mode.py)."""
    if quant is None:
        return {}
    algo, fp8_kv = quant.quant_algo, quant.kv_cache_quant_algo == "FP8"
    out: dict = {"use_fused_mlp": algo == "FP8"}
    if algo in GROUPWISE_ALGOS:
        out["weight_only_groupwise_quant_matmul_plugin"] = "auto"
    out["use_fp8_context_fmha"] = algo in FP8_FMHA_ALGOS and fp8_kv
    if fp8_kv and not out["use_fp8_context_fmha"]:
        out["use_paged_context_fmha"] = False
    return out


# --- checkpoint inspection -------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckedCheckpoint:
    ckpt: TrtCheckpoint
    rank_files_present: bool
    weight_bytes_per_rank: int
    weight_bytes_source: str


def rank_file_data_bytes(path: Path) -> int:
    """Tensor bytes in a safetensors file, from its header alone."""
    return read_header(path).data_bytes


def inspect_checkpoint(path: Path, *, require_rank_files: bool) -> CheckedCheckpoint:
    """config.json parsed and consistent with its architecture; rank files checked (checkpoints/trtllm.check_rank_files)
    when present (always for a real build, with every weight scanned for NaN/Inf; a dry run accepts a config-only
    folder and plans it from the config, O(1) in its sizes)."""
    ckpt = read_checkpoint(path)
    get_arch(ckpt.model.architecture).validate(ckpt.model, ckpt.mapping)
    check_groupwise_widths(ckpt)
    if require_rank_files or rank_file_indices(ckpt):
        check_rank_files(ckpt, scan_weights=require_rank_files)  # a real build reads every weight: check them too
        weights = max(rank_file_data_bytes(ckpt.rank_file(r)) for r in range(ckpt.mapping.world_size))
        return CheckedCheckpoint(ckpt, True, weights, "rank files")
    weights = max(ckpt.expected_bytes(r) for r in ckpt.representative_ranks())
    return CheckedCheckpoint(ckpt, False, weights, "expected tensors (config-only checkpoint)")


def check_groupwise_widths(ckpt: TrtCheckpoint) -> None:
    """AWQ checkpoints whose linears TensorRT-LLM would pad cannot load: refuse them before a build.

    WeightOnlyGroupwiseQuantLinear / RowLinear round their in and out features up to a multiple of
    max(128 for W4A8 else 64, group_size) x tp_size (quantization/layers.py, file id 790827869), while
    from_checkpoint loads the rank files as stored, so an unpadded width fails with "not the same shape"."""
    q, cfg, tp = ckpt.quant, ckpt.model, ckpt.mapping.tp_size
    if q is None or q.quant_algo not in GROUPWISE_ALGOS:
        return
    multiple = max(128 if q.quant_algo == "W4A8_AWQ" else 64, q.format.group_size) * tp
    qkv_out = (cfg.num_attention_heads + 2 * -(-cfg.num_key_value_heads // tp) * tp) * cfg.head_dim
    widths = {"hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
              "num_attention_heads*head_dim": cfg.num_attention_heads * cfg.head_dim,
              "qkv width (heads + 2 x kv heads) x head_dim": qkv_out}
    bad = {name: w for name, w in widths.items() if w % multiple}
    if bad:
        name, width = next(iter(bad.items()))
        base = 128 if q.quant_algo == "W4A8_AWQ" else 64
        smallest = max(base, min(q.format.group_sizes or (q.format.group_size,)))  # at tp 1
        remedy = ("quantize with another format: no group size or tp makes every width a multiple"
                  if any(w % smallest for w in widths.values()) else "quantize with a smaller group size or tp")
        raise ConfigError(f"{ckpt.path}: {q.quant_algo} linears are padded by TensorRT-LLM to a multiple of "
                          f"{multiple} (max({base}, group {q.format.group_size}) x tp {tp}), but {name}={width} is "
                          f"not, so its engine build would fail to load this checkpoint; {remedy}")


def gpu_memory(opts: BuildOptions) -> tuple[int, str]:
    if opts.gpu_memory_gib is not None:
        return int(opts.gpu_memory_gib * GIB), "--gpu-memory"
    if _cuda_available():
        total, name = _gpu_info()
        return total, f"local GPU {name}"
    return DEFAULT_GPU_MEMORY, "default 80 GiB (no GPU visible)"


def plan_for(opts: BuildOptions, checked: CheckedCheckpoint) -> MemoryPlan:
    mem, source = gpu_memory(opts)
    req = PlanRequest(max_batch_size=opts.max_batch_size, max_seq_len=opts.max_seq_len,
                      max_num_tokens=opts.max_num_tokens, max_beam_width=opts.max_beam_width,
                      gpu_memory_bytes=mem, gpu_memory_source=source)
    c = checked.ckpt
    kv_dtype = "fp8" if c.quant is not None and c.quant.kv_cache_quant_algo == "FP8" else None
    return make_plan(c.model, c.mapping, c.dtype, checked.weight_bytes_per_rank, checked.weight_bytes_source, req,
                     kv_dtype)


def dry_run(opts: BuildOptions) -> dict:
    """Validate, resolve the BuildConfig and plan memory; touches no TensorRT-LLM. Raises if it cannot fit."""
    opts.validate()
    checked = inspect_checkpoint(opts.checkpoint, require_rank_files=False)
    bc = build_settings(opts, checked.ckpt.dtype, checked.ckpt.quant)
    plan = plan_for(opts, checked)
    plan.check()
    return {"checkpoint": _checkpoint_info(checked), "build_config": bc, "plan": plan.to_dict()}


# --- the real build --------------------------------------------------------------------------------

def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_info() -> tuple[int, str]:
    """Total memory in bytes and name of GPU 0."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return int(props.total_memory), str(props.name)


def require_trtllm() -> str:
    """tensorrt_llm importable, a CUDA GPU visible and a single process (not one MPI rank of many), else one
    line naming what is wrong; its version."""
    import importlib.util

    if importlib.util.find_spec("tensorrt_llm") is None:
        raise MissingDependencyError(f"tensorrt_llm is not installed; the Docker target 'build' has it: {DOCKER_HINT}")
    if not _cuda_available():
        raise MissingDependencyError(f"no CUDA GPU is visible (torch.cuda.is_available() is False); run the "
                                     f"Docker target 'build' on a GPU host: {DOCKER_HINT}")
    import tensorrt_llm

    build_api.check_single_process()
    return str(getattr(tensorrt_llm, "__version__", "unknown"))


def build(opts: BuildOptions) -> Path:
    """Validate, plan, build every rank into a temporary folder, write the manifest, then rename it into place.

    Raises:
        OutputExistsError: the output exists and overwrite is off, or is not ours to overwrite.
        ConfigError / CheckpointError: invalid options or checkpoint, an output inside the checkpoint (or
            around it), a plan that does not fit, or a start under MPI with several ranks.
        MissingDependencyError: no tensorrt_llm, one without the engine path (1.3+), no CUDA GPU, or a tensorrt_llm
            whose BuildConfig lacks a field.
    """
    opts.validate()
    found = trtllm_install.detect()
    if found is not None and not found.engine_path:  # 1.3+: refuse before reading anything
        raise MissingDependencyError(found.engine_refusal("`trt-minitron build` (TensorRT engines)"))
    out = Path(opts.output)
    out = outputs.check_output(out, overwrite=opts.overwrite, protect=[Path(opts.checkpoint)])  # before minutes of building
    checked = inspect_checkpoint(opts.checkpoint, require_rank_files=True)
    bc = build_settings(opts, checked.ckpt.dtype, checked.ckpt.quant)
    trtllm_version = require_trtllm()
    plan = plan_for(opts, checked)
    plan.check()

    with outputs.atomic_output_dir(out, overwrite=opts.overwrite, protect=[opts.checkpoint]) as tmp:
        seconds = _build_all(str(checked.ckpt.path), checked.ckpt.mapping.world_size, bc, str(tmp), opts.workers)
        for name in outputs.TOKENIZER_FILES:
            if (checked.ckpt.path / name).is_file():
                shutil.copy2(checked.ckpt.path / name, tmp / name)
        manifest = {
            "trt_minitron_version": __version__,
            "tensorrt_llm_version": trtllm_version,
            "gpu": _gpu_info()[1],
            "checkpoint": _checkpoint_info(checked),
            "build_options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
            "build_config": bc,
            "plan": plan.to_dict(),
            "rank_seconds": {str(r): round(s, 3) for r, s in enumerate(seconds)},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: it makes the folder ours
    return out


def _build_all(ckpt_dir: str, world_size: int, bc: dict, engine_dir: str, workers: int) -> list[float]:
    if workers == 1 or world_size == 1:
        return [build_api.build_rank(ckpt_dir, r, bc, engine_dir) for r in range(world_size)]
    # Separate processes, as trtllm-build does: TensorRT builders do not share a process well.
    pool = ProcessPoolExecutor(max_workers=min(workers, world_size), mp_context=get_context("spawn"))
    try:
        futures = [pool.submit(build_api.build_rank, ckpt_dir, r, bc, engine_dir) for r in range(world_size)]
        return [f.result() for f in futures]
    finally:  # on an error or a signal, ranks not yet started are not started
        pool.shutdown(wait=True, cancel_futures=True)


def _checkpoint_info(checked: CheckedCheckpoint) -> dict:
    c = checked.ckpt
    cfg_bytes = (c.path / "config.json").read_bytes()
    info = {
        "path": str(c.path.resolve()),
        "config_sha256": hashlib.sha256(cfg_bytes).hexdigest(),
        "architecture": c.raw.get("architecture"),
        "dtype": c.dtype,
        "tp_size": c.mapping.tp_size,
        "pp_size": c.mapping.pp_size,
        "rank_files": "validated" if checked.rank_files_present else "absent (config-only dry run)",
    }
    if c.quant is not None:
        info["quantization"] = {"quant_algo": c.quant.quant_algo, "kv_cache_quant_algo": c.quant.kv_cache_quant_algo,
                                "group_size": c.quant.format.group_size}
    return info
