"""BuildConfig, EngineConfig, Engine and build() with the signatures of tensorrt_llm/builder.py (index file
id 205252225, 1.2 line). build() produces a stand-in engine; Engine.save writes the same file names as the
real one (config.json on rank 0, rank{N}.engine)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from ._calls import record
from .bindings import KVCacheType
from .models import PretrainedConfig, PretrainedModel
from .plugin import PluginConfig
from .version import __version__

# Popped without a default by BuildConfig.from_dict in builder.py @008b2b8d (the 1.2 line added defaults).
REQUIRED_IN_OLDER_FROM_DICT = ("max_input_len", "max_seq_len", "max_batch_size", "max_beam_width",
                               "max_num_tokens", "opt_num_tokens")


@dataclass
class BuildConfig:
    max_input_len: int = 1024
    max_seq_len: int = None
    opt_batch_size: int = 8
    max_batch_size: int = 2048
    max_beam_width: int = 1
    max_num_tokens: int = 8192
    opt_num_tokens: Optional[int] = None
    max_prompt_embedding_table_size: int = 0
    kv_cache_type: KVCacheType = None
    gather_context_logits: int = False
    gather_generation_logits: int = False
    strongly_typed: bool = True
    force_num_profiles: Optional[int] = None
    profiling_verbosity: str = "layer_names_only"
    enable_debug_output: bool = False
    max_draft_len: int = 0
    speculative_decoding_mode: object = None
    use_refit: bool = False
    input_timing_cache: str = None
    output_timing_cache: str = "model.cache"
    lora_config: dict = field(default_factory=dict)
    weight_sparsity: bool = False
    weight_streaming: bool = False
    plugin_config: PluginConfig = field(default_factory=PluginConfig)
    use_strip_plan: bool = False
    max_encoder_input_len: int = 1024
    dry_run: bool = False
    visualize_network: str = None
    monitor_memory: bool = False
    use_mrope: bool = False

    @classmethod
    def from_dict(cls, config, plugin_config=None):
        record("BuildConfig.from_dict", config=copy.deepcopy(config), plugin_config=plugin_config)
        config = copy.deepcopy(config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise TypeError(f"BuildConfig has no fields {unknown}")
        for key in REQUIRED_IN_OLDER_FROM_DICT:
            if key not in config:
                raise KeyError(key)
        if "plugin_config" in config and "kv_cache_type" not in config:
            raise KeyError("kv_cache_type")  # builder.py @008b2b8d pops it whenever plugin_config is given
        kv = config.pop("kv_cache_type", None)
        pc = plugin_config or PluginConfig()
        if "plugin_config" in config:
            pc = pc.model_copy(update=config.pop("plugin_config"), deep=True)
        return cls(**config, kv_cache_type=KVCacheType.from_string(kv) if kv is not None else None,
                   plugin_config=pc)

    def to_dict(self):
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if out["kv_cache_type"] is not None:
            out["kv_cache_type"] = out["kv_cache_type"].name
        out["plugin_config"] = self.plugin_config.model_dump()
        return out


class EngineConfig:
    def __init__(self, pretrained_config: PretrainedConfig, build_config: BuildConfig, version: str):
        self.pretrained_config = pretrained_config
        self.build_config = build_config
        self.version = version

    def to_dict(self):
        bc = self.build_config.to_dict()
        bc.pop("dry_run", None)
        bc.pop("visualize_network", None)
        return {"version": self.version, "pretrained_config": self.pretrained_config.to_dict(), "build_config": bc}


class Engine:
    def __init__(self, config: EngineConfig, engine, managed_weights: dict = {}):  # noqa: B006 (real default)
        self.config = config
        self.engine = engine
        self.managed_weights = managed_weights or {}

    def save(self, engine_dir: str):
        record("Engine.save", engine_dir=engine_dir, rank=self.config.pretrained_config.mapping.rank)
        os.makedirs(engine_dir, exist_ok=True)
        rank = self.config.pretrained_config.mapping.rank
        if rank == 0:
            with open(os.path.join(engine_dir, "config.json"), "w") as f:
                json.dump(self.config.to_dict(), f, indent=4, default=str)
        with open(os.path.join(engine_dir, f"rank{rank}.engine"), "wb") as f:
            f.write(self.engine)


def build(model: PretrainedModel, build_config: BuildConfig) -> Engine:
    if not isinstance(model, PretrainedModel):
        raise TypeError(f"build() takes a PretrainedModel, got {type(model).__name__}")
    if not isinstance(build_config, BuildConfig):
        raise TypeError(f"build() takes a BuildConfig, got {type(build_config).__name__}")
    record("build", rank=model.config.mapping.rank, build_config=build_config.to_dict())
    build_config = copy.deepcopy(build_config)
    build_config.plugin_config.dtype = model.config.dtype
    pc = build_config.plugin_config
    # BuildConfig.update_kv_cache_type: an explicit kv_cache_type must agree with paged_kv_cache.
    if build_config.kv_cache_type is not None and pc.paged_kv_cache is not None:
        assert pc.paged_kv_cache == (build_config.kv_cache_type == KVCacheType.PAGED)
    if build_config.max_seq_len is None:
        raise AssertionError("fake build: trt-minitron always passes max_seq_len")
    blob = f"FAKE-ENGINE rank={model.config.mapping.rank} arch={model.config.architecture}".encode()
    return Engine(EngineConfig(model.config, build_config, __version__), blob)
