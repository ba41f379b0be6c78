"""Tokens/s of the summarize loop at batch sizes 1, 4, 8 for every backend given, in one run.

    python benchmarks/summarize_speed.py --hf MODEL.gguf --torch TRT_CKPT [--trtllm ENGINE --tokenizer DIR] \
        --dataset-file ../shared/data/cnn_dailymail_sample.jsonl --num-samples 8 --output-len 32

Backends not given (or, for trtllm, without an importable tensorrt_llm) are listed as skipped.
Prints a Markdown table (tokens/s and the ratio to batch 1) and, with --json, writes the numbers.
Each backend is loaded once; warm-up is excluded and the device synchronised (see trt_minitron/summarize/run.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt_minitron.backends import open_backend  # noqa: E402
from trt_minitron.options import BackendSpec  # noqa: E402
from trt_minitron.summarize.run import SummarizeOptions, run_summarize  # noqa: E402

BATCH_SIZES = (1, 4, 8)


class _Shared:
    """Keeps a loaded backend open across the batch sizes."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, k):
        return getattr(self.backend, k)

    def close(self):
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf"), ap.add_argument("--torch"), ap.add_argument("--trtllm")
    ap.add_argument("--tokenizer", help="tokenizer folder for the trtllm engine")
    ap.add_argument("--dataset-file", type=Path)
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--max-input-len", type=int, default=923)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    rows, skipped = [], []
    for kind, model in (("hf", a.hf), ("torch", a.torch), ("trtllm", a.trtllm)):
        if not model:
            skipped.append(f"{kind}: no model given")
            continue
        if kind == "trtllm" and importlib.util.find_spec("tensorrt_llm") is None:
            skipped.append("trtllm: tensorrt_llm not importable")
            continue
        spec = BackendSpec(kind=kind, model=model, device=a.device, tokenizer=a.tokenizer if kind == "trtllm" else None,
                           max_batch_size=max(BATCH_SIZES), max_input_len=a.max_input_len, max_output_len=a.output_len)
        backend = _Shared(open_backend(spec))
        base = None
        for bs in BATCH_SIZES:
            opts = SummarizeOptions(backends=(spec,), dataset_file=a.dataset_file, num_samples=a.num_samples,
                                    batch_size=bs, max_input_len=a.max_input_len, output_len=a.output_len,
                                    bootstrap_samples=200)
            rep = run_summarize(opts, opener=lambda s: backend)
            agg = rep["backends"][0]["aggregate"]
            base = base or agg["tokens_per_s"]
            rows.append({"backend": kind, "model": model, "batch_size": bs, "tokens_per_s": agg["tokens_per_s"],
                         "ratio_to_bs1": agg["tokens_per_s"] / base, "generated_tokens": agg["generated_tokens"],
                         "latency_per_batch": agg["latency_per_batch"],
                         "rouge1": agg["rouge"]["rouge1"]["mean"]})
            print(f"{kind} bs={bs}: {agg['tokens_per_s']:.1f} tokens/s", file=sys.stderr, flush=True)
        backend.backend.close()

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; {a.num_samples} samples, max_input_len {a.max_input_len}, output_len {a.output_len}\n")
    print("| backend | batch | tokens/s | x batch 1 | generated tokens | batch latency p50 (s) | ROUGE-1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['batch_size']} | {r['tokens_per_s']:.1f} | {r['ratio_to_bs1']:.2f} | "
              f"{r['generated_tokens']} | {r['latency_per_batch']['p50_s']:.3f} | {r['rouge1']:.2f} |")
    for s in skipped:
        print(f"\nskipped {s}")
    if a.json:
        a.json.write_text(json.dumps({"device": dev, "host": platform.node(), "rows": rows, "skipped": skipped},
                                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
