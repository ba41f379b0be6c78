"""Peak RSS and seconds of `quantize`, layer by layer vs the whole model, on random checkpoints of real widths.

For each preset and layer count: a random bf16 Hugging Face checkpoint with the model's real widths
(tests/synthetic.py, Minitron-8B and Llama-3.1-Minitron-4B-Width by default), then
`trt-minitron quantize` (CPU, small calibration from ../shared/data) in its own subprocess per format and
mode. Peak RSS is that process's VmHWM (interpreter and imports included); the baseline row is a process
that only imports what quantize imports. The whole-model mode (`--whole-model`) is skipped where its
estimated peak (2 x the float32 model: the model plus ModelOpt's export) exceeds --whole-limit-gb. The
random checkpoints are deleted after each layer count.

    flock /tmp/heavy.lock timeout 6h .venv/bin/python benchmarks/quantize_memory.py \\
        --layers 2,8,32 --awq-layers 2,8 --workdir /tmp/quant/bench
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from trt_minitron.archs import get_arch
from trt_minitron.archs.config import ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # synthetic.py
from synthetic import PRESETS, write_synthetic_hf  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnn_dailymail_sample.jsonl"

CHILD = r"""
import json, sys
if sys.argv[1] == "baseline":
    import torch, transformers  # noqa: F401
    import modelopt.torch.quantization, modelopt.torch.export  # noqa: F401
    from trt_minitron.quantize import by_layer, run  # noqa: F401
    rc = 0
else:
    from trt_minitron.cli import main
    rc = main(["quantize", *sys.argv[1:]])
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "peak": peak}))
"""


def run_child(*args: str) -> tuple[float, float, str]:
    """(peak RSS GiB, seconds, the child's last stderr line)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    last = (proc.stderr.strip().splitlines() or ["-"])[-1]
    if proc.returncode != 0 or not proc.stdout.strip():
        return float("nan"), seconds, f"FAILED: {last[-300:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["peak"] / 2**30, seconds, last if report["rc"] == 0 else f"exit {report['rc']}: {last[-300:]}"


def params(cfg: ModelConfig, only_layer: bool = False) -> int:
    total = 0
    for name, shape in get_arch(cfg.architecture).hf_tensors(cfg).items():
        if only_layer and not name.startswith("model.layers.0."):
            continue
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def write_tokenizer(path: Path, vocab_size: int = 8192) -> Path:
    """A BPE tokenizer trained on the sample articles (random weights need no real one; ids stay < any vocab)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["article"] for line in DATA.read_text().splitlines()]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                                       show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="minitron-8b,llama-3.1-minitron-4b-width")
    ap.add_argument("--layers", default="2,8,32", help="layer counts for fp8 (and for int4_awq unless --awq-layers)")
    ap.add_argument("--awq-layers", default=None, help="layer counts for int4_awq (it runs each layer ~20 times)")
    ap.add_argument("--qformats", default="fp8,int4_awq")
    ap.add_argument("--modes", default="layers,whole")
    ap.add_argument("--whole-limit-gb", type=float, default=10.0,
                    help="skip --whole-model where 2 x its float32 model exceeds this many GiB")
    ap.add_argument("--calib-size", type=int, default=8)
    ap.add_argument("--calib-max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workdir", default=None, help="where the random checkpoints go (deleted after each)")
    args = ap.parse_args()
    awq_layers = [int(x) for x in (args.awq_layers or args.layers).split(",")]
    calib = ["--calib-dataset", str(DATA), "--calib-size", str(args.calib_size), "--calib-max-len",
             str(args.calib_max_len), "--batch-size", str(args.batch_size), "--device", "cpu"]

    base, _, _ = run_child("baseline")
    print(f"baseline (python + torch + transformers + ModelOpt + trt_minitron.quantize imported): {base:.2f} GiB RSS; "
          f"calibration {args.calib_size} articles x {args.calib_max_len} tokens, batch {args.batch_size}\n")
    print("| preset | layers | source GB | one layer fp32 GiB | qformat | mode | peak RSS GiB | over baseline GiB | "
          "process s | calibration s | export s | (calibration + export) s per layer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tok = write_tokenizer(Path(tmp) / "tokenizer")
        for preset in args.presets.split(","):
            for layers in sorted({int(x) for x in args.layers.split(",")} | set(awq_layers)):
                hf = dict(PRESETS[preset], num_hidden_layers=layers)
                cfg = ModelConfig.from_hf(hf)
                layer_gib = params(cfg, only_layer=True) * 4 / 2**30
                whole_gib = 2 * params(cfg) * 4 / 2**30
                root = Path(tmp) / f"{preset}-{layers}"
                src = write_synthetic_hf(root / "src", hf, dtype=torch.bfloat16)
                gb = (src / "model.safetensors").stat().st_size / 1e9
                try:
                    for qformat in args.qformats.split(","):
                        if layers not in (awq_layers if qformat == "int4_awq" else map(int, args.layers.split(","))):
                            continue
                        for mode in args.modes.split(","):
                            row = f"| {preset} | {layers} | {gb:.2f} | {layer_gib:.2f} | {qformat} | {mode} |"
                            if mode == "whole" and whole_gib > args.whole_limit_gb:
                                print(f"{row} skipped: ~{whole_gib:.0f} GiB > --whole-limit-gb | | | | | |", flush=True)
                                continue
                            out = root / f"q-{qformat}-{mode}"
                            flags = ["--whole-model"] if mode == "whole" else []
                            peak, seconds, result = run_child(str(src), "-o", str(out), "--qformat", qformat,
                                                              "--tokenizer", str(tok), *calib, *flags)
                            shutil.rmtree(out, ignore_errors=True)
                            m = re.search(r"\(calibration ([\d.]+) s, export ([\d.]+) s\)", result)
                            if m is None:
                                print(f"{row} {result[:200]} | | | | | |", flush=True)
                                continue
                            cal, exp = float(m.group(1)), float(m.group(2))
                            print(f"{row} {peak:.2f} | {peak - base:.2f} | {seconds:.0f} | {cal:.0f} | {exp:.0f} | "
                                  f"{(cal + exp) / layers:.1f} |", flush=True)
                finally:
                    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
