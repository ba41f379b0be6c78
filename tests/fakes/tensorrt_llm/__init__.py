"""A fake `tensorrt_llm` for tests, modelled on the TensorRT-LLM 1.2 line: the build path's classes and
functions with the real signatures, recording every call in `tensorrt_llm.CALLS`. Never installed; tests put
tests/fakes on sys.path (conftest.py, fixture fake_trtllm_path).

A test that passes against this fake shows that trt-minitron calls the API with well-formed arguments and
writes the tensors the real module tree expects. It is NOT evidence that a TensorRT engine was built: no
TensorRT code runs, and build() returns a placeholder engine.

Sources read (NVIDIA/TensorRT-LLM; "id" = code-index file id where the index names no commit):
  builder.py            pydantic BuildConfig (PR #8330): see builder.py here; dataclass era: id 205252225, @008b2b8d
  llmapi/kv_cache_type.py  @188362024c
  plugin/plugin.py      @c20322ffd3dc (pydantic PluginConfig, PR #8277)
  commands/build.py     @65f1d1536e18 (per-rank flow: set_rank, MODEL_MAP[arch].from_checkpoint, build, save)
  models/modeling_utils.py  id 1189552800 (from_checkpoint, load, DecoderLayerList)
  models/llama/model.py id 663997685; models/gpt/model.py id 1165511584
  layers/attention.py   id 1178835378; layers/mlp.py id 601018076
  _utils.py             id 52995752 (mpi_rank, mpi_world_size); __init__.py @c40f1157 (exports them)
  mapping.py            @05ebebb2; runtime: see runtime.py
Where the fake is deliberately stricter than the real code, the module docstring says so.
"""

from . import builder, mapping, models, plugin  # noqa: F401,E402
from ._calls import CALLS, record  # noqa: F401
from ._utils import mpi_rank, mpi_world_size  # noqa: F401
from .builder import BuildConfig, Engine, build  # noqa: F401,E402
from .mapping import Mapping  # noqa: F401,E402
from .models import MODEL_MAP, PretrainedConfig, PretrainedModel  # noqa: F401,E402
from .plugin import PluginConfig  # noqa: F401,E402
from .version import __version__  # noqa: F401
