"""A fake `tensorrt_llm` of the generation after 1.2 (the PyTorch backend only), for tests: the LLM API's classes with
the real constructor signatures and field names, generating with transformers on the CPU. Tests put tests/fakes13 on
sys.path (conftest.py, fixture fake_trtllm13_path). Passing against it shows that trt-minitron calls the LLM API with
well-formed arguments and reads its outputs correctly; it is NOT evidence that TensorRT-LLM ran.

Absent, as in the real package after PR #15918 (which deleted builder.py, runtime/model_runner{,_cpp}.py,
plugin/, _tensorrt_engine/ and commands/build.py) and PR #16369 (C++ engine runtime): every engine-path module.

Sources (NVIDIA/TensorRT-LLM; the commit each file was read at):
  llmapi/llm.py        BaseLLM.__init__ and generate / generate_async @4c05a74891e4 (kwargs checked against the
                       LlmArgs fields: an unknown one raises ValueError "... got invalid argument: KEY");
                       RequestOutput fields @00966934ce32
  llmapi/llm_args.py   KvCacheConfig, CudaGraphConfig (= DecodeCudaGraphConfig), BaseLlmArgs / TorchLlmArgs fields
                       @0004396720054fd8e205cbf616f21f0b57c6b412 (post-removal main: TorchLlmArgs.backend is
                       Literal["pytorch"]); pydantic models with extra="forbid" as the real StrictBaseModel
  sampling_params.py   SamplingParams dataclass fields, __post_init__ and _validate (file id 416251432, the newest
                       copy the index holds; fields identical to @000a01de (1.0.0rc4))
  executor/result.py   CompletionOutput fields, GenerationResult.__iter__/__next__/result @a678b91aafbe
The fake keeps only a subset of TorchLlmArgs' ~150 fields (those trt-minitron or its tests use, with their real names
and defaults); a field it lacks fails here even where the real class has it: stricter, never looser.
"""

from ._calls import CALLS  # noqa: F401
from .llmapi import LLM, KvCacheConfig  # noqa: F401
from .sampling_params import SamplingParams  # noqa: F401
from .version import __version__  # noqa: F401
