"""Export speed and peak memory against the disk's lower bound and the naive route, in one run.

    python benchmarks/export_speed.py [--preset minitron-4b] [--layers 4,8] [--workdir /tmp/bench]

For each layer count it writes a random checkpoint with the preset's shapes (bf16), then runs, each
in a fresh subprocess so peak RSS (VmHWM) is its own:
  copy   - shutil.copyfile of model.safetensors: the bytes export must read and write at least once
  export - trt-minitron export (bf16 -> bf16, tp 1)
  naive  - safetensors load_file of everything, rename, save_file (what a non-streaming converter does)
All three read a file that was just written, so they see the same (warm) page cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEPS = {
    "copy": """
import shutil, sys
shutil.copyfile(sys.argv[1] + "/model.safetensors", sys.argv[2])
""",
    "export": """
import sys
from trt_minitron.cli import main
sys.exit(main(["export", sys.argv[1], "--output", sys.argv[2], "--dtype", "bfloat16"]))
""",
    "naive": """
import sys
from safetensors.torch import load_file, save_file
state = load_file(sys.argv[1] + "/model.safetensors")
save_file({"x." + k: v for k, v in state.items()}, sys.argv[2])
""",
}
PEAK = """
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("VMHWM", int(line.split()[1]) * 1024)
"""


def run_step(step: str, src: Path, dst: Path) -> tuple[float, int]:
    code = STEPS[step].replace("sys.exit(main(", "rc = (main(") + PEAK + ("\nsys.exit(rc)" if step == "export" else "")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{step} failed: {proc.stderr[-500:]}")
    peak = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("VMHWM"))
    return seconds, peak


def main() -> None:
    from trt_minitron.synthetic import PRESETS, write_synthetic_hf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="minitron-4b", choices=sorted(PRESETS))
    ap.add_argument("--layers", default="4,8", help="comma-separated layer counts")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-bench"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    rows = []
    for layers in [int(x) for x in args.layers.split(",")]:
        work = args.workdir / f"{args.preset}-{layers}"
        shutil.rmtree(work, ignore_errors=True)
        src = write_synthetic_hf(work / "src", {**PRESETS[args.preset], "num_hidden_layers": layers})
        size = (src / "model.safetensors").stat().st_size
        result = {"layers": layers, "bytes": size}
        for step in ("copy", "export", "naive"):
            dst = work / step
            result[step] = run_step(step, src, dst)
            shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        rows.append(result)

    print(f"\n{args.preset}, bf16 -> bf16, tp 1 (peak RSS = VmHWM of each subprocess, imports included)\n")
    print("| layers | GB | copy s | export s | naive s | export/copy | naive/copy "
          "| copy RSS GiB | export RSS GiB | naive RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        (cs, cm), (es, em), (ns, nm) = r["copy"], r["export"], r["naive"]
        print(f"| {r['layers']} | {r['bytes'] / 1e9:.2f} | {cs:.1f} | {es:.1f} | {ns:.1f} | {es / cs:.2f} "
              f"| {ns / cs:.2f} | {cm / 2**30:.2f} | {em / 2**30:.2f} | {nm / 2**30:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
