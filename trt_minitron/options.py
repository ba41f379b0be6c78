"""Every command's options and their defaults, in one module that imports neither torch nor numpy, nor any
other module of the package but errors and outputs: what the user asked for, checked before anything runs.

The CLI (commands/) takes each flag's default from these classes and imports a command's implementation
only when that command runs, so `trt-minitron --help` starts at once. What a run builds from them (a
backend's Sampling, bench's request parameters and sweep points) lives where it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from itertools import combinations
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError, DatasetError
from .outputs import absolute, check_output_file

# --- export ------------------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("trtllm", "hf")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    src: str
    output: Path
    dtype: str = "bfloat16"
    tp: int = 1
    pp: int = 1
    overwrite: bool = False
    dry_run: bool = False
    format: str = "trtllm"


# --- verify ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class VerifyOptions:
    checkpoint: Path  # a TensorRT-LLM checkpoint, a Hugging Face folder or a ModelOpt unified checkpoint
    reference: str  # its source: HF folder, .gguf, .nemo or hub id
    prompt: str | None = None  # None: a fixed ~150-token paragraph (unquantized checkpoints)
    full: bool = False  # whole models instead of layer by layer (unquantized checkpoints)
    # quantized checkpoints: CNN/DailyMail articles (None: the hub's 3.0.0 test split) x tokens each
    dataset_file: Path | None = None
    num_samples: int = 8
    max_tokens: int = 128
    prove_calibration: bool = True  # quantized TensorRT-LLM checkpoints: recalibrate from the recorded recipe
    max_kl: float | None = None  # quantized checkpoints: fail when the mean KL (nats/token) exceeds it
    min_top1: float | None = None  # quantized checkpoints: fail when the top-1 agreement (a fraction) is below it

    def gate(self) -> str:
        """The user's gate on a quantized checkpoint's cost, as said on verify's cost line ("" when none)."""
        parts = ([f"--max-kl {self.max_kl:g}"] if self.max_kl is not None else []) + (
            [f"--min-top1 {self.min_top1:g}"] if self.min_top1 is not None else [])
        return ", ".join(parts)

    def validate(self) -> None:
        if self.max_kl is not None and not (math.isfinite(self.max_kl) and self.max_kl >= 0):
            raise ConfigError(f"--max-kl must be a finite number >= 0 (nats per token), got {self.max_kl}")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise ConfigError(f"--min-top1 must be a fraction between 0 and 1 (0.9 = 90 %), got {self.min_top1}")
        if self.prompt is not None and not self.prompt.strip():
            raise ConfigError("--prompt is empty: give some text, or omit --prompt for the default paragraph")
        if self.num_samples < 1:
            raise DatasetError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.max_tokens < 8:
            raise ConfigError(f"--max-tokens must be >= 8, got {self.max_tokens}")


# --- build -------------------------------------------------------------------------------------------------------

# DefaultPluginDtype (plugin/plugin.py @c20322ffd3dc) restricted to the float dtypes a checkpoint can have;
# gemm_plugin also takes "fp8" (FP8 checkpoints only: FP8Linear then calls the FP8 GEMM plugin).
PLUGIN_CHOICES = ("auto", "bfloat16", "float16", "float32", "disable")
FP8_GEMM = "fp8"


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    checkpoint: Path
    output: Path | None = None  # required unless dry_run
    max_batch_size: int = 8
    max_input_len: int = 1024
    max_seq_len: int = 2048
    max_num_tokens: int = 8192
    max_beam_width: int = 1
    gpt_attention_plugin: str = "auto"  # = the checkpoint dtype
    gemm_plugin: str = "auto"
    workers: int = 1
    overwrite: bool = False
    dry_run: bool = False
    gpu_memory_gib: float | None = None  # default: the local GPU's memory, else 80 GiB

    def validate(self) -> None:
        for name in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "max_beam_width",
                     "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_input_len > self.max_seq_len:
            raise ConfigError(f"--max-input-len {self.max_input_len} is larger than --max-seq-len {self.max_seq_len}")
        if self.max_num_tokens < self.max_input_len:
            raise ConfigError(f"--max-num-tokens {self.max_num_tokens} is smaller than --max-input-len "
                              f"{self.max_input_len}: a full-length prompt could not be scheduled")
        for name in ("gpt_attention_plugin", "gemm_plugin"):
            if getattr(self, name) not in PLUGIN_CHOICES and (name, getattr(self, name)) != ("gemm_plugin", FP8_GEMM):
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}; choose one of "
                                  f"{', '.join(PLUGIN_CHOICES)}")
        if self.gpt_attention_plugin == "disable":
            raise ConfigError("--gpt-attention-plugin disable is not possible: the paged KV cache and "
                              "remove-input-padding (always on here) need the GPT attention plugin")
        if self.gpu_memory_gib is not None and not (math.isfinite(self.gpu_memory_gib) and self.gpu_memory_gib > 0):
            raise ConfigError(f"--gpu-memory must be a positive, finite number of GiB, got {self.gpu_memory_gib}")
        if not self.dry_run and self.output is None:
            raise ConfigError("--output ENGINE_DIR is required (or pass --dry-run)")


# --- generation (generate, summarize) ----------------------------------------------------------------------------

BACKENDS = ("trtllm", "hf", "torch", "openai")
DEFAULT_TEMPLATE = "{article} TL;DR: "  # summarize's and bench's --prompt-template (TensorRT-LLM's summarize.py)
APIS = ("completions", "chat")  # OpenAI endpoints: /v1/completions (prompt text), /v1/chat/completions


def check_sampling(*, max_new_tokens: int, num_beams: int, temperature: float, top_p: float, top_k: int) -> None:
    """Reject decoding settings no backend can honour (the one rule: options and backends.base.Sampling ask here)."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_beams < 1:
        raise ConfigError(f"num_beams must be >= 1, got {num_beams}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0, got {top_k}")


def normalize_url(url: str) -> str:
    """`HOST:PORT`, `http://HOST:PORT` or `http://HOST:PORT/v1` -> the base URL the client expects (`.../v1`)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not a server URL; expected http://HOST:PORT/v1")
    try:
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise ConfigError(f"{url!r} has an invalid port; expected http://HOST:PORT/v1") from None
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


TIMEOUT_KEYS = {"total": "total_s", "connect": "connect_s", "first-byte": "first_byte_s"}


@dataclass(frozen=True)
class Timeouts:
    """--request-timeout: limits on one request, in seconds: the TCP connection, the first byte of the answer (its
    HTTP headers: servers that stream send them at once), and the whole request up to its last chunk. A part above
    the total is the total. What the user asked for, as SLO is; backends/openai_connection.py applies it."""

    total_s: float = 600.0
    connect_s: float = 10.0
    first_byte_s: float = 60.0

    @property
    def connect(self) -> float:
        return min(self.connect_s, self.total_s)

    @property
    def first_byte(self) -> float:
        return min(self.first_byte_s, self.total_s)

    @classmethod
    def parse(cls, text: str | None) -> "Timeouts":
        """`S` (the total) or `total:S,connect:S,first-byte:S` (any subset; the others keep their defaults); None:
        the defaults."""
        flag = "--request-timeout"
        values = {}
        for item in (i for i in (text or "").replace(" ", ",").split(",") if i):
            key, sep, value = item.rpartition(":") if ":" in item else ("total", ":", item)
            if key not in TIMEOUT_KEYS:
                raise ConfigError(f"{flag} {text!r}: unknown part {key!r}; use SECONDS or "
                                  f"{','.join(k + ':S' for k in TIMEOUT_KEYS)}")
            try:
                values[TIMEOUT_KEYS[key]] = float(value)
            except ValueError:
                raise ConfigError(f"{flag} {text!r}: {value!r} is not a number of seconds") from None
        out = cls(**values)
        out.validate()
        return out

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                key = next(k for k, v in TIMEOUT_KEYS.items() if v == f.name)
                raise ConfigError(f"--request-timeout {key} must be a positive number of seconds, got {value}")


TIMEOUT_HELP = ("limits on each request to the server, in seconds: the total (a bare number), the TCP connection and "
                "the first byte of the answer; default " +
                ",".join(f"{k}:{getattr(Timeouts(), v):g}" for k, v in TIMEOUT_KEYS.items()) +
                " (a part above the total is the total)")


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """One `--backend KIND MODEL` pair plus the settings every backend may need."""

    kind: str
    model: str
    device: str = "auto"
    dtype: str = "auto"
    tokenizer: str | None = None
    # trtllm runtime limits (ModelRunnerCpp.from_dir); ignored by hf/torch.
    max_batch_size: int = 8
    max_input_len: int | None = None  # None: the engine's own limit
    max_output_len: int = 100
    max_beam_width: int = 1
    # trtllm on a Hugging Face folder (LLM API): parallelism and KV-cache share; engines carry their own.
    tp_size: int | None = None
    pp_size: int | None = None
    kv_cache_free_gpu_memory_fraction: float | None = None
    # openai: MODEL is the server URL; the name it serves (default: the only one /v1/models lists).
    served_model: str | None = None
    concurrency: int = 1  # openai: requests in flight
    request_timeout: Timeouts = field(default_factory=Timeouts)  # openai: limits on each request

    def validate(self) -> None:
        if self.kind not in BACKENDS:
            raise ConfigError(f"unknown backend {self.kind!r}; choose one of {', '.join(BACKENDS)}")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {self.concurrency}")
        for name in ("tp_size", "pp_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        frac = self.kv_cache_free_gpu_memory_fraction
        if frac is not None and not 0 < frac <= 1:
            raise ConfigError(f"--kv-cache-free-gpu-memory-fraction must be in (0, 1], got {frac}")
        if self.kind == "openai":
            normalize_url(self.model)
            self.request_timeout.validate()
        elif not Path(self.model).exists():
            raise ConfigError(f"{self.kind} model path {self.model} does not exist")


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    backend: BackendSpec
    prompts: tuple[str, ...]
    max_new_tokens: int = 64
    temperature: float = 0.0  # greedy unless > 0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0
    chat: bool = False
    stream: bool = False

    def validate(self) -> None:
        if not self.prompts:
            raise ConfigError("give at least one --prompt")
        check_sampling(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, temperature=self.temperature,
                       top_p=self.top_p, top_k=self.top_k)
        self.backend.validate()


@dataclass(frozen=True, kw_only=True)
class SummarizeOptions:
    backends: tuple[BackendSpec, ...]
    dataset_file: Path | None = None  # None: the hub CNN/DailyMail 3.0.0 test split
    dataset_cache_dir: str | None = None
    num_samples: int = 20
    batch_size: int = 1
    max_input_len: int = 923
    output_len: int = 100
    num_beams: int = 1
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    prompt_template: str = DEFAULT_TEMPLATE
    add_special_tokens: bool = True
    warmup: bool = True
    check_accuracy: bool = False
    rouge1_threshold: float = 15.0
    max_rouge_drop: float | None = None
    bootstrap_samples: int = 1000
    report: Path | None = None
    overwrite: bool = False  # replace an existing --report that trt-minitron did not write
    concurrency: int = 1  # openai backends: requests in flight (all prompts go out as one stream of requests)

    def validate(self) -> None:
        if not self.backends:
            raise ConfigError("give at least one --backend KIND MODEL")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_rouge_drop is not None and len(self.backends) < 2:
            raise ConfigError("--max-rouge-drop compares two backends; give a second --backend")
        check_sampling(max_new_tokens=self.output_len, num_beams=self.num_beams, temperature=self.temperature,
                       top_p=self.top_p, top_k=self.top_k)
        for b in self.backends:
            b.validate()
        if self.report is not None:  # before any sample runs, not after
            check_output_file(self.report, flag="--report", overwrite=self.overwrite, example="summarize.json")


# --- quantize ----------------------------------------------------------------------------------------------------

HUB_CALIBRATION_NAME = "cnn_dailymail"


@dataclass(frozen=True, kw_only=True)
class CalibSettings:
    dataset: str = HUB_CALIBRATION_NAME  # "cnn_dailymail" (the hub's train split) or a .jsonl/.json/.parquet file
    size: int = 512  # articles
    max_len: int = 512  # tokens per article
    batch_size: int = 8

    def validate(self) -> None:
        for name, value, low in (("--calib-size", self.size, 1), ("--calib-max-len", self.max_len, 2),
                                 ("--batch-size", self.batch_size, 1)):
            if value < low:
                raise DatasetError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions:
    src: str
    output: Path
    qformat: str
    group_size: int | None = None  # int4_awq / w4a8_awq: 128 (default) or 64
    kv_cache_dtype: str | None = None
    calib: CalibSettings = field(default_factory=CalibSettings)
    tp: int = 1
    pp: int = 1
    format: str = "trtllm"
    dtype: str = "bfloat16"
    device: str = "auto"
    overwrite: bool = False
    tokenizer: Path | None = None  # a folder with tokenizer files, for sources that carry none
    whole_model: bool = False  # calibrate the whole model at once (the earlier path) instead of layer by layer
    resume: bool = False  # keep finished layers beside the output when interrupted; continue them


# --- serve -------------------------------------------------------------------------------------------------------

SERVERS = ("auto", "trtllm", "transformers")


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    server: str = "auto"  # auto | trtllm | transformers (HF folders only; engines always use trtllm-serve)
    tokenizer: Path | None = None
    max_batch_size: int | None = None  # None: the engine's value (engines) or the server's default
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    tp_size: int | None = None  # HF folders under trtllm-serve; engines carry their own
    pp_size: int | None = None
    kv_cache_free_gpu_memory_fraction: float | None = None
    mpirun: bool = False
    continuous_batching: bool = False  # transformers serve
    device: str | None = None  # transformers serve
    dtype: str | None = None  # transformers serve
    ready_timeout_s: float = 1800.0
    stop_timeout_s: float = 30.0
    dry_run: bool = False
    llm_api_options: Path | None = None  # HF folders under trtllm-serve: where the derived YAML goes (default ./)
    overwrite: bool = False  # replace an existing --llm-api-options file that trt-minitron did not write
    extra_args: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.server not in SERVERS:
            raise ConfigError(f"unknown --server {self.server!r}; choose one of {', '.join(SERVERS)}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be in 1..65535, got {self.port}")
        for name in ("max_batch_size", "max_num_tokens", "max_seq_len", "tp_size", "pp_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        frac = self.kv_cache_free_gpu_memory_fraction
        if frac is not None and not 0 < frac <= 1:
            raise ConfigError(f"--kv-cache-free-gpu-memory-fraction must be in (0, 1], got {frac}")
        if self.ready_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ConfigError("--ready-timeout and --stop-timeout must be > 0 seconds")


# --- bench -------------------------------------------------------------------------------------------------------

BENCH_DATASETS = ("cnn_dailymail", "random")
SLO_KEYS = ("ttft", "tpot", "e2el")


@dataclass(frozen=True)
class SLO:
    """Goodput targets in milliseconds (None: not constrained)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2el_ms))

    def to_dict(self) -> dict:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2el_ms": self.e2el_ms}


def parse_slo(items: list[str] | tuple[str, ...]) -> SLO:
    """`ttft:MS tpot:MS e2el:MS` (any subset) -> SLO."""
    values: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or key not in SLO_KEYS:
            raise ConfigError(f"--goodput {item!r}: expected KEY:MS with KEY one of {', '.join(SLO_KEYS)}")
        try:
            ms = float(value)
        except ValueError:
            raise ConfigError(f"--goodput {item!r}: {value!r} is not a number of milliseconds") from None
        if ms <= 0:
            raise ConfigError(f"--goodput {item!r}: the target must be > 0 ms")
        values[f"{key}_ms"] = ms
    return SLO(**values)


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    url: str
    served_model: str | None = None
    tokenizer: str | None = None
    api: str = "completions"
    dataset: str = "cnn_dailymail"
    dataset_file: Path | None = None
    dataset_cache_dir: str | None = None
    num_requests: int = 16
    input_len: int = 923  # cnn_dailymail: the prompt budget (summarize's); random: prompt tokens
    output_len: int = 100
    prompt_template: str = DEFAULT_TEMPLATE
    concurrency: tuple[int, ...] = ()
    request_rate: tuple[float, ...] = ()
    max_concurrency: int | None = None  # cap in flight under --request-rate
    slo: SLO = field(default_factory=SLO)
    temperature: float = 0.0
    ignore_eos: bool = False
    seed: int = 0
    request_timeout: Timeouts = field(default_factory=Timeouts)
    max_duration_s: float | None = None  # per sweep point
    warmup_requests: int = 1
    bootstrap_samples: int = 1000
    report: Path | None = None
    plot: Path | None = None
    csv: Path | None = None  # one row of aggregates per sweep point
    overwrite: bool = False  # replace an existing --report / --plot / --csv that trt-minitron did not write

    def validate(self) -> None:
        normalize_url(self.url)
        if self.dataset not in BENCH_DATASETS:
            raise ConfigError(f"unknown --dataset {self.dataset!r}; choose one of {', '.join(BENCH_DATASETS)}")
        if self.dataset == "random" and self.dataset_file is not None:
            raise ConfigError("--dataset-file holds CNN/DailyMail-style records; it cannot be used with --dataset random")
        for name in ("num_requests", "input_len", "output_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.concurrency and self.request_rate:
            raise ConfigError("give --concurrency or --request-rate, not both (cap a rate with --max-concurrency)")
        if any(c < 1 for c in self.concurrency):
            raise ConfigError(f"--concurrency values must be >= 1, got {list(self.concurrency)}")
        if any(not r > 0 for r in self.request_rate):
            raise ConfigError(f"--request-rate values must be > 0 (inf = all at once), got {list(self.request_rate)}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ConfigError(f"--max-duration must be > 0 s, got {self.max_duration_s}")
        if self.warmup_requests < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup_requests}")
        if self.api not in APIS:
            raise ConfigError(f"unknown API {self.api!r}; choose one of {', '.join(APIS)}")
        self.request_timeout.validate()
        files = [(flag, path, example) for flag, path, example in (
            ("--report", self.report, "bench.json"), ("--plot", self.plot, "bench.png"), ("--csv", self.csv, "bench.csv"))
            if path is not None]
        for (flag, path, _), (other, same, _) in combinations(files, 2):
            if absolute(path) == absolute(same):
                raise ConfigError(f"{flag} and {other} name the same file {path}")
        for flag, path, example in files:  # before the run, not after it
            check_output_file(path, flag=flag, overwrite=self.overwrite, example=example)
