"""`trt-minitron serve MODEL`: run trtllm-serve (engines on 1.2.x; HF / unified folders on the PyTorch backend, tuned
from the checkpoint) or transformers serve (HF folders)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..options import ServeOptions

_D = ServeOptions  # defaults live on the options dataclass only


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: Path = typer.Argument(..., help="engine folder (from `build`) or Hugging Face folder "
                                     "(e.g. `export --format hf` output)"),
        host: str = typer.Option(_D.host, "--host", envvar="TRT_MINITRON_SERVE_HOST",
                                 help="address to listen on (0.0.0.0 in Docker)"),
        port: int = typer.Option(_D.port, "--port"),
        server: str = typer.Option(_D.server, "--server", help="auto | trtllm | transformers (HF folders: auto = "
                                   "trtllm-serve when installed, else transformers serve)"),
        tokenizer: Optional[Path] = typer.Option(_D.tokenizer, "--tokenizer", help="tokenizer folder (default: the engine "
                                                 "folder's copy, else the checkpoint its manifest names)"),
        max_batch_size: Optional[int] = typer.Option(_D.max_batch_size, "--max-batch-size", help="default: the engine's; "
                                                     "HF under trtllm-serve: 128"),
        max_num_tokens: Optional[int] = typer.Option(_D.max_num_tokens, "--max-num-tokens", help="default: the engine's; "
                                                     "HF under trtllm-serve: 8192"),
        max_seq_len: Optional[int] = typer.Option(_D.max_seq_len, "--max-seq-len", help="default: the engine's; "
                                                  "HF: the model's max_position_embeddings"),
        tp_size: Optional[int] = typer.Option(_D.tp_size, "--tp-size", help="HF folders under trtllm-serve"),
        pp_size: Optional[int] = typer.Option(_D.pp_size, "--pp-size", help="HF folders under trtllm-serve"),
        kv_cache_free_gpu_memory_fraction: Optional[float] = typer.Option(
            _D.kv_cache_free_gpu_memory_fraction, "--kv-cache-free-gpu-memory-fraction",
            help="trtllm-serve's KV-cache share of free GPU memory"),
        mpirun: bool = typer.Option(_D.mpirun, "--mpirun", help="launch as `mpirun -n TP*PP trtllm-llmapi-launch "
                                    "trtllm-serve ...` (an MPI world you start: several nodes, Slurm)"),
        continuous_batching: bool = typer.Option(_D.continuous_batching, "--continuous-batching",
                                                 help="transformers serve: paged attention, continuous batching"),
        device: Optional[str] = typer.Option(_D.device, "--device", help="transformers serve: cpu, cuda:0, auto"),
        dtype: Optional[str] = typer.Option(_D.dtype, "--dtype", help="transformers serve: auto, float32, bfloat16"),
        ready_timeout: float = typer.Option(_D.ready_timeout_s, "--ready-timeout", help="seconds to wait for /health"),
        stop_timeout: float = typer.Option(_D.stop_timeout_s, "--stop-timeout", help="seconds between SIGTERM and "
                                           "SIGKILL on stop"),
        llm_api_options: Optional[Path] = typer.Option(_D.llm_api_options, "--llm-api-options", help="HF folders under "
                                                       "trtllm-serve: where to write the --extra_llm_api_options YAML "
                                                       "derived from the checkpoint (default ./MODEL.trtllm-serve.yaml)"),
        overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="replace an existing --llm-api-options file "
                                       "that trt-minitron did not write (one it wrote is replaced anyway)"),
        dry_run: bool = typer.Option(_D.dry_run, "--dry-run", help="print the route, the command and the YAML; "
                                     "start and write nothing"),
        extra: Optional[List[str]] = typer.Argument(None, metavar="[-- SERVER_ARGS...]",
                                                    help="passed to the server unchanged"),
    ) -> None:
        """Serve a model over the OpenAI API with a real server; prints the endpoint and the exact command,
        says "ready" once /health answers, and stops the server cleanly on Ctrl-C (or SIGTERM)."""
        opts = ServeOptions(
            model=model, host=host, port=port, server=server, tokenizer=tokenizer, max_batch_size=max_batch_size,
            max_num_tokens=max_num_tokens, max_seq_len=max_seq_len, tp_size=tp_size, pp_size=pp_size,
            kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction, mpirun=mpirun,
            continuous_batching=continuous_batching, device=device, dtype=dtype, ready_timeout_s=ready_timeout,
            stop_timeout_s=stop_timeout, dry_run=dry_run, llm_api_options=llm_api_options,
            overwrite=overwrite, extra_args=tuple(extra or ()))
        from ..serve.run import run_server

        code = run_server(opts, say=lambda line: print(line, flush=True))
        sys.stdout.flush()
        raise typer.Exit(code)
