"""The dataclass BuildConfig of TensorRT-LLM 0.12-1.1 (before PR #8330), for the test of trt-minitron's legacy
path: swap it in for builder.BuildConfig and PluginConfig stays the pydantic fake (from_dict only forwards the
plugin_config dict to it).

Fields from tensorrt_llm/builder.py, index file id 205252225 (the 1.x dataclass) and @008b2b8d. Its from_dict
pops max_input_len, max_seq_len, max_batch_size, max_beam_width, max_num_tokens, opt_num_tokens without
defaults in older releases and kv_cache_type whenever plugin_config is given, and parses kv_cache_type with the
C++ enum's KVCacheType.from_string; the fake requires all of them. Unknown keys: the real from_dict passes
them to the dataclass constructor (TypeError), as here.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ._calls import record
from .bindings import KVCacheType
from .plugin import PluginConfig

REQUIRED_IN_OLDER_FROM_DICT = ("max_input_len", "max_seq_len", "max_batch_size", "max_beam_width",
                               "max_num_tokens", "opt_num_tokens")


@dataclass
class LegacyBuildConfig:
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
    auto_parallel_config: dict = field(default_factory=dict)
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
        for key in REQUIRED_IN_OLDER_FROM_DICT:
            if key not in config:
                raise KeyError(key)
        if "plugin_config" in config and "kv_cache_type" not in config:
            raise KeyError("kv_cache_type")
        kv = config.pop("kv_cache_type", None)
        pc = plugin_config or PluginConfig()
        if "plugin_config" in config:
            pc = pc.model_copy(update=config.pop("plugin_config"))
            pc = PluginConfig(**pc.model_dump())  # validate the update
        return cls(**config, kv_cache_type=KVCacheType.from_string(kv) if kv is not None else None,
                   plugin_config=pc)

    def to_dict(self):
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if out["kv_cache_type"] is not None:
            out["kv_cache_type"] = out["kv_cache_type"].name
        out["plugin_config"] = {name: getattr(self.plugin_config, name) for name in PluginConfig.model_fields}
        return out
