"""Export speed and peak memory against `cp` of the same file, in one run, whole processes timed.

    python benchmarks/export_speed.py [--preset llama-3.1-minitron-4b-width] [--layers 3] [--tp 1,2]
        [--dtype bfloat16] [--cache warm|cold] [--repeat 3] [--warmup 1] [--naive] [--baseline CMD]
        [--workdir /tmp/bench]

It writes a random checkpoint with the preset's shapes (bf16; `--layers 3` of Llama-3.1-Minitron-4B-Width
is 2.27 GB), then runs, `--repeat` times in turn (after `--warmup` untimed rounds) so that load on the machine hits
every step alike:
  cp      - coreutils `cp` of model.safetensors (copy_file_range: the bytes read and written once)
  torch   - `python -c "import torch"`: the floor of an export that converts (a cast, +1); one that only
            moves bytes (same dtype) does not import torch
  imports - `python -c "import trt_minitron.cli, trt_minitron.export.run"`: the fixed start-up cost inside
            every export below (interpreter and the tool; torch only at the first conversion)
  tp N    - `trt-minitron export --dtype D --tp N` (the console script: whole process)
  naive   - safetensors load_file of everything, then save_file (with --naive; a non-streaming converter)
  baseline tp N - the same export by another command line (with --baseline, e.g. an older checkout)
Warm cache: the source is read once before the runs and stays in the page cache (`fincore` reports how
much of it is resident, when installed). Cold cache: before each step the source's pages are dropped
with posix_fadvise(DONTNEED) (only this file: the rest of the machine keeps its cache).
Peak RSS is each child's own maximum (wait4). Ratios are to `cp` of the same run, best and median.
Between steps the output is deleted and `sync` waits for writeback, so no step pays for the last one's.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parents[1] / "tests"  # synthetic.py: random checkpoints of real shapes
WRITE = f"import sys; sys.path.insert(0, {str(TESTS)!r})" + """
from pathlib import Path
from synthetic import PRESETS, write_synthetic_hf
write_synthetic_hf(Path(sys.argv[1]), {**PRESETS[sys.argv[2]], "num_hidden_layers": int(sys.argv[3])})
"""
NAIVE = """
import sys
from safetensors.torch import load_file, save_file
state = load_file(sys.argv[1] + "/model.safetensors")
save_file({"x." + k: v for k, v in state.items()}, sys.argv[2])
"""


def run(cmd: list[str]) -> tuple[float, int, str]:
    """Seconds, peak RSS bytes and stderr of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err[-800:]}")
    return seconds, usage.ru_maxrss * 1024, err


def drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> str:
    buf = bytearray(1 << 20)  # small: this process's RSS is the floor of every child's ru_maxrss
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    if shutil.which("fincore"):
        return subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)], capture_output=True,
                              text=True).stdout.strip()
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-3.1-minitron-4b-width")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--tp", default="1,2", help="comma-separated tensor-parallel sizes")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--cache", default="warm", choices=["warm", "cold"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (the first round here was slow)")
    ap.add_argument("--naive", action="store_true", help="also time load_file + save_file (memory = the model)")
    ap.add_argument("--baseline", help="another trt-minitron command line (e.g. an older checkout) timed alike")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-bench"))
    args = ap.parse_args()

    work = args.workdir / f"{args.preset}-{args.layers}"
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    subprocess.run([sys.executable, "-c", WRITE, str(src), args.preset, str(args.layers)], check=True)
    model = src / "model.safetensors"
    size = model.stat().st_size
    tool = str(BIN / "trt-minitron")
    steps: dict[str, list[str]] = {"cp": ["cp", str(model), str(work / "copy")],
                                   "torch": [sys.executable, "-c", "import torch"],
                                   "imports": [sys.executable, "-c", "import trt_minitron.cli, trt_minitron.export.run"]}
    tools = {"": [tool], "baseline ": shlex.split(args.baseline)} if args.baseline else {"": [tool]}
    for label, cmd in tools.items():
        for tp in args.tp.split(","):
            steps[f"{label}tp {tp}"] = [*cmd, "export", str(src), "--output", str(work / f"tp{tp}"),
                                        "--dtype", args.dtype, "--tp", tp]
    if args.naive:
        steps["naive"] = [sys.executable, "-c", NAIVE, str(src), str(work / "naive")]

    cached = warm(model) if args.cache == "warm" else "dropped before each step"
    results: dict[str, list[tuple[float, int, float | None]]] = {k: [] for k in steps}
    for round_ in range(args.warmup + args.repeat):
        for name, cmd in steps.items():
            if args.cache == "cold":
                drop_from_cache(model)
            seconds, rss, err = run(cmd)
            inside = re.search(r"in ([\d.]+) s \(", err)
            if round_ >= args.warmup:
                results[name].append((seconds, rss, float(inside.group(1)) if inside else None))
            for out in ("copy", "naive", *(f"tp{t}" for t in args.tp.split(","))):
                p = work / out
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            os.sync()  # the next step should not pay for this one's writeback or freed blocks (discard)
    shutil.rmtree(work, ignore_errors=True)

    cp_best = min(s for s, _, _ in results["cp"])
    cp_med = statistics.median(s for s, _, _ in results["cp"])
    print(f"\n{args.preset}, {args.layers} layers, {size / 1e9:.2f} GB bf16 -> {args.dtype}, {args.cache} cache "
          f"(source resident: {cached} of {size} bytes), {args.repeat} runs each, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| step | best s | median s | in tool s (median) | best / cp best | median / cp median "
          "| in tool / cp (medians) | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        secs = [s for s, _, _ in rows]
        inside = [i for _, _, i in rows if i is not None]
        tool = f"{statistics.median(inside):.2f} | " if inside else "- | "
        tool_ratio = f"{statistics.median(inside) / cp_med:.2f} | " if inside else "- | "
        print(f"| {name} | {min(secs):.2f} | {statistics.median(secs):.2f} | {tool}{min(secs) / cp_best:.2f} | "
              f"{statistics.median(secs) / cp_med:.2f} | {tool_ratio}{max(r for _, r, _ in rows) / 2**30:.2f} |")
    print("\nevery run, in order (s): " + "; ".join(f"{name} " + " ".join(f"{s:.2f}" for s, _, _ in rows)
                                                for name, rows in results.items()))


if __name__ == "__main__":
    main()
