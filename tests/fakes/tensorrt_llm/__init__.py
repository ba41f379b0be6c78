"""A fake `tensorrt_llm` for tests: the build path's classes and functions with the signatures of the pinned
release, recording every call in `tensorrt_llm.CALLS`. Never installed; tests put tests/fakes on sys.path.

Pinned release: TensorRT-LLM 1.2.x (newest 1.2 on PyPI: 1.2.1; it still ships `trtllm-build`). The source
index holds no 1.2.1 tag snapshot, so signatures were read from the newest stored file versions of the 1.2
line ("TensorRT LLM" branding, pydantic PluginConfig, no auto_parallel), NVIDIA/TensorRT-LLM:
  tensorrt_llm/version.py            @b35ac1b6 (__version__ "1.2.0rc2")
  tensorrt_llm/builder.py            index file id 205252225 (BuildConfig dataclass with
                                     get_build_config_defaults; build(model, build_config); Engine.save(engine_dir))
  tensorrt_llm/plugin/plugin.py      @c20322ff (PluginConfig(BaseModel), extra="ignore", validate_assignment)
  tensorrt_llm/models/modeling_utils.py @01ea6d79 (PretrainedConfig keyword-only __init__, from_json_file,
                                     set_rank; PretrainedModel.from_checkpoint(ckpt_dir, rank=None, config=None,
                                     *, preprocess_weights_hook=None))
  tensorrt_llm/mapping.py            @05ebebb2 (Mapping(world_size=1, rank=0, gpus_per_node=8, *, ...))
  tensorrt_llm/commands/build.py     @008b2b8d (the per-rank sequence trtllm-build runs)
Older from_dict (builder.py @008b2b8d) pops max_input_len, max_seq_len, max_batch_size, max_beam_width,
max_num_tokens, opt_num_tokens and kv_cache_type without defaults.

Deliberately stricter than the real code, so a wrong call fails a test instead of being silently ignored:
BuildConfig.from_dict rejects unknown keys and requires the keys older releases require; PluginConfig rejects
unknown fields (the real one has extra="ignore") and values outside the real Literal choices.
"""

from . import builder, mapping, models, plugin  # noqa: F401,E402
from ._calls import CALLS, record  # noqa: F401
from .builder import BuildConfig, Engine, build  # noqa: F401,E402
from .mapping import Mapping  # noqa: F401,E402
from .models import MODEL_MAP, PretrainedConfig, PretrainedModel  # noqa: F401,E402
from .plugin import PluginConfig  # noqa: F401,E402
from .version import __version__  # noqa: F401
