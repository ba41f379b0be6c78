"""Which server runs a model folder, and its exact command line (nothing is started here).

- TensorRT-LLM engine folder (from `build`): `trtllm-serve ENGINE --backend tensorrt` with the engine's own
  limits (max batch size, max num tokens, max seq len, beam width, tp/pp from config.json) and its
  tokenizer (the engine folder's copy, else the checkpoint the manifest names). trtllm-serve starts the
  tp*pp workers itself on one node; `--mpirun` wraps it as `mpirun -n WORLD trtllm-llmapi-launch
  trtllm-serve ...`, the documented form for an MPI world you launch (several nodes, Slurm).
- Hugging Face folder (also `export --format hf` / `quantize --format hf` output): `trtllm-serve` with its PyTorch
  backend, tuned from the checkpoint (pytorch_route.py: flags and an --extra_llm_api_options YAML), when
  trtllm-serve is installed, else `transformers serve` (`--server` chooses explicitly).
The installed TensorRT-LLM decides what it can serve (trtllm/install.py): an engine on 1.3+ or an HF folder on a
TensorRT-LLM without the PyTorch LLM API is one line naming the version and the way out.
Options follow tensorrt_llm/commands/serve.py (NVIDIA/TensorRT-LLM, read at commit 00209af1) and
`transformers serve --help` (transformers 5.24).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..archs.config import load_json
from ..errors import ConfigError, MissingDependencyError
from ..options import ServeOptions
from ..outputs import TOKENIZER_CORE
from ..trtllm import install as trtllm_install
from ..trtllm.folders import model_kind
from .pytorch_route import OptionsFile, pytorch_argv

MANIFEST = "trt_minitron_manifest.json"  # written by build (build/run.py)
TRTLLM_HINT = ("trtllm-serve (TensorRT-LLM) is not installed here; use the image: docker build -f docker/Dockerfile "
               "--target serve -t trt-minitron:serve . && docker run --gpus all -p 8000:8000 -v $PWD/engines:/engines "
               "trt-minitron:serve serve /engines/NAME (or pip install tensorrt-llm on a CUDA machine)")
TRANSFORMERS_HINT = "transformers serve needs its serving extra: pip install 'trt-minitron[serve]' " \
                    "(or pip install 'transformers[serving]')"


@dataclass(frozen=True)
class Launch:
    """What will run: the one-line route, the exact argv, where it answers."""

    route: str
    argv: tuple[str, ...]
    base_url: str  # http://HOST:PORT/v1 as clients reach it
    health_url: str
    files: tuple[OptionsFile, ...] = ()  # written before the server starts (never on --dry-run)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class EngineInfo:
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int
    max_beam_width: int
    tp_size: int
    pp_size: int
    tokenizer: Path | None

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size


def read_engine(path: Path) -> EngineInfo:
    """The limits an engine was built with (config.json build_config), its mapping, and where its tokenizer is."""
    cfg = load_json(path / "config.json")
    build, mapping = cfg.get("build_config") or {}, (cfg.get("pretrained_config") or {}).get("mapping") or {}
    missing = [k for k in ("max_batch_size", "max_num_tokens", "max_seq_len") if not isinstance(build.get(k), int)]
    if missing:
        raise ConfigError(f"{path / 'config.json'} lacks build_config {missing}; is it a TensorRT-LLM engine folder?")
    tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    world = len(list(path.glob("rank*.engine")))
    if world != tp * pp:
        raise ConfigError(f"{path} holds {world} rank*.engine file(s) but its mapping says tp {tp} x pp {pp}")
    return EngineInfo(build["max_batch_size"], build["max_num_tokens"], build["max_seq_len"],
                      int(build.get("max_beam_width", 1)), tp, pp, _engine_tokenizer(path))


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_CORE)


def _engine_tokenizer(path: Path) -> Path | None:
    if _has_tokenizer(path):
        return path
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            ckpt = Path(json.loads(manifest.read_text())["checkpoint"]["path"])
        except (ValueError, KeyError, TypeError):
            return None
        if _has_tokenizer(ckpt):
            return ckpt
    return None


def _client_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _url(host: str, port: int, path: str) -> str:
    h = _client_host(host)
    return f"http://{'[' + h + ']' if ':' in h else h}:{port}{path}"


def _limit(flag: str, asked: int | None, built: int) -> int:
    if asked is not None and asked > built:
        raise ConfigError(f"--{flag} {asked} exceeds the engine's {built} (fixed at build time); ask for <= {built} "
                          "or rebuild")
    return built if asked is None else asked


def _trtllm_exe(dry_run: bool) -> str:
    exe = shutil.which("trtllm-serve")
    if exe is None and not dry_run:
        raise MissingDependencyError(TRTLLM_HINT)
    return exe or "trtllm-serve"


def _mpi_prefix(world: int, dry_run: bool) -> list[str]:
    if shutil.which("mpirun") is None and not dry_run:
        raise MissingDependencyError("--mpirun needs an MPI launcher (mpirun) on PATH; the TensorRT-LLM image has one")
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return ["mpirun", "-n", str(world), *root, "trtllm-llmapi-launch"]


def engine_argv(opts: ServeOptions, info: EngineInfo) -> tuple[str, list[str]]:
    """The route line and trtllm-serve command for an engine folder."""
    if opts.server == "transformers":
        raise ConfigError("transformers serve cannot run a TensorRT engine; drop --server or use --server trtllm")
    found = trtllm_install.detect()
    if found is not None and not found.engine_path:
        raise MissingDependencyError(found.engine_refusal(f"serving the engine folder {opts.model}"))
    for name, own in (("tp_size", info.tp_size), ("pp_size", info.pp_size)):
        if getattr(opts, name) not in (None, own):
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(opts, name)}: this engine was built for {own}")
    tokenizer = opts.tokenizer or info.tokenizer
    if tokenizer is None:
        raise ConfigError(f"no tokenizer in {opts.model} nor in the checkpoint its manifest names; pass --tokenizer DIR")
    argv = [_trtllm_exe(opts.dry_run), str(opts.model), "--backend", "tensorrt", "--tokenizer", str(tokenizer),
            "--host", opts.host, "--port", str(opts.port),
            "--max_batch_size", str(_limit("max-batch-size", opts.max_batch_size, info.max_batch_size)),
            "--max_num_tokens", str(_limit("max-num-tokens", opts.max_num_tokens, info.max_num_tokens)),
            "--max_seq_len", str(_limit("max-seq-len", opts.max_seq_len, info.max_seq_len)),
            "--max_beam_width", str(info.max_beam_width),
            "--tp_size", str(info.tp_size), "--pp_size", str(info.pp_size)]
    if opts.kv_cache_free_gpu_memory_fraction is not None:
        argv += ["--kv_cache_free_gpu_memory_fraction", str(opts.kv_cache_free_gpu_memory_fraction)]
    if opts.mpirun:
        argv = _mpi_prefix(info.world_size, opts.dry_run) + ["trtllm-serve"] + argv[1:]
    how = "under mpirun + trtllm-llmapi-launch" if opts.mpirun else "workers started by trtllm-serve"
    route = (f"TensorRT engine (tp {info.tp_size}, pp {info.pp_size}, {info.world_size} GPU(s), {how}) "
             "with trtllm-serve --backend tensorrt")
    return route, argv


def hf_argv(opts: ServeOptions) -> tuple[str, list[str], tuple[OptionsFile, ...]]:
    """The route line, command and files to write for a Hugging Face folder: trtllm-serve (PyTorch) if installed,
    else transformers serve."""
    have_trtllm = shutil.which("trtllm-serve") is not None
    use_trtllm = opts.server == "trtllm" or (opts.server == "auto" and have_trtllm)
    if use_trtllm:
        exe = _trtllm_exe(opts.dry_run)
        found = trtllm_install.detect()
        if found is not None and not found.llm_api:
            raise MissingDependencyError(found.hf_refusal(f"serving the Hugging Face folder {opts.model}"))
        route, argv, files = pytorch_argv(opts, exe)
        if found is not None:
            route += f" (tensorrt_llm {found.version})"
        if opts.mpirun:
            world = int(argv[argv.index("--tp_size") + 1]) * int(argv[argv.index("--pp_size") + 1])
            argv = _mpi_prefix(world, opts.dry_run) + ["trtllm-serve"] + argv[1:]
        return route, argv, files
    if opts.llm_api_options is not None:
        raise ConfigError("--llm-api-options is the trtllm-serve YAML; transformers serve has no equivalent")
    unsupported = [f"--{n.replace('_', '-')}" for n in ("max_batch_size", "max_seq_len", "tp_size", "pp_size",
                                                         "kv_cache_free_gpu_memory_fraction", "tokenizer")
                   if getattr(opts, n) is not None]
    if opts.max_num_tokens is not None and not opts.continuous_batching:
        unsupported.append("--max-num-tokens (only with --continuous-batching)")
    if opts.mpirun:
        unsupported.append("--mpirun")
    if unsupported:
        raise ConfigError(f"transformers serve has no equivalent of {', '.join(unsupported)}; drop them, or serve "
                          "with trtllm-serve (TensorRT-LLM)")
    exe = Path(sys.executable).parent / "transformers"
    exe_s = str(exe) if exe.is_file() else shutil.which("transformers")
    if not opts.dry_run and (exe_s is None or any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn"))):
        raise MissingDependencyError(TRANSFORMERS_HINT)
    argv = [exe_s or "transformers", "serve", str(opts.model), "--host", opts.host, "--port", str(opts.port)]
    if opts.continuous_batching:
        argv.append("--continuous-batching")
        if opts.max_num_tokens is not None:
            argv += ["--cb-max-batch-tokens", str(opts.max_num_tokens)]
    for flag in ("device", "dtype"):
        if getattr(opts, flag) is not None:
            argv += [f"--{flag}", getattr(opts, flag)]
    why = "" if opts.server == "transformers" else " (trtllm-serve not installed)"
    return f"Hugging Face folder with transformers serve{why}", argv, ()


def check_unquantized_folder(folder: Path, *, scan_weights: bool) -> None:
    """export's checks of a plain Hugging Face folder before a server loads it (a ModelOpt unified checkpoint is not
    something export reads: its loader checks it)."""
    from ..sources.checks import check_model_folder
    from ..trtllm.llmapi_args import read_hf_checkpoint

    ckpt = read_hf_checkpoint(folder)
    if ckpt.quant_algo is None and ckpt.kv_cache_quant_algo is None:
        check_model_folder(folder, scan_weights=scan_weights)


def plan_launch(opts: ServeOptions) -> Launch:
    """Pick the server and build its exact command line (nothing is started)."""
    opts.validate()
    kind = model_kind(Path(opts.model))
    files: tuple[OptionsFile, ...] = ()
    if kind == "engine":
        if opts.llm_api_options is not None:
            raise ConfigError("--llm-api-options applies to Hugging Face folders; an engine carries its settings")
        route, argv = engine_argv(opts, read_engine(Path(opts.model)))
    else:
        if opts.continuous_batching and opts.server == "trtllm":
            raise ConfigError("--continuous-batching is a transformers serve flag (trtllm-serve always batches "
                              "in flight)")
        check_unquantized_folder(Path(opts.model), scan_weights=not opts.dry_run)
        route, argv, files = hf_argv(opts)
    argv += list(opts.extra_args)
    return Launch(route, tuple(argv), _url(opts.host, opts.port, "/v1"), _url(opts.host, opts.port, "/health"), files)
