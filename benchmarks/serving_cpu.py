"""`trt-minitron bench` against `transformers serve`, without and with --continuous-batching, in one run.

    python benchmarks/serving_cpu.py --model HF_DIR --dataset-file ../shared/data/cnn_dailymail_sample.jsonl \
        --concurrency 1,2,4 --num-requests 6 --input-len 128 --output-len 16 --out benchmarks/serving_cpu

Each server is started with `trt-minitron serve HF_DIR [--continuous-batching]` (the launcher under test),
benchmarked over the same prompts and sweep, then stopped. Writes OUT_<mode>.json (the bench reports) and
OUT.png (throughput vs p50/p99 TTFT and E2E latency, both servers), and prints a Markdown table with the
continuous-batching / default ratio of output tokens/s per concurrency (the baseline is the run without).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_minitron.bench.report import plot_sweeps  # noqa: E402
from trt_minitron.bench.run import BenchOptions, run_bench  # noqa: E402

MODES = {"default": [], "continuous-batching": ["--continuous-batching"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trt_minitron", "serve", model, "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32", *extra], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    while "ready:" not in log.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return proc, f"http://127.0.0.1:{port}/v1"


def row(mode: str, p: dict, base: dict | None) -> str:
    a = p["aggregate"]
    ratio = f"{a['output_throughput'] / base['aggregate']['output_throughput']:.2f}x" if base else "1.00x (baseline)"
    r1 = a["rouge"]["rouge1"]["mean"] if a.get("rouge") else float("nan")
    return (f"| {mode} | {p['label']} | {a['completed']}/{a['requests']} | {a['request_throughput']:.3f} | "
            f"{a['output_throughput']:.2f} | {ratio} | {a['ttft_ms']['p50'] / 1000:.2f} | "
            f"{a['tpot_ms']['p50'] / 1000:.2f} | {a['e2el_ms']['p50'] / 1000:.2f} | {a['e2el_ms']['p99'] / 1000:.2f} | "
            f"{r1:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face folder (e.g. `export --format hf` output)")
    ap.add_argument("--dataset-file", type=Path, required=True)
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--num-requests", type=int, default=6)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serving_cpu")
    args = ap.parse_args()
    conc = tuple(int(c) for c in args.concurrency.split(","))
    reports = {}
    for mode, extra in MODES.items():
        proc, url = start(args.model, extra, Path(tempfile.gettempdir()) / f"serving_cpu_{mode}.log")
        try:
            reports[mode] = run_bench(BenchOptions(
                url=url, dataset_file=args.dataset_file, num_requests=args.num_requests, input_len=args.input_len,
                output_len=args.output_len, concurrency=conc, report=args.out.with_name(f"{args.out.name}_{mode}.json"),
                overwrite=True))  # this script's own results, rewritten on every run
        finally:
            os.kill(proc.pid, signal.SIGTERM)  # as docker stop; a background job ignores SIGINT
            proc.wait(timeout=120)
    plot_sweeps({f"transformers serve ({m})": r for m, r in reports.items()}, args.out.with_suffix(".png"),
                title=f"SmolLM2-135M float32, CPU ({os.cpu_count()} cores), {args.num_requests} CNN/DailyMail "
                      f"requests per point, {args.input_len} in / {args.output_len} out", overwrite=True)
    print(f"{platform.platform()}, {os.cpu_count()} CPUs; {args.num_requests} requests per point, input <= "
          f"{args.input_len} tokens, output <= {args.output_len} tokens, greedy\n")
    print("| server | point | ok | req/s | out tok/s | vs default | TTFT p50 s | TPOT p50 s | E2E p50 s | E2E p99 s "
          "| ROUGE-1 |")
    print("|" + "---|" * 11)
    base = {p["label"]: p for p in reports["default"]["points"]}
    for mode, rep in reports.items():
        for p in rep["points"]:
            print(row(mode, p, None if mode == "default" else base.get(p["label"])))
    print(json.dumps({m: str(args.out.with_name(f"{args.out.name}_{m}.json")) for m in reports}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
