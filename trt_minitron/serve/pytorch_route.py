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

The YAML is written by trt-minitron, so it follows the output rule for files (outputs.py): a path holding a file we
did not write (no MARKER first line) is refused without --overwrite, ours is replaced atomically, and --dry-run
writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import OutputError
from ..options import ServeOptions
from ..outputs import WRITTEN_BY, check_output_file, write_file
from ..trtllm.llmapi_args import LlmApiSettings, derive, read_hf_checkpoint

MARKER = f"{WRITTEN_BY} serve: trtllm-serve --extra_llm_api_options (replaced by the next serve)"
USER_CONFIG_FLAGS = ("--extra_llm_api_options", "--config")


@dataclass(frozen=True)
class OptionsFile:
    """A YAML file serve writes before it starts the server."""

    path: Path
    text: str
    overwrite: bool = False  # replace a file trt-minitron did not write


def default_options_path(model: Path) -> Path:
    """Next to the run: the current folder, named after the model folder."""
    return Path.cwd() / f"{Path(model).resolve().name}.trtllm-serve.yaml"


def write_options(f: OptionsFile) -> None:
    """(Re)write one of our YAML files (outputs.write_file: atomic, checked again just before)."""
    write_file(f.path, f.text.encode("utf-8"), overwrite=f.overwrite)


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
    check_output_file(path, flag="--llm-api-options", overwrite=opts.overwrite, example=default_options_path(opts.model).name)
    argv += ["--extra_llm_api_options", str(path)]
    return (f"Hugging Face folder with trtllm-serve (PyTorch backend): {tuned}"), argv, \
        (OptionsFile(path, options_yaml(s, opts.model), opts.overwrite),)
