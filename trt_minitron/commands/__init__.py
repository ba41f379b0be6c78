"""One module per command; the flags that several commands share with the same meaning are defined here once."""

from __future__ import annotations

import typer

from ..options import TIMEOUT_HELP, BackendSpec

# The local-runner flags of generate and summarize (an OptionInfo is read-only metadata: one instance serves both).
REQUEST_TIMEOUT = typer.Option(None, "--request-timeout", metavar="LIMITS", help="openai: " + TIMEOUT_HELP)
TP_SIZE = typer.Option(BackendSpec.tp_size, "--tp-size", help="trtllm on an HF folder: tensor parallel size (engines "
                       "carry their own)")
PP_SIZE = typer.Option(BackendSpec.pp_size, "--pp-size", help="trtllm on an HF folder: pipeline parallel size")
KV_FRACTION = typer.Option(BackendSpec.kv_cache_free_gpu_memory_fraction, "--kv-cache-free-gpu-memory-fraction",
                           help="trtllm on an HF folder: KV-cache share of free GPU memory (default 0.9)")
