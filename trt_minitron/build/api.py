"""The TensorRT-LLM calls of `trt-minitron build`, each noted with the NVIDIA/TensorRT-LLM source it was checked against.

Importing this module does not import tensorrt_llm; every function imports it when called.
Sources: "@commit" where the code index named one, "id N" (code-index file id) where it did not.

Per rank, the sequence trtllm-build runs (tensorrt_llm/commands/build.py @65f1d1536e18, build_model and
build_and_save; PR #8330 changed only how that file constructs the BuildConfig):
  PretrainedConfig.from_json_file(ckpt/config.json)     models/modeling_utils.py id 1189552800 (signature @01ea6d79)
  config.set_rank(rank)                                 models/modeling_utils.py id 1189552800
  MODEL_MAP[arch].from_checkpoint(ckpt, config=config)  models/modeling_utils.py id 1189552800; MODEL_MAP id 820782731
  tensorrt_llm.builder.build(model, build_config)       commands/build.py @65f1d1536e18 (build_model)
  engine.save(engine_dir)                               commands/build.py @65f1d1536e18 (build_and_save)
The BuildConfig, two shapes, detected (issubclass of pydantic.BaseModel), never guessed from a version string:
  1.2 line, pydantic (PR #8330, merged 2025-10-16): BuildConfig(**fields, kv_cache_type=KVCacheType.PAGED,
      plugin_config=PluginConfig(**plugin_fields)), as trtllm-build itself constructs it (PR #8330's diff of
      commands/build.py). KVCacheType: tensorrt_llm/llmapi/kv_cache_type.py @188362024c (str enum, values
      "continuous"/"paged"/"disabled", matched case-insensitively). PluginConfig: tensorrt_llm/plugin/plugin.py
      @c20322ffd3dc, pydantic with extra="ignore", so a misspelt field would be dropped without a word: every
      name is checked against model_fields first, for both models. The pydantic BuildConfig source itself was
      not in the code index; its imports were read from the docs page _modules/tensorrt_llm/builder.html.
  0.12-1.1, dataclass: BuildConfig.from_dict(settings) (commands/build.py @65f1d1536e18, builder.py
      @008b2b8d): older from_dict pops the six sizes without defaults, and kv_cache_type ("PAGED", parsed by the
      C++ enum's from_string) whenever plugin_config is given; trt-minitron passes all of them.
Quantized checkpoints (ModelOpt's TensorRT-LLM export; the plugin choices are build.quant_plugin_settings):
  quant_algo -> QuantMode, W8A8_SQ_PLUGIN_LIST      quantization/mode.py id 472971060 (W8A8_SQ_PER_CHANNEL is not
                                                    a plugin algorithm: out-of-the-box int8 layers)
  PretrainedModel.__post_init__ -> quantize()       quantization/quantize.py id 235018984 (linears replaced unless
                                                    exclude_modules matches; kv_cache_quantize adds
                                                    kv_cache_scaling_factor + kv_cache_rcp_scaling_factor)
  quantized linear parameters (names, shapes, dtypes) quantization/layers.py id 790827869 (FP8Linear,
                                                    Int8SmoothQuantLinear, WeightOnlyGroupwiseQuantLinear: AWQ widths
                                                    padded to max(64 | 128 for W4A8, group) x tp)
  preprocess_weights (checkpoint -> parameters)     models/modeling_utils.py id 1189552800 (k/v scales -> max, rcp
                                                    added; AWQ weights re-laid out; W4A8 alpha)
  plugin adjustments per quant mode in build()      builder.py id 205252225 (FP8 context FMHA only for FP8 / W4A8_AWQ
                                                    / NVFP4 and with paged context FMHA only with an FP8 KV cache;
                                                    weight_only_groupwise_quant_matmul_plugin for per-group modes)
  use_fused_mlp off for quant_algo other than FP8   commands/build.py @008b2b8d (main)
MPI: tensorrt_llm.mpi_world_size() (exported by tensorrt_llm/__init__.py @c40f1157; _utils.py id 52995752:
  the MPI communicator's size, 1 without multi-device support).
"""

from __future__ import annotations

import copy
import os
import time

from ..errors import ConfigError, MissingDependencyError


def is_pydantic_model(cls: object) -> bool:
    """True for a pydantic v2 model class (the 1.2 BuildConfig), False for a dataclass (0.12-1.1)."""
    try:
        from pydantic import BaseModel
    except ImportError:  # no pydantic: necessarily a pre-pydantic tensorrt_llm
        return False
    return isinstance(cls, type) and issubclass(cls, BaseModel)


def _check_field_names(model: type, names: set[str], what: str) -> None:
    unknown = sorted(names - set(model.model_fields))
    if unknown:
        import tensorrt_llm

        raise MissingDependencyError(
            f"tensorrt_llm {getattr(tensorrt_llm, '__version__', '?')}: {what} has no field(s) {unknown}; "
            f"trt-minitron's build was checked against the 1.2 line")


def make_build_config(settings: dict):
    """A tensorrt_llm BuildConfig from trt-minitron's settings (sizes, kv_cache_type "PAGED", plugin_config dict)."""
    from tensorrt_llm.builder import BuildConfig

    if not is_pydantic_model(BuildConfig):
        # The dataclass era's from_dict pops keys from its argument: give it its own copy.
        return BuildConfig.from_dict(copy.deepcopy(settings))

    from pydantic import ValidationError
    from tensorrt_llm.llmapi.kv_cache_type import KVCacheType
    from tensorrt_llm.plugin import PluginConfig

    fields = {k: v for k, v in settings.items() if k != "plugin_config"}
    plugin = dict(settings["plugin_config"])
    _check_field_names(BuildConfig, set(fields) | {"plugin_config"}, "BuildConfig")
    _check_field_names(PluginConfig, set(plugin), "PluginConfig")
    fields["kv_cache_type"] = KVCacheType(fields["kv_cache_type"])
    try:
        return BuildConfig(**fields, plugin_config=PluginConfig(**plugin))
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"tensorrt_llm refused the build settings: {'.'.join(map(str, first['loc']))}: "
                          f"{first['msg']}") from None


def check_single_process() -> None:
    """Refuse to run as one of several MPI ranks: this build builds every engine rank itself."""
    import tensorrt_llm

    world = tensorrt_llm.mpi_world_size()
    if world > 1:
        raise ConfigError(f"this process is one of {world} MPI ranks (tensorrt_llm.mpi_world_size()); "
                          f"`trt-minitron build` builds every engine rank itself: start it once, without "
                          f"mpirun/srun, and use --workers N to build ranks in parallel")


def build_rank(ckpt_dir: str, rank: int, settings: dict, engine_dir: str) -> float:
    """Build and save one rank's engine; returns seconds. Module-level so worker processes can run it."""
    import torch
    from tensorrt_llm.builder import build
    from tensorrt_llm.models import MODEL_MAP, PretrainedConfig

    if torch.cuda.device_count() > 1:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    t0 = time.perf_counter()
    config = PretrainedConfig.from_json_file(os.path.join(ckpt_dir, "config.json"))
    config.set_rank(rank)
    model = MODEL_MAP[config.architecture].from_checkpoint(ckpt_dir, config=config)
    engine = build(model, make_build_config(settings))
    engine.save(engine_dir)
    return time.perf_counter() - t0
