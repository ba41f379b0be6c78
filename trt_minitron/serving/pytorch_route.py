"""`serve HF_DIR` with trtllm-serve's PyTorch backend, tuned from the checkpoint: the flags and the
--extra_llm_api_options YAML, both from llmapi_args.derive (one home for the LLM API settings).

trtllm-serve options used (tensorrt_llm/commands/serve.py @00209af149e7, the newest serve.py the code index holds;
tests/fake_trtllm_serve.py declares its option table): MODEL, --backend pytorch, --host, --port, --tokenizer,
--max_batch_size, --max_num_tokens, --max_seq_len, --tp_size (= --tensor_parallel_size), --pp_size,
--kv_cache_free_gpu_memory_fraction (= --free_gpu_memory_fraction), --extra_llm_api_options (alias --config in that
file; --extra_llm_api_options is the name every 1.x release accepts). serve.py after the TensorRT backend's removal
(PR #15918) was not in the index; the migration guide (docs/source/legacy/tensorrt-backend-removal.md @335107a7)
says `--backend tensorrt` is gone and `--backend pytorch` stays accepted. The YAML's keys are TorchLlmArgs fields;
serve.py loads it with yaml.safe_load and it overrides the flags (update_llm_args_with_extra_dict), which is why
kv_cache_config repeats the memory fraction: a YAML kv_cache_config replaces the one the flag built.

The YAML is written by trt-minitron, so it follows the output rules: a path holding a file we did not write (no
MARKER first line) is refused, ours is replaced atomically (temporary sibling, then os.replace), and --dry-run
writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import OutputError
from ..llmapi_args import LlmApiSettings, derive, read_hf_checkpoint
from ..options import ServeOptions

MARKER = "# written by trt-minitron serve: trtllm-serve --extra_llm_api_options (replaced by the next serve)"
USER_CONFIG_FLAGS = ("--extra_llm_api_options", "--config")


@dataclass(frozen=True)
class OptionsFile:
    """A YAML file serve writes before it starts the server."""

    path: Path
    text: str


def default_options_path(model: Path) -> Path:
    """Next to the run: the current folder, named after the model folder."""
    return Path.cwd() / f"{Path(model).resolve().name}.trtllm-serve.yaml"


def check_options_path(path: Path) -> None:
    """Refuse a path we may not write: a folder, a link, or a file without our marker."""
    if path.is_symlink() or path.is_dir():
        raise OutputError(f"--llm-api-options {path} is a {'link' if path.is_symlink() else 'folder'}; give a file path")
    if path.exists():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                first = f.readline().rstrip("\n")
        except OSError as e:
            raise OutputError(f"--llm-api-options {path} cannot be read: {e.strerror}") from None
        if first != MARKER:
            raise OutputError(f"--llm-api-options {path} exists and was not written by trt-minitron; it is left "
                              "alone: give another path, or pass your own file after `--` as --extra_llm_api_options")
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--llm-api-options {path}: {parent} is not a writable folder")


def write_options(f: OptionsFile) -> None:
    """Atomically (re)write one of our YAML files, checked again just before."""
    check_options_path(f.path)
    tmp = f.path.with_name(f".{f.path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(f.text, encoding="utf-8")
        os.replace(tmp, f.path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {f.path}: {e.strerror}") from None


def options_yaml(settings: LlmApiSettings, model: Path) -> str:
    body = yaml.safe_dump(settings.extra_options(), sort_keys=False, default_flow_style=None)
    return f"{MARKER}\n# model: {Path(model).resolve()}\n{body}"


def user_config(extra_args: tuple[str, ...]) -> bool:
    return any(a in USER_CONFIG_FLAGS or a.startswith(tuple(f + "=" for f in USER_CONFIG_FLAGS)) for a in extra_args)


def pytorch_argv(opts: ServeOptions, exe: str) -> tuple[str, list[str], tuple[OptionsFile, ...]]:
    """Route line, trtllm-serve argv (no MPI prefix) and the YAML to write, for an HF / unified folder."""
    ckpt = read_hf_checkpoint(opts.model)
    s = derive(ckpt, tp_size=opts.tp_size, pp_size=opts.pp_size, max_batch_size=opts.max_batch_size,
               max_num_tokens=opts.max_num_tokens, max_seq_len=opts.max_seq_len,
               kv_cache_free_gpu_memory_fraction=opts.kv_cache_free_gpu_memory_fraction)
    argv = [exe, str(opts.model), "--backend", "pytorch", "--host", opts.host, "--port", str(opts.port),
            "--max_batch_size", str(s.max_batch_size), "--max_num_tokens", str(s.max_num_tokens),
            "--max_seq_len", str(s.max_seq_len), "--tp_size", str(s.tp_size), "--pp_size", str(s.pp_size),
            "--kv_cache_free_gpu_memory_fraction", str(s.kv_cache_free_gpu_memory_fraction)]
    if opts.tokenizer is not None:
        argv += ["--tokenizer", str(opts.tokenizer)]
    tuned = (f"{ckpt.label}; tp {s.tp_size}, pp {s.pp_size}, max batch {s.max_batch_size}, max seq {s.max_seq_len}, "
             f"KV cache {s.kv_cache_dtype}, CUDA graphs for batch sizes {list(s.cuda_graph_batch_sizes)}, chunked "
             f"prefill {'on' if s.enable_chunked_prefill else 'off'}")
    if user_config(opts.extra_args):
        return (f"Hugging Face folder with trtllm-serve (PyTorch backend): {tuned}; your --extra_llm_api_options "
                "replaces the derived YAML"), argv, ()
    path = Path(opts.llm_api_options) if opts.llm_api_options else default_options_path(opts.model)
    if path.resolve().is_relative_to(Path(opts.model).resolve()):
        raise OutputError(f"the LLM API options file {path} would go inside the model folder {opts.model}, which serve "
                          "leaves untouched; run from another folder or pass --llm-api-options PATH outside it")
    check_options_path(path)
    argv += ["--extra_llm_api_options", str(path)]
    return (f"Hugging Face folder with trtllm-serve (PyTorch backend): {tuned}"), argv, \
        (OptionsFile(path, options_yaml(s, opts.model)),)
