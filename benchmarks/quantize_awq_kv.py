"""AWQ with an FP8 KV cache, layer by layer vs the whole model: how far the two answers are apart on SmolLM2-135M.

Layer by layer, every scale equals ModelOpt's own layerwise calibration bit for bit, and for every other format
the whole-model one too (tests/test_quant_layerwise.py). AWQ-lite with an FP8 KV cache is the exception: the
whole-model search pass runs with the K/V quantizers already on, so from layer 1 on a layer searches on
activations that carry the earlier layers' K/V rounding, while layer by layer it searches on float ones. This
script quantizes the real SmolLM2-135M-Instruct (GGUF -> HF float32, as quantize_accuracy.py) both ways and
reports how many AWQ scales differ and by how much, and each checkpoint's KL divergence from bf16 and top-1
agreement (teacher-forced, the reference model running each checkpoint as TensorRT-LLM would).

    flock /tmp/heavy.lock timeout 2h .venv/bin/python benchmarks/quantize_awq_kv.py --workdir /tmp/quant/awqkv
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize_accuracy import SHARED, gguf, kl_vs_baseline, run  # noqa: E402


def scale_differences(a: Path, b: Path) -> dict:
    """Weight and pre-quant scales of two checkpoints: how many tensors differ, the largest relative gap, the
    first layer with a difference."""
    import torch
    from safetensors.torch import load_file

    differ, worst, first = 0, 0.0, None
    names = 0
    for f in sorted(a.glob("rank*.safetensors")) + [a / "trt_minitron_quantize.safetensors"]:
        x, y = load_file(str(f)), load_file(str(b / f.name))
        for n in x:
            if not n.endswith(("scaling_factor", "pre_quant_scale")):
                continue
            names += 1
            if not torch.equal(x[n], y[n]):
                differ += 1
                rel = float(((x[n].float() - y[n].float()).abs() / y[n].float().abs().clamp(min=1e-12)).max())
                worst = max(worst, rel)
                layer = int(n.split("layers.")[1].split(".")[0])
                first = layer if first is None else min(first, layer)
    return {"scale_tensors": names, "differ": differ, "max_relative": worst, "first_layer": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="int4_awq,w4a8_awq")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--calib-size", type=int, default=16)
    ap.add_argument("--calib-max-len", type=int, default=256)
    ap.add_argument("--kl-samples", type=int, default=16)
    ap.add_argument("--kl-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-awq-kv"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    lines = SHARED.read_text().splitlines()
    calib = args.workdir / "calib.jsonl"
    calib.write_text("\n".join(lines[-args.calib_size:]) + "\n")
    src = args.workdir / "smollm2-hf-f32"
    if not src.exists():
        run(["export", str(gguf()), "-o", str(src), "--format", "hf", "--dtype", "float32"], args.threads)
    base = args.workdir / "bf16"
    shutil.rmtree(base, ignore_errors=True)
    run(["export", str(src), "-o", str(base), "--dtype", "bfloat16"], args.threads)

    print(f"SmolLM2-135M-Instruct, CPU, + FP8 KV cache, INT4 group {args.group_size}; calibration: the last "
          f"{args.calib_size} records x <= {args.calib_max_len} tokens; KL over the first {args.kl_samples} articles x "
          f"{args.kl_tokens} tokens, teacher-forced\n")
    print("| format | mode | quantize s | scale tensors differing (of) | max relative difference | first layer differing "
          "| KL vs bf16 (nats/token) | top-1 vs bf16 |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for fmt in args.formats.split(","):
        ckpts, seconds = {}, {}
        for mode in ("layers", "whole"):
            out = ckpts[mode] = args.workdir / f"{fmt}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            seconds[mode], _, _ = run(["quantize", str(src), "-o", str(out), "--qformat", fmt, "--kv-cache-dtype", "fp8",
                                       "--group-size", str(args.group_size), "--calib-dataset", str(calib),
                                       "--calib-size", str(args.calib_size), "--calib-max-len", str(args.calib_max_len),
                                       "--device", "cpu", *(["--whole-model"] if mode == "whole" else [])],
                                      args.threads)
        diff = scale_differences(ckpts["layers"], ckpts["whole"])
        kl = kl_vs_baseline(base, ckpts, [json.loads(x) for x in lines[: args.kl_samples]], args.kl_tokens)
        for mode in ("layers", "whole"):
            d = kl[mode]
            print(f"| {fmt} | {mode} | {seconds[mode]:.0f} | {diff['differ']} ({diff['scale_tensors']}) | "
                  f"{diff['max_relative']:.3f} | {diff['first_layer']} | {d['kl_mean']:.5f} | "
                  f"{d['top1_agreement']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
