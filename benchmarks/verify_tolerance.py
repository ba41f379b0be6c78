"""Measure the float32 noise `verify` must tolerate: correct exports, each compared layer by layer.

For every correct export (tiny models in three initialisations x both architectures x three dtypes, the
real SmolLM2-135M GGUF, random checkpoints with real Minitron widths) it prints the largest
teacher-forced stage difference relative to the block's update (what STAGE_RTOL must cover) and to the
block's output (RESID_RTOL), and the end-to-end logit difference relative to max |logit| (LOGIT_RTOL).
The constants in trt_minitron/verify/criterion.py are these maxima times a margin.

    .venv/bin/python benchmarks/verify_tolerance.py [--skip-real]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from trt_minitron.export import ExportOptions, run_export  # noqa: E402
from trt_minitron.synthetic import PRESETS, write_synthetic_hf  # noqa: E402
from trt_minitron.verify import run_verify  # noqa: E402
from trt_minitron.verify.criterion import LOGIT_RTOL, RESID_RTOL, STAGE_RTOL  # noqa: E402


def measure(name: str, src: Path | str, out: Path, dtype: str, tp: int = 1) -> tuple[float, float, float]:
    run_export(ExportOptions(src=str(src), output=out, dtype=dtype, tp=tp))
    r = run_verify(out, src)
    assert r.ok, r.summary()
    upd = max(c.max_abs_diff / c.update_scale for c in r.checks if c.update_scale)
    res = max(c.max_abs_diff / c.output_scale for c in r.checks if c.output_scale)
    logit = r.logits.max_abs_diff / r.logits.max_abs_logit
    print(f"| {name} | {dtype} | {r.num_tokens} | {len(r.checks)} | {upd:.2e} | {res:.2e} | {logit:.2e} | "
          f"{r.logits.ties} |", flush=True)
    return upd, res, logit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-real", action="store_true", help="tiny models only (no SmolLM2, no real widths)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from tiny import make_tiny

    print("| model | dtype | tokens | stages | max stage delta/update | max stage delta/output | logit delta/max logit | ties |")
    print("|---|---|---|---|---|---|---|---|")
    worst = [0.0, 0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases: list[tuple[str, Path | str, list[str], int]] = []
        for arch in ("llama", "nemotron"):
            for init in ("default", "small", "randomized"):
                cases.append((f"tiny {arch} {init} tp2", make_tiny(arch, root / f"{arch}-{init}", init=init),
                              ["float32", "float16", "bfloat16"], 2))
        if not args.skip_real:
            from test_smollm2 import smollm2_gguf

            cases.append(("SmolLM2-135M GGUF tp3/1", smollm2_gguf(), ["float32", "bfloat16"], 1))
            for preset in ("minitron-8b", "llama-3.1-minitron-4b-width"):
                hf = dict(PRESETS[preset], num_hidden_layers=2)
                src = write_synthetic_hf(root / preset, hf, dtype=torch.bfloat16)
                cases.append((f"{preset} widths, 2 layers, random", src, ["bfloat16"], 1))
        for i, (name, src, dtypes, tp) in enumerate(cases):
            for dt in dtypes:
                got = measure(name, src, root / f"out-{i}-{dt}", dt, tp)
                worst = [max(a, b) for a, b in zip(worst, got)]
    print(f"\nworst: stage delta/update {worst[0]:.2e} (STAGE_RTOL {STAGE_RTOL:g}), stage delta/output "
          f"{worst[1]:.2e} (RESID_RTOL {RESID_RTOL:.2g}), logits {worst[2]:.2e} (LOGIT_RTOL {LOGIT_RTOL:g})")


if __name__ == "__main__":
    main()
