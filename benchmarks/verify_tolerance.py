"""Measure the float32 noise `verify` must tolerate: correct exports, each compared layer by layer.

For every correct export (tiny models in three initialisations x both architectures x three dtypes, the
real SmolLM2-135M GGUF, random checkpoints with real Minitron widths) it prints the largest
teacher-forced stage difference relative to the block's update (what STAGE_RTOL must cover) and to the
block's output (RESID_RTOL), and the end-to-end logit difference relative to max |logit| (LOGIT_RTOL).
The constants in trt_minitron/verify/criterion.py are these maxima times a margin.
With --bugs it prints instead the planted bugs of tests/plant.py x initialisation x dtype: the first
divergence the layer-by-layer mode names, by how many tolerances, and the verdict of --full; then the quantized
rows: the doctored calibrations of tests/quant_plants.py and the issue-20 tamperings in tiny quantized checkpoints,
each with verify's exit code and the line that judges it, with and without the calibration proof. With --bugs --hf
the planted bugs of tests/plant_hf.py in `export --format hf` folders of every registered architecture (x init x
dtype) and in `quantize --format hf` unified checkpoints (x format x dtype): what verify names, and how far off.

    .venv/bin/python benchmarks/verify_tolerance.py [--skip-real]
    .venv/bin/python benchmarks/verify_tolerance.py --bugs [--quantized-only | --hf]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from synthetic import PRESETS, write_synthetic_hf  # noqa: E402

from trt_minitron.export.run import ExportOptions, run_export  # noqa: E402
from trt_minitron.options import VerifyOptions  # noqa: E402
from trt_minitron.verify.criterion import LOGIT_RTOL, RESID_RTOL, ROPE_PER_POSITION, STAGE_RTOL  # noqa: E402
from trt_minitron.verify.run import run_verify  # noqa: E402


def measure(name: str, src: Path | str, out: Path, dtype: str, tp: int = 1) -> tuple[float, float, float]:
    run_export(ExportOptions(src=str(src), output=out, dtype=dtype, tp=tp))
    r = run_verify(VerifyOptions(checkpoint=out, reference=src))
    assert r.ok, r.summary()
    upd = max(c.max_abs_diff / c.update_scale for c in r.checks if c.update_scale)
    res = max(c.max_abs_diff / c.output_scale for c in r.checks if c.output_scale)
    logit = r.logits.max_abs_diff / r.logits.max_abs_logit
    rope = next(c for c in r.checks if c.where == "rope")
    per_position = rope.max_abs_diff / r.num_tokens
    print(f"| {name} | {dtype} | {r.num_tokens} | {len(r.checks)} | {upd:.2e} | {res:.2e} | {per_position:.2e} | "
          f"{logit:.2e} | {r.logits.ties} |", flush=True)
    return upd, res, per_position, logit


def bug_table(root: Path) -> None:
    from plant import BUGS, LLAMA31_ROPE, delete_rope_scaling
    from tiny import make_tiny

    dtypes = ["float32", "float16", "bfloat16"]
    print("| bug | model | init | " + " | ".join(f"{d} (layers; full)" for d in dtypes) + " |")
    print("|---|---|---|" + "---|" * len(dtypes))
    cases = [(b.name, b.plant, arch, {}) for b in BUGS for arch in b.archs]
    cases.append(("rope-scaling-deleted, Llama-3.1 rope", delete_rope_scaling, "llama", LLAMA31_ROPE))
    for name, plant, arch, overrides in cases:
        for init in ("default", "small", "randomized"):
            src = make_tiny(arch, root / f"{arch}-{init}-{len(overrides)}", init=init, **overrides)
            other = make_tiny(arch, root / f"{arch}-{init}-{len(overrides)}-other", init=init, seed=1, **overrides)
            cells = []
            for dt in dtypes:
                out = root / f"bug-{name}-{arch}-{init}-{dt}"
                plant(src, out, dt, other)
                layers = run_verify(VerifyOptions(checkpoint=out, reference=src))
                full = run_verify(VerifyOptions(checkpoint=out, reference=src, full=True))
                bad = layers.first_divergence
                where = f"{bad.where} x{bad.max_abs_diff / bad.tolerance:.2g}" if bad else (
                    "logits" if not layers.ok else "**passed**")
                cells.append(f"{'FAIL' if not layers.ok else 'PASS'} ({where}); {'FAIL' if not full.ok else 'PASS'}")
                shutil.rmtree(out)
            print(f"| {name} | {arch} | {init} | " + " | ".join(cells) + " |", flush=True)


def _named(r) -> str:
    """verify's verdict with what it names first: a stage and by how many tolerances, a problem, a failing linear."""
    if r.ok:
        return "**PASS**"
    if r.problems:
        return f"FAIL ({r.problems[0][:90]})"
    first = getattr(r, "first_divergence", None)
    if first is not None:
        return f"FAIL ({first.where} x{first.max_abs_diff / first.tolerance:.2g})"
    failures = getattr(r, "failures", [])
    if failures:
        c = failures[0]
        return f"FAIL (layer {c.layer} {c.name}: {c.weight_mismatch:.0%} of weight elements)"
    diffs = getattr(r, "unquantized_differences", ())
    return f"FAIL ({diffs[0]})" if diffs else "FAIL (logits)"


def hf_bug_table(root: Path) -> None:
    """The planted bugs of tests/plant_hf.py: Hugging Face exports, then unified quantized checkpoints."""
    from plant_hf import BUGS, QUANT_BUGS
    from quant_fixtures import CALIB, SHARED, make_quant_model
    from tiny import make_registered

    from trt_minitron.archs import get_arch
    from trt_minitron.cli import main as cli

    dtypes = ["float32", "float16", "bfloat16"]
    sources, exports, correct = {}, {}, []
    for bug in BUGS:
        for name in bug.archs:
            for init in ("default", "randomized"):
                if (name, init) not in sources:
                    sources[(name, init)] = make_registered(get_arch(name), root / f"{name}-{init}", init=init)
                src = sources[(name, init)]
                for dt in dtypes:
                    if (name, init, dt) not in exports:
                        out = exports[(name, init, dt)] = root / f"{name}-{init}-{dt}-hf"
                        run_export(ExportOptions(src=str(src), output=out, dtype=dt, format="hf"))
                        correct.append(run_verify(VerifyOptions(checkpoint=out, reference=src)))
    print(f"correct exports: {sum(r.ok for r in correct)} of {len(correct)} PASS, largest logit |delta| "
          f"{max(r.logits.max_abs_diff for r in correct):.3g}, largest stage |delta| "
          f"{max(c.max_abs_diff for r in correct for c in r.checks):.3g}\n")
    print("| bug | model | init | " + " | ".join(dtypes) + " |")
    print("|---|---|---|" + "---|" * len(dtypes))
    for bug in BUGS:
        for name in bug.archs:
            for init in ("default", "randomized"):
                cells = []
                for dt in dtypes:
                    bad = root / "bad"
                    shutil.copytree(exports[(name, init, dt)], bad)
                    bug.plant(bad)
                    cells.append(_named(run_verify(VerifyOptions(checkpoint=bad, reference=sources[(name, init)]))))
                    shutil.rmtree(bad)
                print(f"| {bug.name} | {name} | {init} | " + " | ".join(cells) + " |", flush=True)

    qdtypes = ["float16", "bfloat16"]  # what ModelOpt's exporters write beside quantized weights
    texts = dict(dataset_file=SHARED, num_samples=4, max_tokens=64)
    print("\n| bug | model | format | " + " | ".join(f"{d} (correct; planted)" for d in qdtypes) + " |")
    print("|---|---|---|" + "---|" * len(qdtypes))
    kinds = {"LlamaForCausalLM": "llama", "NemotronForCausalLM": "nemotron", "MistralForCausalLM": "mistral"}
    for bug in QUANT_BUGS:
        for name in bug.archs:
            src = make_quant_model(kinds[name], root / f"q-{kinds[name]}") if not (root / f"q-{kinds[name]}").exists() \
                else root / f"q-{kinds[name]}"
            for variant in ("fp8", "int8_sq", "int4_awq+kv"):
                cells = []
                for dt in qdtypes:
                    good = root / f"q-{kinds[name]}-{variant}-{dt}"
                    if not good.exists():
                        kv = ["--kv-cache-dtype", "fp8"] if variant.endswith("+kv") else []
                        assert cli(["quantize", str(src), "-o", str(good), "--qformat", variant.removesuffix("+kv"),
                                    "--format", "hf", "--dtype", dt, *CALIB, *kv]) == 0
                    ok = run_verify(VerifyOptions(checkpoint=good, reference=src, **texts)).ok
                    bad = root / "bad"
                    shutil.copytree(good, bad)
                    bug.plant(bad)
                    planted = run_verify(VerifyOptions(checkpoint=bad, reference=src, **texts))
                    cells.append(f"{'PASS' if ok else '**FAIL**'}; {_named(planted)}")
                    shutil.rmtree(bad)
                print(f"| {bug.name} | {name} | {variant} | " + " | ".join(cells) + " |", flush=True)


def quantized_bug_table(root: Path) -> None:
    """verify of tiny quantized checkpoints with planted calibration and label bugs: exit code and judging line."""
    import json
    import subprocess

    from quant_fixtures import CALIB, SHARED, articles, has_fp8_kv, make_quant_model, qformat_of
    from quant_plants import PLANTS, scale
    from safetensors.torch import load_file, save_file

    texts = ["--dataset-file", str(SHARED), "--num-samples", "2", "--max-tokens", "32"]

    def cli(*args) -> tuple[int, str]:
        r = subprocess.run([sys.executable, "-m", "trt_minitron", *map(str, args)], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr

    def judged(out: str) -> str:
        keys = ("calibration", "first failure", "cost:", "trt-minitron: error", "PASS", "FAIL")
        lines = [x.strip() for x in out.splitlines() if x.strip().startswith(keys)]
        return "; ".join(lines[:2])

    sources, ckpts = {}, {}

    def checkpoint(kind: str, variant: str, tp: int, data: Path = SHARED) -> Path:
        if kind not in sources:
            sources[kind] = make_quant_model(kind, root / kind)
        key = (kind, variant, tp, data)
        if key not in ckpts:
            out = ckpts[key] = root / f"{kind}-{variant}-tp{tp}-{len(ckpts)}"
            kv = ["--kv-cache-dtype", "fp8"] if has_fp8_kv(variant) else []
            calib = [str(data) if a == str(SHARED) else a for a in CALIB]
            rc, text = cli("quantize", sources[kind], "-o", out, "--qformat", qformat_of(variant), "--tp", tp, *calib, *kv)
            assert rc == 0, text
        return ckpts[key]

    def planted(key, edit) -> Path:
        out = root / "planted"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(checkpoint(*key), out)
        edit(out)
        return out

    def set_nan(name: str):
        def edit(out: Path) -> None:
            f = out / "rank0.safetensors"
            t = load_file(f)
            t[name].view(-1)[0] = float("nan")
            save_file(t, f, metadata={"format": "pt"})
        return edit

    def config(edit):
        def apply(out: Path) -> None:
            c = json.loads((out / "config.json").read_text())
            edit(c)
            (out / "config.json").write_text(json.dumps(c))
        return apply

    def other_articles(out: Path) -> None:
        other = root / "other.jsonl"
        other.write_text("".join(json.dumps({"article": a, "highlights": "x"}) + "\n" for a in articles(16)[8:]))
        report = (out / "trt_minitron_quantize.json").read_text()
        shutil.rmtree(out)
        shutil.copytree(checkpoint("llama", "fp8", 1, other), out)
        (out / "trt_minitron_quantize.json").write_text(report)

    L0 = "transformer.layers.0."
    cases = [(name, key, lambda out, r=ranks, s=sidecar: scale(out, r, s)) for name, key, ranks, sidecar, _, _ in PLANTS]
    cases += [
        ("calibrated on other articles than recorded", ("llama", "fp8", 1), other_articles),
        ("NaN in a weight scale (AWQ)", ("llama", "int4_awq+kv", 1), set_nan(f"{L0}attention.dense.weights_scaling_factor")),
        ("NaN in an activation scale", ("nemotron", "fp8", 2), set_nan(f"{L0}mlp.fc.activation_scaling_factor")),
        ("exclude_modules removed", ("llama", "fp8", 1), config(lambda c: c["quantization"].pop("exclude_modules"))),
        ("kv_cache_quant_algo removed", ("llama", "fp8+kv", 1),
         config(lambda c: c["quantization"].update(kv_cache_quant_algo=None))),
        ("untouched", ("nemotron", "int4_awq+kv", 2), lambda out: None),
        ("untouched", ("mistral", "int8_sq", 2), lambda out: None),
    ]
    print("\n| planted in a tiny quantized checkpoint | model, format, tp | verify (conversion only) | verify (default: "
          "+ calibration proof) |")
    print("|---|---|---|---|")
    for name, key, edit in cases:
        out = planted(key, edit)
        cells = []
        for extra in (["--no-prove-calibration"], []):
            rc, text = cli("verify", out, "--reference", sources[key[0]], *texts, *extra)
            cells.append(f"exit {rc}: {judged(text)}")
        print(f"| {name} | {key[0]} {key[1]} tp{key[2]} | {cells[0]} | {cells[1]} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-real", action="store_true", help="tiny models only (no SmolLM2, no real widths)")
    ap.add_argument("--bugs", action="store_true", help="the planted-bug tables instead")
    ap.add_argument("--quantized-only", action="store_true", help="with --bugs: the quantized rows only")
    ap.add_argument("--hf", action="store_true", help="with --bugs: Hugging Face and unified quantized outputs instead")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from tiny import make_tiny

    if args.bugs:
        with tempfile.TemporaryDirectory() as tmp:
            if args.hf:
                hf_bug_table(Path(tmp))
                return
            if not args.quantized_only:
                bug_table(Path(tmp))
            quantized_bug_table(Path(tmp))
        return

    print("| model | dtype | tokens | stages | max stage delta/update | max stage delta/output | rope delta/tokens | "
          "logit delta/max logit | ties |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = [0.0, 0.0, 0.0, 0.0]
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
          f"{worst[1]:.2e} (RESID_RTOL {RESID_RTOL:.2g}), rope delta per position {worst[2]:.2e} "
          f"(ROPE_PER_POSITION {ROPE_PER_POSITION:.2g}), logits {worst[3]:.2e} (LOGIT_RTOL {LOGIT_RTOL:g})")


if __name__ == "__main__":
    main()
