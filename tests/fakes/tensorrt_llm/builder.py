"""BuildConfig, EngineConfig, Engine and build() of tensorrt_llm/builder.py in the 1.2 line.

BuildConfig is a pydantic model since PR #8330 ("Migrate BuildConfig to Pydantic, add a Python wrapper for
KVCacheType enum", merged 2025-10-16): the 1.2 builder.py imports `from pydantic import BaseModel, Field` and
`from .llmapi.kv_cache_type import KVCacheType` (docs page _modules/tensorrt_llm/builder.html of the current
docs; the code index holds no post-#8330 builder.py), and trtllm-build builds it with the constructor,
`BuildConfig(max_input_len=..., ..., kv_cache_type=..., ...)` (PR #8330's diff of commands/build.py). The field
names and defaults below are those of the dataclass it replaced (builder.py, index file id 205252225, and
@008b2b8d) minus auto_parallel_config (the 1.2 builder imports no auto_parallel); the pydantic version's exact
defaults could not be read. kv_cache_type is the Python enum of llmapi/kv_cache_type.py.

Deliberately stricter where the real model could not be read: extra="forbid" (unknown keys are an error;
whether the real model forbids or ignores them is unconfirmed), and no `from_dict` (a call to the dataclass-era
classmethod fails here; whether 1.2 keeps a wrapper is unconfirmed). build() copies the config, sets
plugin_config.dtype = model.config.dtype as the real build() does, checks kv_cache_type against
plugin_config.paged_kv_cache (update_kv_cache_type) and returns a stand-in engine; Engine.save writes the real
file names (config.json on rank 0, rank{N}.engine).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from ._calls import record
from .llmapi.kv_cache_type import KVCacheType
from .models import PretrainedConfig, PretrainedModel
from .plugin import PluginConfig
from .version import __version__


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_input_len: int = 1024
    max_seq_len: Optional[int] = None
    opt_batch_size: int = 8
    max_batch_size: int = 2048
    max_beam_width: int = 1
    max_num_tokens: int = 8192
    opt_num_tokens: Optional[int] = None
    max_prompt_embedding_table_size: int = 0
    kv_cache_type: Optional[KVCacheType] = None
    gather_context_logits: bool = False
    gather_generation_logits: bool = False
    strongly_typed: bool = True
    force_num_profiles: Optional[int] = None
    profiling_verbosity: str = "layer_names_only"
    enable_debug_output: bool = False
    max_draft_len: int = 0
    speculative_decoding_mode: Any = None  # SpeculativeDecodingMode.NONE in the real model
    use_refit: bool = False
    input_timing_cache: Optional[str] = None
    output_timing_cache: str = "model.cache"
    lora_config: Any = Field(default_factory=dict)  # LoraConfig in the real model
    weight_sparsity: bool = False
    weight_streaming: bool = False
    plugin_config: PluginConfig = Field(default_factory=PluginConfig)
    use_strip_plan: bool = False
    max_encoder_input_len: int = 1024
    dry_run: bool = False
    visualize_network: Optional[str] = None
    monitor_memory: bool = False
    use_mrope: bool = False

    def model_post_init(self, context: Any) -> None:
        record("BuildConfig", fields=sorted(self.model_fields_set))

    def to_dict(self) -> dict:
        out = self.model_dump(mode="json", exclude={"plugin_config"})
        pc = self.plugin_config
        out["plugin_config"] = {name: getattr(pc, name) for name in PluginConfig.model_fields}  # "auto" resolved
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
        rank = self.config.pretrained_config.mapping.rank
        record("Engine.save", engine_dir=engine_dir, rank=rank)
        os.makedirs(engine_dir, exist_ok=True)
        if rank == 0:
            with open(os.path.join(engine_dir, "config.json"), "w") as f:
                json.dump(self.config.to_dict(), f, indent=4, default=str)
        with open(os.path.join(engine_dir, f"rank{rank}.engine"), "wb") as f:
            f.write(self.engine)


def build(model: PretrainedModel, build_config) -> Engine:
    """Accepts this module's BuildConfig, or the dataclass of _legacy_builder when a test swaps it in."""
    if not isinstance(model, PretrainedModel):
        raise TypeError(f"build() takes a PretrainedModel, got {type(model).__name__}")
    if not isinstance(build_config, BuildConfig):  # looked up at call time: a test may swap the class
        raise TypeError(f"build() takes a BuildConfig, got {type(build_config).__name__}")
    pydantic_era = isinstance(build_config, BaseModel)
    raw = build_config.model_dump(mode="json") if pydantic_era else build_config.to_dict()
    record("build", rank=model.config.mapping.rank, build_config=raw)
    build_config = build_config.model_copy(deep=True) if pydantic_era else copy.deepcopy(build_config)
    build_config.plugin_config.dtype = model.config.dtype
    pc = build_config.plugin_config
    # BuildConfig.update_kv_cache_type: an explicit kv_cache_type must agree with paged_kv_cache.
    if build_config.kv_cache_type is not None and pc.paged_kv_cache is not None:
        assert pc.paged_kv_cache == (build_config.kv_cache_type.name == "PAGED")
    if build_config.max_seq_len is None:
        raise AssertionError("fake build: trt-minitron always passes max_seq_len")
    blob = f"FAKE-ENGINE rank={model.config.mapping.rank} arch={model.config.architecture}".encode()
    return Engine(EngineConfig(model.config, build_config, __version__), blob)
