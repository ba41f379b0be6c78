"""Peak RSS and seconds of `verify`, layer by layer vs whole models, on random checkpoints of real widths.

For each preset and layer count: a random bf16 Hugging Face checkpoint with the model's real widths
(tests/synthetic.py), exported per --artefacts to a bf16 TensorRT-LLM checkpoint ("trtllm"), a bf16
Hugging Face folder (`export --format hf`, "hf") and, from that folder, a ModelOpt-layout unified FP8 checkpoint
("unified": per-tensor weight scales amax / 448 and a fixed input scale, written here without calibrating a model of
these widths, which would need it whole in float32), then `trt-minitron verify` in its own subprocess per mode
(the unified one on --num-samples CNN/DailyMail texts x --max-tokens, with a small BPE tokenizer). Peak RSS is
that process's VmHWM (interpreter and imports included); the baseline row is a process that only imports what
verify imports. The whole-model mode (TensorRT-LLM checkpoints only) is skipped where its float32 model would not
fit in --full-limit-gb. With --plant-rope, a copy of each Llama checkpoint whose config.json lost its rope scaling
is verified too (it must FAIL).

    .venv/bin/python benchmarks/verify_memory.py --presets minitron-8b --layers 4,16 --artefacts hf,unified
"""

from __future__ import annotations

import argparse
import json
import os
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnn_dailymail_sample.jsonl"

CHILD = r"""
import json, sys
if sys.argv[1] == "baseline":
    import torch, transformers  # noqa: F401
    from trt_minitron.verify.run import run_verify  # noqa: F401
    from trt_minitron.verify import layerwise, full, source_side, hf_side, hf_quantized  # noqa: F401
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
    first = [l.split(k)[1].split(":")[0] for l in lines for k in ("first divergence: ", "first failure: ") if k in l]
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
            os.link(f, dst / f.name)  # hard links: readers refuse index shards that are links out of the folder
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.pop("rope_scaling" if "architectures" in cfg else "rotary_scaling")
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def unified_fp8(hf: Path, out: Path) -> Path:
    """`hf` (an `export --format hf` folder) as ModelOpt's unified FP8 checkpoint lays it out: every decoder linear's
    weight as float8_e4m3fn codes of W / s with s = amax / 448 and a 0-d weight_scale, a fixed 0-d input_scale,
    labels in hf_quant_config.json and config.json; one tensor in memory at a time."""
    from quant_fixtures import write_tokenizer
    from safetensors import safe_open

    from trt_minitron.tensors.info import TensorInfo
    from trt_minitron.tensors.stwriter import write_safetensors

    out.mkdir()
    shards = [safe_open(str(p), "pt") for p in sorted(hf.glob("*.safetensors"))]  # over 4 GB the export shards
    where = {name: f for f in shards for name in f.keys()}
    scale = {}

    def weight(name: str) -> torch.Tensor:
        w = where[name].get_tensor(name).float()
        scale[name] = w.abs().max() / 448.0
        return (w / scale[name]).to(torch.float8_e4m3fn)

    entries = []
    for name, f in where.items():
        shape = tuple(f.get_slice(name).get_shape())
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            prefix = name.removesuffix(".weight")
            entries += [(name, TensorInfo(shape, torch.float8_e4m3fn), lambda n=name: weight(n)),
                        (f"{prefix}.weight_scale", TensorInfo((), torch.float32), lambda n=name: scale.pop(n).reshape(())),
                        (f"{prefix}.input_scale", TensorInfo((), torch.float32), lambda: torch.tensor(0.05))]
        else:
            entries.append((name, TensorInfo(shape, torch.bfloat16), lambda n=name: where[n].get_tensor(n)))
    write_safetensors(out / "model.safetensors", entries)
    exclude = ["lm_head", "model.embed_tokens"]
    (out / "hf_quant_config.json").write_text(json.dumps({"producer": {"name": "modelopt"}, "quantization": {
        "quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": exclude}}))
    cfg = json.loads((hf / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": exclude}
    (out / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(out, 512)  # ids < 512 <= any vocabulary here: the texts only need to be tokens of the model
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="minitron-4b,minitron-8b,llama-3.1-minitron-4b-width")
    ap.add_argument("--layers", default="4,16")
    ap.add_argument("--artefacts", default="trtllm", help="comma list of trtllm, hf, unified")
    ap.add_argument("--modes", default="layers,full")
    ap.add_argument("--full-limit-gb", type=float, default=8.0, help="skip --full where the float32 model exceeds it")
    ap.add_argument("--plant-rope", action="store_true", help="also verify Llama checkpoints without rope scaling")
    ap.add_argument("--num-samples", type=int, default=8, help="unified: CNN/DailyMail texts")
    ap.add_argument("--max-tokens", type=int, default=128, help="unified: tokens per text")
    ap.add_argument("--workdir", default=None, help="where the random checkpoints go (deleted after each)")
    args = ap.parse_args()

    base, _, _ = run_child("baseline")
    print(f"baseline (python + torch + transformers + trt_minitron.verify imported): {base:.2f} GiB RSS\n")
    print("| preset | layers | artefact | checkpoint GB | mode | peak RSS GiB | over baseline GiB | seconds | result |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    texts = ["--dataset-file", str(SHARED), "--num-samples", str(args.num_samples), "--max-tokens", str(args.max_tokens)]
    for preset in args.presets.split(","):
        for layers in map(int, args.layers.split(",")):
            hf = dict(PRESETS[preset], num_hidden_layers=layers)
            cfg = ModelConfig.from_hf(hf)
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                root = Path(tmp)
                src = write_synthetic_hf(root / "src", hf, dtype=torch.bfloat16)
                for artefact in args.artefacts.split(","):
                    ckpt = root / artefact
                    if artefact == "unified":
                        hf_out = root / "hf" if (root / "hf").exists() else root / "hf-for-unified"
                        if not hf_out.exists():
                            run_export(ExportOptions(src=str(src), output=hf_out, dtype="bfloat16", format="hf"))
                        unified_fp8(hf_out, ckpt)
                    else:
                        run_export(ExportOptions(src=str(src), output=ckpt, dtype="bfloat16", format=artefact))
                    gb = sum(f.stat().st_size for f in ckpt.glob("*.safetensors")) / 1e9
                    runs = []
                    for mode in args.modes.split(","):
                        if mode == "full" and artefact != "trtllm":
                            continue
                        if mode == "full" and params(cfg) * 4 / 2**30 > args.full_limit_gb:
                            print(f"| {preset} | {layers} | {artefact} | {gb:.2f} | full | skipped: float32 model "
                                  f"{params(cfg) * 4 / 2**30:.1f} GiB > --full-limit-gb | | | |", flush=True)
                            continue
                        flags = ["--full"] if mode == "full" else texts if artefact == "unified" else []
                        runs.append((mode, ckpt, flags))
                    if args.plant_rope and cfg.rope_scaling is not None and artefact != "unified":
                        runs.append(("layers, rope scaling deleted", without_rope_scaling(ckpt, root / "norope"), []))
                    for mode, folder, flags in runs:
                        peak, seconds, verdict = run_child(str(folder), str(src), *flags)
                        print(f"| {preset} | {layers} | {artefact} | {gb:.2f} | {mode} | {peak:.2f} | {peak - base:.2f} | "
                              f"{seconds:.0f} | {verdict} |", flush=True)
                    shutil.rmtree(root / "norope", ignore_errors=True)
                    if artefact != "hf":
                        shutil.rmtree(ckpt, ignore_errors=True)
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
