"""A stand-in `trtllm-serve` for tests: the real command line interface, no model.

The click group and the `serve` options below are the real ones of tensorrt_llm/commands/serve.py
(NVIDIA/TensorRT-LLM, commit 00209af149e7774406881a37283dce303571eb11): names, aliases, types, choices
and flags, so an option trt-minitron invents, misspells or gives a wrong type fails here as it would
there (click usage error, exit 2). Parsed options (and the --extra_llm_api_options YAML, loaded with yaml.safe_load
as serve.py does) are appended as JSON to $FAKE_TRTLLM_LOG; then it
answers /health and /v1/models on --host/--port until SIGTERM/SIGINT, which it logs before exiting 0.
$FAKE_TRTLLM_EXIT=N makes it exit with N right after parsing (a server that dies while loading);
$FAKE_TRTLLM_HEALTH=CODE answers /health with that status forever, =hang accepts and never answers;
$FAKE_TRTLLM_DIE_AFTER_READY=N exits with N just after its first 200 from /health (a crash while serving).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click


def _log(entry: dict) -> None:
    with open(os.environ["FAKE_TRTLLM_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


class DefaultGroup(click.Group):
    """As in serve.py: a first argument that is not a subcommand means `serve`."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands:
            return "serve", self.commands["serve"], args
        return super().resolve_command(ctx, args)


@click.command("serve")
@click.argument("model", type=str)
@click.option("--tokenizer", type=str, default=None)
@click.option("--custom_tokenizer", type=str, default=None)
@click.option("--host", type=str, default="localhost")
@click.option("--port", type=int, default=8000)
@click.option("--backend", type=click.Choice(["pytorch", "tensorrt", "_autodeploy", "trt"]), default="pytorch")
@click.option("--custom_module_dirs", type=str, default=None, multiple=True)
@click.option("--log_level", type=click.Choice(["internal_error", "error", "warning", "info", "verbose", "debug",
                                                "trace"]), default="info")
@click.option("--max_beam_width", type=int, default=1)
@click.option("--max_batch_size", type=int, default=2048)
@click.option("--max_num_tokens", type=int, default=8192)
@click.option("--max_seq_len", type=int, default=None)
@click.option("--tensor_parallel_size", "--tp_size", type=int, default=1)
@click.option("--pipeline_parallel_size", "--pp_size", type=int, default=1)
@click.option("--context_parallel_size", "--cp_size", type=int, default=1)
@click.option("--moe_expert_parallel_size", "--ep_size", type=int, default=None)
@click.option("--moe_cluster_parallel_size", "--cluster_size", type=int, default=None)
@click.option("--gpus_per_node", type=int, default=None)
@click.option("--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction", type=float, default=0.9)
@click.option("--num_postprocess_workers", type=int, default=0)
@click.option("--trust_remote_code", is_flag=True, default=False)
@click.option("--revision", type=str, default=None)
@click.option("--config", "--extra_llm_api_options", "extra_llm_api_options", type=str, default=None)
@click.option("--reasoning_parser", type=str, default=None)
@click.option("--tool_parser", type=str, default=None)
@click.option("--metadata_server_config_file", type=str, default=None)
@click.option("--server_role", type=str, default=None)
@click.option("--fail_fast_on_attention_window_too_large", is_flag=True, default=False)
@click.option("--otlp_traces_endpoint", type=str, default=None)
@click.option("--disagg_cluster_uri", type=str, default=None)
@click.option("--enable_chunked_prefill", is_flag=True, default=False)
@click.option("--media_io_kwargs", type=str, default=None)
@click.option("--chat_template", type=str, default=None)
def serve(model, **options):
    entry = {"event": "parsed", "model": model, "options": options, "argv": sys.argv[1:], "pid": os.getpid()}
    if options["extra_llm_api_options"]:  # serve.py: yaml.safe_load of the file, applied over the flags
        import yaml

        with open(options["extra_llm_api_options"]) as f:
            entry["llm_api_options"] = yaml.safe_load(f)
    _log(entry)
    if os.environ.get("FAKE_TRTLLM_EXIT"):
        sys.exit(int(os.environ["FAKE_TRTLLM_EXIT"]))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/health": b"", "/v1/models": json.dumps({"object": "list", "data": [{"id": model}]}).encode()}
            health = os.environ.get("FAKE_TRTLLM_HEALTH")
            if self.path == "/health" and health == "hang":
                time.sleep(3600)
            status = int(health) if self.path == "/health" and health else 200 if self.path in body else 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body.get(self.path, b""))))
            self.end_headers()
            self.wfile.write(body.get(self.path, b""))
            self.wfile.flush()
            if self.path == "/health" and status == 200 and os.environ.get("FAKE_TRTLLM_DIE_AFTER_READY"):
                threading.Timer(0.5, os._exit, [int(os.environ["FAKE_TRTLLM_DIE_AFTER_READY"])]).start()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer((options["host"], options["port"]), Handler)

    def stop(signum, frame):
        _log({"event": "signal", "signal": signal.Signals(signum).name})
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    httpd.serve_forever()


main = DefaultGroup(commands={"serve": serve})

if __name__ == "__main__":
    main()
