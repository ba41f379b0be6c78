"""GPU memory plan for an engine build: weights, KV cache and an activation reserve per rank (pure arithmetic).

The plan answers "does this request fit?" before a build that takes minutes. Numbers are per rank, since
every rank runs on its own GPU; the largest rank decides.

Activation reserve (stated, deliberately simple, and on the safe side):
  1 GiB fixed                         CUDA context, cuBLAS/TensorRT workspaces, NCCL buffers
+ max_num_tokens * act_bytes_per_token  live activations of one packed forward pass; per token:
      dtype_bytes * (2 * hidden + qkv_width + mlp_width)
      (residual stream in and out, the fused QKV output and the MLP up-projection(s) of this rank;
      TensorRT reuses buffers across layers, so one layer's live set bounds the peak)
+ max_batch_size * max_beam_width * vocab_size * 4   float32 logits of one generation step
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..archs.config import ModelConfig
from ..errors import ConfigError
from ..tensors.mapping import Mapping

GIB = 1 << 30
DEFAULT_GPU_MEMORY = 80 * GIB  # an A100/H100 80 GB card, when no GPU is visible and --gpu-memory is not given
FIXED_RESERVE = 1 * GIB
LOGITS_BYTES = 4  # logits_dtype float32 in the checkpoints trt-minitron writes
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1}  # fp8: the KV cache of kv_cache_quant_algo FP8


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    max_batch_size: int
    max_seq_len: int
    max_num_tokens: int
    max_beam_width: int
    gpu_memory_bytes: int
    gpu_memory_source: str  # "--gpu-memory", "local GPU <name>", "default (no GPU visible)"


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    tp_size: int
    pp_size: int
    kv_dtype: str
    weight_bytes_per_rank: int  # the largest rank
    weight_bytes_source: str  # "rank files" or "expected tensors"
    kv_cache_bytes_per_token: int  # per rank, the largest rank
    gpu_memory_bytes: int
    gpu_memory_source: str
    activation_reserve_bytes: int
    kv_cache_budget_bytes: int
    max_kv_tokens: int
    max_seq_len: int
    max_beam_width: int
    max_batch_size: int  # largest batch whose every sequence reaches max_seq_len
    requested_max_batch_size: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["activation_reserve_rule"] = (
            "1 GiB + max_num_tokens * dtype_bytes * (2*hidden + qkv_width + mlp_width) per rank "
            "+ max_batch_size * max_beam_width * vocab_size * 4 (float32 logits)")
        return d

    def check(self) -> None:
        """Raise a ConfigError naming the numbers when the request cannot fit."""
        gib = lambda b: f"{b / GIB:.2f} GiB"
        if self.kv_cache_budget_bytes <= 0:
            raise ConfigError(
                f"weights {gib(self.weight_bytes_per_rank)} + activation reserve "
                f"{gib(self.activation_reserve_bytes)} per rank exceed GPU memory {gib(self.gpu_memory_bytes)} "
                f"({self.gpu_memory_source}); use more tensor/pipeline parallel ranks or a larger GPU")
        if self.max_batch_size < 1:
            raise ConfigError(
                f"one sequence of --max-seq-len {self.max_seq_len} (x beam width {self.max_beam_width}) needs "
                f"{self.max_seq_len * self.max_beam_width} KV tokens, but only {self.max_kv_tokens} fit in "
                f"{gib(self.kv_cache_budget_bytes)} left for the KV cache; lower --max-seq-len")
        if self.requested_max_batch_size > self.max_batch_size:
            raise ConfigError(
                f"--max-batch-size {self.requested_max_batch_size} at --max-seq-len {self.max_seq_len} needs "
                f"{self.requested_max_batch_size * self.max_seq_len * self.max_beam_width} KV tokens, but only "
                f"{self.max_kv_tokens} fit ({gib(self.kv_cache_budget_bytes)} left after weights and reserve "
                f"of {gib(self.gpu_memory_bytes)}); the largest batch that fits is {self.max_batch_size}")


def kv_heads_per_rank(cfg: ModelConfig, tp: int) -> int:
    """KV heads one rank holds: split when tp <= kv heads, else each rank holds one (repeated) head."""
    return math.ceil(cfg.num_key_value_heads / tp)


def layers_per_rank(cfg: ModelConfig, mapping: Mapping) -> int:
    """Every pipeline stage holds num_hidden_layers / pp_size layers (Mapping.validate requires an even split)."""
    return len(mapping.layers(0, cfg.num_hidden_layers))


def kv_bytes_per_token(cfg: ModelConfig, mapping: Mapping, kv_dtype: str) -> int:
    """2 (K and V) * layers on the rank * kv heads on the rank * head size * bytes."""
    return (2 * layers_per_rank(cfg, mapping) * kv_heads_per_rank(cfg, mapping.tp_size) * cfg.head_dim
            * DTYPE_BYTES[kv_dtype])


def activation_reserve(cfg: ModelConfig, mapping: Mapping, dtype: str, req: PlanRequest) -> int:
    tp = mapping.tp_size
    qkv = (cfg.num_attention_heads // tp + 2 * kv_heads_per_rank(cfg, tp)) * cfg.head_dim
    mlp = (cfg.intermediate_size // tp) * (2 if cfg.is_gated else 1)
    per_token = DTYPE_BYTES[dtype] * (2 * cfg.hidden_size + qkv + mlp)
    logits = req.max_batch_size * req.max_beam_width * cfg.vocab_size * LOGITS_BYTES
    return FIXED_RESERVE + req.max_num_tokens * per_token + logits


def make_plan(cfg: ModelConfig, mapping: Mapping, dtype: str, weight_bytes_per_rank: int,
              weight_bytes_source: str, req: PlanRequest, kv_dtype: str | None = None) -> MemoryPlan:
    """The memory plan for one checkpoint and one build request.

    The KV cache is in `kv_dtype` ("fp8" for kv_cache_quant_algo FP8), by default the checkpoint dtype;
    activations stay in the checkpoint dtype (quantized formats dequantize or quantize per GEMM)."""
    kv_dtype = kv_dtype or dtype
    kv_tok = kv_bytes_per_token(cfg, mapping, kv_dtype)
    reserve = activation_reserve(cfg, mapping, dtype, req)
    budget = req.gpu_memory_bytes - weight_bytes_per_rank - reserve
    max_tokens = max(budget, 0) // kv_tok
    return MemoryPlan(
        tp_size=mapping.tp_size,
        pp_size=mapping.pp_size,
        kv_dtype=kv_dtype,
        weight_bytes_per_rank=weight_bytes_per_rank,
        weight_bytes_source=weight_bytes_source,
        kv_cache_bytes_per_token=kv_tok,
        gpu_memory_bytes=req.gpu_memory_bytes,
        gpu_memory_source=req.gpu_memory_source,
        activation_reserve_bytes=reserve,
        kv_cache_budget_bytes=budget,
        max_kv_tokens=max_tokens,
        max_seq_len=req.max_seq_len,
        max_beam_width=req.max_beam_width,
        max_batch_size=max_tokens // (req.max_seq_len * req.max_beam_width),
        requested_max_batch_size=req.max_batch_size,
    )
