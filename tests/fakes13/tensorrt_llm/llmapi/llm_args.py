"""The LLM API argument models, as tensorrt_llm/llmapi/llm_args.py @0004396720054fd8e205cbf616f21f0b57c6b412 defines
them (field names, defaults, bounds), restricted to the fields listed here; extra="forbid" as the real StrictBaseModel."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator


class StrictBaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KvCacheConfig(StrictBaseModel):
    enable_block_reuse: bool = True
    max_tokens: Optional[int] = None
    max_attention_window: Optional[List[int]] = None
    sink_token_length: Optional[int] = None
    free_gpu_memory_fraction: Optional[float] = Field(default=0.9, ge=0, le=1)
    host_cache_size: Optional[int] = None
    cross_kv_cache_fraction: Optional[float] = None
    secondary_offload_min_priority: Optional[int] = None
    event_buffer_max_size: int = 0
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: NonNegativeInt = 0
    dtype: str = "auto"
    mamba_ssm_cache_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    tokens_per_block: int = 32


class CudaGraphConfig(StrictBaseModel):
    """BaseCudaGraphConfig + DecodeCudaGraphConfig.mode; the real validator: max_batch_size = max(batch_sizes)."""

    batch_sizes: Optional[List[int]] = None
    max_batch_size: NonNegativeInt = 0
    enable_padding: bool = False
    mode: Literal["decode"] = "decode"

    @model_validator(mode="after")
    def _sizes(self):
        if self.batch_sizes:
            self.batch_sizes = sorted(self.batch_sizes)
            top = max(self.batch_sizes)
            if self.max_batch_size == 0:
                self.max_batch_size = top
            elif self.max_batch_size != top:
                raise ValueError("CudaGraphConfig.max_batch_size is incompatible with CudaGraphConfig.batch_sizes")
        elif self.max_batch_size == 0:
            self.max_batch_size = 128
        return self


class TorchLlmArgs(StrictBaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    # BaseLlmArgs
    model: Union[str, Path]
    tokenizer: Optional[Any] = None
    tokenizer_mode: Literal["auto", "slow"] = "auto"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    revision: Optional[str] = None
    tokenizer_revision: Optional[str] = None
    pipeline_parallel_size: int = 1
    context_parallel_size: int = 1
    gpus_per_node: Optional[int] = None
    moe_expert_parallel_size: Optional[int] = None
    enable_attention_dp: bool = False
    kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
    enable_chunked_prefill: bool = False
    max_batch_size: Optional[int] = 2048
    max_input_len: Optional[int] = 1024
    max_seq_len: Optional[int] = None
    max_beam_width: Optional[int] = 1
    max_num_tokens: Optional[int] = 8192
    num_postprocess_workers: int = 0
    postprocess_tokenizer_dir: Optional[str] = None
    reasoning_parser: Optional[str] = None
    # TorchLlmArgs
    cuda_graph_config: Optional[CudaGraphConfig] = Field(default_factory=CudaGraphConfig)
    disable_overlap_scheduler: bool = False
    attn_backend: str = "TRTLLM"
    print_iter_log: bool = False
    stream_interval: int = 1
    backend: Literal["pytorch"] = "pytorch"
