"""Peak RSS and seconds of `verify`, layer by layer vs whole models, on random checkpoints of real widths.

For each preset and layer count: a random bf16 Hugging Face checkpoint with the model's real widths
(tests/synthetic.py), exported to a bf16 TensorRT-LLM checkpoint, then `trt-minitron verify` in its
own subprocess per mode. Peak RSS is that process's VmHWM (interpreter and imports included); the
baseline row is a process that only imports what verify imports. The whole-model mode is skipped where
its float32 model would not fit in --full-limit-gb. With --plant-rope, a copy of each Llama checkpoint
whose config.json lost its rotary_scaling is verified too (it must FAIL).

    .venv/bin/python benchmarks/verify_memory.py --presets minitron-8b --layers 4,16
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # synthetic.py

from synthetic import PRESETS, write_synthetic_hf  # noqa: E402

from trt_minitron.archs.config import ModelConfig  # noqa: E402
from trt_minitron.export.run import ExportOptions, run_export  # noqa: E402

CHILD = r"""
import json, sys
if sys.argv[1] == "baseline":
    import torch, transformers  # noqa: F401
    from trt_minitron.verify.run import run_verify  # noqa: F401
    from trt_minitron.verify import layerwise, full, source_side  # noqa: F401
    from trt_minitron.archs import get_arch
    for a in ("LlamaForCausalLM", "NemotronForCausalLM"):
        get_arch(a).transformers_modules()
    rc, verdict = 0, "-"
else:
    import contextlib, io
    from trt_minitron.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["verify", sys.argv[1], "--reference", sys.argv[2], *sys.argv[3:]])
    lines = buf.getvalue().strip().splitlines() or ["error"]
    first = [l.split("first divergence: ")[1].split(":")[0] for l in lines if "first divergence: " in l]
    verdict = lines[-1] + (f" ({first[0]})" if first else "")
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "peak": peak, "verdict": verdict}))
"""


def run_child(*args: str) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["peak"] / 2**30, seconds, report["verdict"]


def params(cfg: ModelConfig) -> int:
    from trt_minitron.archs import get_arch

    total = 0
    for shape in get_arch(cfg.architecture).hf_tensors(cfg).values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def without_rope_scaling(ckpt: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in ckpt.iterdir():
        if f.name != "config.json":
            (dst / f.name).symlink_to(f)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["rotary_scaling"] = None
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="minitron-4b,minitron-8b,llama-3.1-minitron-4b-width")
    ap.add_argument("--layers", default="4,16")
    ap.add_argument("--modes", default="layers,full")
    ap.add_argument("--full-limit-gb", type=float, default=8.0, help="skip --full where the float32 model exceeds it")
    ap.add_argument("--plant-rope", action="store_true", help="also verify Llama checkpoints without rotary_scaling")
    ap.add_argument("--workdir", default=None, help="where the random checkpoints go (deleted after each)")
    args = ap.parse_args()

    base, _, _ = run_child("baseline")
    print(f"baseline (python + torch + transformers + trt_minitron.verify imported): {base:.2f} GiB RSS\n")
    print("| preset | layers | checkpoint GB | mode | peak RSS GiB | over baseline GiB | seconds | result |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for preset in args.presets.split(","):
        for layers in map(int, args.layers.split(",")):
            hf = dict(PRESETS[preset], num_hidden_layers=layers)
            cfg = ModelConfig.from_hf(hf)
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                root = Path(tmp)
                src = write_synthetic_hf(root / "src", hf, dtype=torch.bfloat16)
                ckpt = root / "ckpt"
                run_export(ExportOptions(src=str(src), output=ckpt, dtype="bfloat16"))
                gb = sum(f.stat().st_size for f in ckpt.glob("rank*.safetensors")) / 1e9
                runs = []
                for mode in args.modes.split(","):
                    if mode == "full" and params(cfg) * 4 / 2**30 > args.full_limit_gb:
                        print(f"| {preset} | {layers} | {gb:.2f} | full | skipped: float32 model "
                              f"{params(cfg) * 4 / 2**30:.1f} GiB > --full-limit-gb | | | |", flush=True)
                        continue
                    runs.append((mode, ckpt, ["--full"] if mode == "full" else []))
                if args.plant_rope and cfg.rope_scaling is not None:
                    runs.append(("layers, rotary_scaling deleted", without_rope_scaling(ckpt, root / "norope"), []))
                for mode, folder, flags in runs:
                    peak, seconds, verdict = run_child(str(folder), str(src), *flags)
                    print(f"| {preset} | {layers} | {gb:.2f} | {mode} | {peak:.2f} | {peak - base:.2f} | "
                          f"{seconds:.0f} | {verdict} |", flush=True)
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
