"""LLM API arguments for a Hugging Face or ModelOpt unified folder, derived from the checkpoint: one home for what
both `--backend trtllm HF_DIR` (tensorrt_llm.LLM) and `serve HF_DIR` (trtllm-serve flags + YAML) pass.

Names are those of the LLM API of the PyTorch backend (NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py, read
at commit 0004396720054fd8e205cbf616f21f0b57c6b412, a post-1.2 main where TorchLlmArgs.backend is Literal["pytorch"]):
  BaseLlmArgs: tensor_parallel_size, pipeline_parallel_size, max_batch_size (default 2048), max_num_tokens (8192),
               max_seq_len (None: from the model config), kv_cache_config, enable_chunked_prefill (False)
  KvCacheConfig: free_gpu_memory_fraction (0.9, in [0, 1]), dtype ("auto" keeps the checkpoint's KV quantization;
               "fp8", "nvfp4" set it)
  TorchLlmArgs.cuda_graph_config -> CudaGraphConfig (= DecodeCudaGraphConfig): batch_sizes, max_batch_size (must
               equal max(batch_sizes) when both are given; default 128), enable_padding
On the 1.2 line serve.py @00209af149e7 builds KvCacheConfig(free_gpu_memory_fraction=...) and passes
enable_chunked_prefill, max_batch_size, max_num_tokens, max_seq_len, tensor/pipeline_parallel_size by these names;
cuda_graph_config's fields on 1.0-1.2 were not confirmed from a source of that line (the 1.3.0rc27 docs' YAML example
sets cuda_graph_config {enable_padding, max_batch_size} and kv_cache_config {dtype}).
The checkpoint's KV-cache quantization is read as ModelOpt 0.47 writes it (modelopt/torch/export/
unified_export_hf.py `_write_hf_export_config`, convert_hf_config.py `convert_hf_quant_config_format`):
hf_quant_config.json {"quantization": {"quant_algo", "kv_cache_quant_algo"}} and, in config.json, quantization_config
{"quant_method": "modelopt", "quant_algo", "kv_cache_scheme": {"num_bits": 8, "type": "float"} for FP8}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..archs.config import load_json
from ..errors import ConfigError

DEFAULT_MAX_NUM_TOKENS = 8192  # BaseLlmArgs.max_num_tokens default
DEFAULT_KV_FRACTION = 0.9  # KvCacheConfig.free_gpu_memory_fraction default
CUDA_GRAPH_MAX_BATCH = 128  # BaseCudaGraphConfig's default max_batch_size; each graph costs memory (up to ~200 MB)
KV_DTYPES = {"FP8": "fp8", "NVFP4": "nvfp4"}  # ModelOpt kv_cache_quant_algo -> KvCacheConfig.dtype
HF_QUANT_CONFIG = "hf_quant_config.json"


@dataclass(frozen=True)
class HfCheckpoint:
    """The facts of a Hugging Face folder the LLM API settings depend on."""

    path: Path
    num_attention_heads: int | None
    num_hidden_layers: int | None
    max_position_embeddings: int | None
    quant_algo: str | None
    kv_cache_quant_algo: str | None
    quant_source: str | None  # where the quantization was read, for messages

    @property
    def label(self) -> str:
        if self.quant_algo is None and self.kv_cache_quant_algo is None:
            return "unquantized"
        kv = f" + {self.kv_cache_quant_algo} KV cache" if self.kv_cache_quant_algo else ""
        return f"{self.quant_algo or 'unquantized weights'}{kv} ({self.quant_source})"


def _int(cfg: dict, *names: str) -> int | None:
    for n in names:
        v = cfg.get(n)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _algo(value, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string or null, found {value!r}")


def _kv_scheme(scheme, where: str) -> str | None:
    """quantization_config.kv_cache_scheme as ModelOpt writes it: the FP8 dict, or the algorithm's name."""
    if scheme is None or isinstance(scheme, str):
        return scheme
    if isinstance(scheme, dict) and scheme.get("type") == "float" and scheme.get("num_bits") == 8:
        return "FP8"
    raise ConfigError(f"{where}: kv_cache_scheme {scheme!r} is not one ModelOpt writes (FP8: num_bits 8, type float)")


def read_quantization(path: Path, cfg: dict) -> tuple[str | None, str | None, str | None]:
    """(quant_algo, kv_cache_quant_algo, source) of a ModelOpt unified checkpoint; Nones when unquantized."""
    found: list[tuple[str | None, str | None, str]] = []
    hq = path / HF_QUANT_CONFIG
    if hq.is_file():
        q = load_json(hq).get("quantization")
        if not isinstance(q, dict):
            raise ConfigError(f"{hq} has no \"quantization\" object; is it ModelOpt's hf_quant_config.json?")
        found.append((_algo(q.get("quant_algo"), f"{hq} quant_algo"),
                      _algo(q.get("kv_cache_quant_algo"), f"{hq} kv_cache_quant_algo"), HF_QUANT_CONFIG))
    qc = cfg.get("quantization_config")
    if isinstance(qc, dict) and qc.get("quant_method") == "modelopt":
        where = f"{path / 'config.json'} quantization_config"
        kv = _kv_scheme(qc.get("kv_cache_scheme"), where) if "kv_cache_scheme" in qc else \
            _algo(qc.get("kv_cache_quant_algo"), f"{where}.kv_cache_quant_algo")
        found.append((_algo(qc.get("quant_algo"), f"{where}.quant_algo"), kv, "config.json quantization_config"))
    if not found:
        return None, None, None
    if len(found) == 2 and found[0][:2] != found[1][:2]:
        raise ConfigError(f"{path}: {HF_QUANT_CONFIG} says quant_algo {found[0][0]}, KV {found[0][1]} but config.json "
                          f"quantization_config says {found[1][0]}, KV {found[1][1]}; re-export the checkpoint")
    return found[0][0], found[0][1], " and ".join(f[2] for f in found)


def read_hf_checkpoint(path: str | Path) -> HfCheckpoint:
    """config.json and the quantization files of an HF folder (one line on anything unreadable)."""
    path = Path(path)
    cfg = load_json(path / "config.json")
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    algo, kv, source = read_quantization(path, cfg)
    return HfCheckpoint(path, _int(text, "num_attention_heads"), _int(text, "num_hidden_layers"),
                        _int(text, "max_position_embeddings"), algo, kv, source)


@dataclass(frozen=True, kw_only=True)
class LlmApiSettings:
    """What trt-minitron passes to the LLM API for one folder (values resolved; names in the methods below)."""

    tp_size: int
    pp_size: int
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int
    kv_cache_free_gpu_memory_fraction: float
    kv_cache_dtype: str  # "auto" or a KV_DTYPES value
    cuda_graph_batch_sizes: tuple[int, ...]

    @property
    def enable_chunked_prefill(self) -> bool:
        """A prompt longer than max_num_tokens can only be scheduled in chunks."""
        return self.max_num_tokens < self.max_seq_len

    def kv_cache_config(self) -> dict:
        """KvCacheConfig fields (the fraction too: a YAML kv_cache_config replaces the one the flags built)."""
        out = {"free_gpu_memory_fraction": self.kv_cache_free_gpu_memory_fraction}
        if self.kv_cache_dtype != "auto":
            out["dtype"] = self.kv_cache_dtype
        return out

    def cuda_graph_config(self) -> dict:
        """CudaGraphConfig fields: graphs for these batch sizes, other batches padded up to the next one."""
        return {"batch_sizes": list(self.cuda_graph_batch_sizes), "enable_padding": True}

    def extra_options(self) -> dict:
        """The settings trtllm-serve has no flag for: its --extra_llm_api_options YAML (TorchLlmArgs names)."""
        out = {"kv_cache_config": self.kv_cache_config(), "cuda_graph_config": self.cuda_graph_config()}
        if self.enable_chunked_prefill:
            out["enable_chunked_prefill"] = True
        return out

    def llm_kwargs(self) -> dict:
        """LLM(...) keyword arguments except model/tokenizer; kv_cache_config and cuda_graph_config as dicts
        for the caller to turn into KvCacheConfig / CudaGraphConfig."""
        return {"tensor_parallel_size": self.tp_size, "pipeline_parallel_size": self.pp_size,
                "max_batch_size": self.max_batch_size, "max_num_tokens": self.max_num_tokens,
                "max_seq_len": self.max_seq_len, **self.extra_options()}


def graph_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two up to min(max_batch_size, 128), and that bound itself."""
    top = min(max_batch_size, CUDA_GRAPH_MAX_BATCH)
    sizes = [1 << i for i in range(top.bit_length()) if 1 << i <= top]
    return tuple(sizes if sizes[-1] == top else sizes + [top])


def derive(ckpt: HfCheckpoint, *, tp_size: int | None = None, pp_size: int | None = None,
           max_batch_size: int | None = None, max_num_tokens: int | None = None, max_seq_len: int | None = None,
           kv_cache_free_gpu_memory_fraction: float | None = None) -> LlmApiSettings:
    """Resolve every setting: asked values are checked against the checkpoint, the rest come from it (max_seq_len,
    KV-cache dtype) or from the LLM API defaults; max_batch_size defaults to the CUDA-graph bound (128)."""
    tp, pp = tp_size or 1, pp_size or 1
    heads, layers, limit = ckpt.num_attention_heads, ckpt.num_hidden_layers, ckpt.max_position_embeddings
    if heads is not None and heads % tp:
        raise ConfigError(f"tp size {tp} does not divide num_attention_heads={heads} of {ckpt.path}")
    if layers is not None and pp > layers:
        raise ConfigError(f"pp size {pp} is more than the {layers} layers of {ckpt.path}")
    seq = max_seq_len or limit
    if seq is None:
        raise ConfigError(f"{ckpt.path / 'config.json'} states no max_position_embeddings; pass --max-seq-len")
    if limit is not None and seq > limit:
        raise ConfigError(f"max seq len {seq} exceeds the model's max_position_embeddings={limit} ({ckpt.path})")
    kv = ckpt.kv_cache_quant_algo
    if kv is not None and kv not in KV_DTYPES:
        raise ConfigError(f"{ckpt.path}: kv_cache_quant_algo {kv!r} ({ckpt.quant_source}) has no LLM API KV-cache "
                          f"dtype known to trt-minitron; supported: {', '.join(KV_DTYPES)}")
    batch = max_batch_size or CUDA_GRAPH_MAX_BATCH
    return LlmApiSettings(
        tp_size=tp, pp_size=pp, max_batch_size=batch, max_num_tokens=max_num_tokens or DEFAULT_MAX_NUM_TOKENS,
        max_seq_len=seq, kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction or DEFAULT_KV_FRACTION,
        kv_cache_dtype=KV_DTYPES[kv] if kv else "auto", cuda_graph_batch_sizes=graph_batch_sizes(batch))
