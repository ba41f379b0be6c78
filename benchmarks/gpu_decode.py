"""Batch-1 decode speed of the `hf` and `torch` backends on a Minitron-4B-shaped random bf16 model,
against the memory-bandwidth limit (bytes read per token / measured device copy bandwidth).

Needs a CUDA GPU (it exits with a message otherwise) and ~40 GB of disk under --workdir: the random
model is built on the GPU (no download), saved as an HF folder, exported to a bfloat16 TensorRT-LLM
checkpoint with `trt-minitron export`, then opened by both backends exactly as users would.

    python benchmarks/gpu_decode.py --workdir /tmp/m4b --prompt-len 128 --new-tokens 128 --json out.json

Shape (nvidia/Minitron-4B-Base config.json): NemotronForCausalLM, hidden 3072, 32 layers, 24 heads,
8 KV heads, head_dim 128, FFN 9216 (squared ReLU), vocab 256000, partial rotary 0.5, untied embeddings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MINITRON_4B = dict(architectures=["NemotronForCausalLM"], hidden_size=3072, intermediate_size=9216,
                   num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                   vocab_size=256000, max_position_embeddings=4096, hidden_act="relu2", norm_eps=1e-5,
                   partial_rotary_factor=0.5, rope_theta=10000.0, tie_word_embeddings=False,
                   bos_token_id=2, eos_token_id=3)


def copy_bandwidth(nbytes: int = 1 << 30, iters: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting the read and the write (2 x nbytes per copy)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return 2 * nbytes * iters / (start.elapsed_time(end) / 1e3)


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level tokenizer covering the whole vocabulary (the model is random; text is irrelevant)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t2", eos_token="t3", pad_token="t0").save_pretrained(path)


def build_hf(path: Path) -> tuple[int, int]:
    """Random Minitron-4B-shaped model, initialised on the GPU in bf16, saved to path; (total, per-token) bytes."""
    from transformers import NemotronConfig, NemotronForCausalLM

    if not (path / "config.json").is_file():
        cfg = NemotronConfig(**MINITRON_4B)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = NemotronForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        model.save_pretrained(path)
        write_tokenizer(path, cfg.vocab_size)
        del model
        torch.cuda.empty_cache()
    h, v, n = MINITRON_4B["hidden_size"], MINITRON_4B["vocab_size"], MINITRON_4B["num_hidden_layers"]
    d, q, kv, f = MINITRON_4B["head_dim"], MINITRON_4B["num_attention_heads"], MINITRON_4B["num_key_value_heads"], \
        MINITRON_4B["intermediate_size"]
    layer = h * (q + 2 * kv) * d + q * d * h + 2 * h * f + 4 * h  # qkv, o, up+down, 2 layernorms (w, b)
    total = 2 * (v * h * 2 + n * layer + 2 * h)
    per_token = total - 2 * v * h  # decode reads one embedding row, not the table
    return total, per_token


def decode_speed(backend, prompt_len: int, new_tokens: int, reps: int) -> dict:
    from trt_minitron.backends.base import Sampling

    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, MINITRON_4B["vocab_size"], (prompt_len,), generator=g).tolist()
    s = Sampling(max_new_tokens=new_tokens)
    backend.generate([prompt], Sampling(max_new_tokens=8))  # warm-up
    runs = []
    for _ in range(reps):
        out = backend.generate([prompt], s)[0]
        decode_s = out.batch_latency_s - out.ttft_s
        runs.append({"generated": out.num_tokens, "latency_s": out.batch_latency_s, "ttft_s": out.ttft_s,
                     "decode_tokens_per_s": (out.num_tokens - 1) / decode_s if out.num_tokens > 1 else float("nan")})
    best = max(runs, key=lambda r: r["decode_tokens_per_s"])
    return {"runs": runs, "best_decode_tokens_per_s": best["decode_tokens_per_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/minitron4b_random"))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backends", default="hf,torch")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_decode.py needs a CUDA GPU (torch.cuda.is_available() is False here); no numbers produced.",
              file=sys.stderr)
        return 2
    from trt_minitron.backends import open_backend
    from trt_minitron.export.run import ExportOptions, run_export
    from trt_minitron.options import BackendSpec

    bw = copy_bandwidth()
    hf_dir, ckpt = a.workdir / "hf", a.workdir / "trtllm_ckpt_bf16"
    t = time.perf_counter()
    total, per_token = build_hf(hf_dir)
    if not (ckpt / "config.json").is_file():
        run_export(ExportOptions(src=str(hf_dir), output=ckpt, dtype="bfloat16"))
    prep_s = time.perf_counter() - t
    result = {"device": torch.cuda.get_device_name(), "copy_bandwidth_GBps": bw / 1e9,
              "weight_bytes": total, "bytes_read_per_token": per_token,
              "bandwidth_limit_tokens_per_s": bw / per_token, "prompt_len": a.prompt_len,
              "new_tokens": a.new_tokens, "prepare_s": prep_s, "backends": {}}
    for kind in a.backends.split(","):
        model = str(hf_dir if kind == "hf" else ckpt)
        b = open_backend(BackendSpec(kind=kind, model=model, device="cuda", dtype="bfloat16"))
        r = decode_speed(b, a.prompt_len, a.new_tokens, a.reps)
        r["fraction_of_limit"] = r["best_decode_tokens_per_s"] / result["bandwidth_limit_tokens_per_s"]
        r["achieved_GBps"] = r["best_decode_tokens_per_s"] * per_token / 1e9
        result["backends"][kind] = r
        b.close()
        torch.cuda.empty_cache()
    print(f"device {result['device']}: copy bandwidth {result['copy_bandwidth_GBps']:.0f} GB/s; "
          f"{per_token / 1e9:.2f} GB read per token -> limit {result['bandwidth_limit_tokens_per_s']:.1f} tokens/s")
    print("| backend | batch-1 decode tokens/s | achieved GB/s | fraction of limit |\n|---|---|---|---|")
    for k, r in result["backends"].items():
        print(f"| {k} | {r['best_decode_tokens_per_s']:.1f} | {r['achieved_GBps']:.0f} | {r['fraction_of_limit']:.2f} |")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
