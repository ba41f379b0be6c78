"""Rewrite imports written before issue 16's layout (modules moved into wings, a few names moved) to the new paths.

    python scripts/rewrite_imports.py [PATH ...]     (default: trt_minitron tests benchmarks scripts)

For merging a branch that still imports the old modules: `from ..trtllm_ckpt import X` in a file that now lives
in checkpoints/ or export/, `from trt_minitron.quant.formats import Y`, `from .options import Sampling`,
monkeypatch strings like "trt_minitron.export.plan_export", and test helpers renamed by behaviour (`from hardening
import`). A relative import is read from the file's new place first, and from its old place (MOVES, reversed)
only when that names no module: a merged file may hold both.
Only the module part of a statement changes unless names moved; what cannot be rewritten (a changed signature,
a removed name) is listed with its line. Run `ruff check --fix` afterwards to sort the imports.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PKG = "trt_minitron"
ROOT = Path(__file__).resolve().parents[1]

# old path -> new path, as `git diff --name-status -M 61f6067 <issue 16 head>` lists them
MOVES = """
config.py archs/config.py
serving/client.py backends/openai_client.py
serving/report.py bench/report.py
serving/bench.py bench/run.py
serving/stats.py bench/stats.py
build_api.py build/api.py
plan.py build/plan.py
build.py build/run.py
quant/formats.py checkpoints/quant_formats.py
quant/checkpoint.py checkpoints/quantized.py
reference.py checkpoints/reference.py
trtllm_ckpt.py checkpoints/trtllm.py
data.py eval/data.py
metrics.py eval/metrics.py
hf_writer.py export/hf_writer.py
export.py export/run.py
transfer.py export/transfer.py
backends/generate.py generate/run.py
quant/__init__.py quantize/__init__.py
quant/assemble.py quantize/assemble.py
quant/calib.py quantize/calib.py
quant/modelopt_run.py quantize/modelopt_run.py
quant/recompute.py quantize/recompute.py
quant/quantize.py quantize/run.py
quant/teacher.py quantize/teacher.py
serving/routes.py serve/routes.py
serving/launch.py serve/run.py
sources/gguf_config.py sources/gguf/config.py
sources/gguf_dequant.py sources/gguf/dequant.py
sources/gguf_format.py sources/gguf/format.py
sources/gguf.py sources/gguf/source.py
sources/gguf_tokenizer.py sources/gguf/tokenizer.py
summarize.py summarize/run.py
dtypes.py tensors/dtypes.py
tensors.py tensors/info.py
layout.py tensors/layout.py
mapping.py tensors/mapping.py
sources/stfile.py tensors/stfile.py
stheader.py tensors/stheader.py
stwriter.py tensors/stwriter.py
trtllm_install.py trtllm/install.py
llmapi_args.py trtllm/llmapi_args.py
serving/pytorch_route.py serve/pytorch_route.py
serving/connection.py backends/openai_connection.py
serving/replies.py backends/openai_replies.py
"""
OUT_OF_PACKAGE = {"trt_minitron.synthetic": "synthetic", "trt_minitron.sources.gguf_transformers": "gguf_transformers"}
# test helpers renamed by behaviour (b9bbed9): `from hardening import PREFIX` in a test written before
TEST_MODULES = {"hardening": "cli_checks", "test_hardening_sources": "test_bad_sources",
                "test_bench_fake": "test_bench_server_failures", "test_hardening_cli": "test_cli_errors",
                "test_export_speed_paths": "test_export_fast_paths", "test_build_fake_trtllm": "test_fake_trtllm_fidelity",
                "test_generate_cli": "test_generate", "test_hardening_signals": "test_interrupts",
                "test_hardening_nemo": "test_nemo_unpacking", "test_hardening_output": "test_output_folders",
                "test_quant_cli": "test_quantize", "test_verify_bugs": "test_verify_catches_planted_bugs"}
# (module, name) -> the module the name lives in now (module names are the new ones); names still importable from
# their old module (it imports them: DatasetError, DEFAULT_TEMPLATE, APIS, source_paths) are left alone.
NAMES = {
    ("trt_minitron.options", "Sampling"): "trt_minitron.backends.base",
    ("trt_minitron.backends", "Sampling"): "trt_minitron.backends.base",
    ("trt_minitron.backends", "Generation"): "trt_minitron.backends.base",
    ("trt_minitron.backends", "Backend"): "trt_minitron.backends.base",
    ("trt_minitron.backends", "BackendSpec"): "trt_minitron.options",
    ("trt_minitron.backends", "BACKENDS"): "trt_minitron.options",
    ("trt_minitron.backends.openai_client", "normalize_url"): "trt_minitron.options",
    **{(m, n): "trt_minitron.options" for m in ("trt_minitron.backends.openai_client", "trt_minitron.backends.openai_connection")
       for n in ("normalize_url", "Timeouts", "TIMEOUT_HELP", "TIMEOUT_KEYS")},
    ("trt_minitron.serve.routes", "model_kind"): "trt_minitron.trtllm.folders",
    ("trt_minitron.serve.routes", "HF_WEIGHTS"): "trt_minitron.trtllm.folders",
    **{("trt_minitron.quantize.recompute", n): "trt_minitron.checkpoints.quantized"
       for n in ("PQS_SIDECAR", "PQS_KEY", "load_prequant_scales", "check_sidecar")},
    **{("trt_minitron.verify", n): "trt_minitron.verify.run"
       for n in ("run_verify", "prompt_ids", "DEFAULT_PROMPT", "match_reference")},
    **{("trt_minitron.verify", n): "trt_minitron.verify.criterion" for n in ("Check", "LogitReport", "VerifyResult")},
}
# What changed shape rather than place: found by pattern, rewritten by hand.
BY_HAND = [
    (r"\bGENERATE_SAMPLING\b|sampling=Sampling\(", "GenerateOptions states max_new_tokens, temperature, top_k, top_p, "
     "num_beams, seed itself (no `sampling` field)"),
    (r"\bQUANT_TEXTS\b|\bQUANT_TOKENS\b", "verify's defaults are VerifyOptions.num_samples / max_tokens"),
    (r"run_verify\((?!VerifyOptions|opts)", "run_verify takes options.VerifyOptions(checkpoint=, reference=, ...)"),
    (r"\.points\(\)|opts\.params\(", "BenchOptions.points()/params() are bench.run.sweep_points(opts) / "
     "request_params(opts)"),
    (r"check_report_path|check_writable\(Path\(", "the file output rule is outputs.check_output_file(path, flag=, "
     "overwrite=, example=); the writability probe outputs.check_writable(path, label)"),
    (r"\bwrite_report\(|_atomic_write\(", "files are written with outputs.write_file(path, data, "
     "overwrite=) (atomic, 0644)"),
    (r"archs\.base import .*\bfunction_rule\b", "function_rule lives in tests/plant.py"),
    (r"sort_by_length", "SummarizeOptions.sort_by_length is gone (always sorted)"),
    (r"\bDTYPES\[", "export's DTYPES is gone: tensors.dtypes.torch_dtype(name)"),
    (r"\.sampling\b", "SummarizeOptions/GenerateOptions have no .sampling: build backends.base.Sampling from fields"),
    (r"request_timeout_s\b|\btimeout_s=", "a request's limits are options.Timeouts (BenchOptions/BackendSpec.request_timeout, "
     "RequestParams(timeouts=), make_client(url, timeouts))"),
]


def _mod(rel: str) -> str:
    parts = list(Path(rel).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_mod(f"{PKG}/{a}"): _mod(f"{PKG}/{b}") for a, b in (line.split() for line in MOVES.strip().splitlines())}
MODULES.update(OUT_OF_PACKAGE)
OLD_PATH = {f"{PKG}/{b}": f"{PKG}/{a}" for a, b in (line.split() for line in MOVES.strip().splitlines())}


def current_modules() -> set[str]:
    return {_mod(str(p.relative_to(ROOT))) for p in (ROOT / PKG).rglob("*.py")}


_PROVIDES: dict[str, set[str]] = {}


def provides(module: str, name: str) -> bool:
    """Whether the current `module` defines or imports `name` at its top level (read with ast)."""
    if module not in _PROVIDES:
        base = ROOT / Path(*module.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        names: set[str] = set()
        if path.is_file():
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names.update((a.asname or a.name).split(".")[0] for a in node.names)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                        names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        _PROVIDES[module] = names
    return name in _PROVIDES[module]


def resolve(node: ast.ImportFrom, mod: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def render(target: str, file_mod: str | None, is_pkg: bool, relative: bool) -> str:
    if not relative or file_mod is None or not (target == PKG or target.startswith(PKG + ".")):
        return target
    base = file_mod.split(".") if is_pkg else file_mod.split(".")[:-1]
    t = target.split(".")
    c = 0
    while c < min(len(base), len(t)) and base[c] == t[c]:
        c += 1
    return "." * (len(base) - c + 1) + ".".join(t[c:])


def rewrite(path: Path, now: set[str], notes: list[str]) -> bool:
    text = path.read_text()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    rel = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    in_pkg = rel.startswith(PKG + "/")
    new_mod = _mod(rel) if in_pkg else None
    old_mod = _mod(OLD_PATH.get(rel, rel)) if in_pkg else None
    is_pkg = path.name == "__init__.py"
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = resolve(node, new_mod, is_pkg) if node.level and new_mod else (node.module or "")
            if node.level and old_mod and old_mod != new_mod and not all(
                    f"{base}.{a.name}" in now or (base in now and provides(base, a.name)) for a in node.names):
                base = resolve(node, old_mod, is_pkg)  # a line written where the file used to be
            if not node.level and base in TEST_MODULES:
                edits.append((node.lineno, node.col_offset, "spec", base, TEST_MODULES[base]))
                continue
            if not base.startswith(PKG):
                continue
            new_base = MODULES.get(base, base)
            groups: dict[str, list[str]] = {}
            for a in node.names:
                alias = a.asname or a.name
                full = f"{base}.{a.name}"
                if full in now or (base in now and provides(base, a.name)):  # where it is now
                    groups.setdefault(base, []).append(a.name if not a.asname else f"{a.name} as {a.asname}")
                elif full in MODULES:  # a moved module imported by name
                    parent, leaf = MODULES[full].rsplit(".", 1)
                    groups.setdefault(parent, []).append(leaf if leaf == alias else f"{leaf} as {alias}")
                else:
                    home = NAMES.get((new_base, a.name), new_base)
                    groups.setdefault(home, []).append(a.name if not a.asname else f"{a.name} as {a.asname}")
            stmts = [f"from {render(p, new_mod, is_pkg, bool(node.level))} import {', '.join(ns)}" for p, ns in groups.items()]
            old = "".join(lines[node.lineno - 1:node.end_lineno])[node.col_offset:]
            spec = "." * node.level + (node.module or "")
            if len(stmts) == 1 and stmts[0].split(" import ")[0] == f"from {spec}":
                continue  # nothing moved
            indent = lines[node.lineno - 1][:node.col_offset]
            comment = re.search(r"\s+#.*$", lines[node.end_lineno - 1].rstrip("\n"))
            same_names = [a.name if not a.asname else f"{a.name} as {a.asname}" for a in node.names]
            if len(groups) == 1 and next(iter(groups.values())) == same_names:  # only the module part changes
                edits.append((node.lineno, node.col_offset, "spec", spec, stmts[0].split(" import ")[0][5:]))
            else:
                new_text = ("\n" + indent).join(stmts) + (comment.group(0) if comment else "") + "\n"
                if new_text.strip() != old.strip():
                    edits.append((node.lineno, node.col_offset, "stmt", node.end_lineno, new_text))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    if a.asname is None:
                        notes.append(f"{path}:{node.lineno}: `import {a.name}`: bind the new module {MODULES[a.name]}")
                    else:
                        edits.append((node.lineno, node.col_offset, "name", a.name, MODULES[a.name]))
    for ln, col, kind, a, b in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        line = lines[ln - 1]
        if kind == "spec":
            m = re.compile(r"from\s+" + re.escape(a) + r"(?=\s+import\b)").search(line, col)
            lines[ln - 1] = line[:m.start()] + f"from {b}" + line[m.end():]
        elif kind == "name":
            m = re.compile(r"\b" + re.escape(a) + r"\b").search(line, col)
            lines[ln - 1] = line[:m.start()] + b + line[m.end():]
        else:
            lines[ln - 1:a] = [line[:col] + b]
    out = "".join(lines)

    def dotted(m: re.Match) -> str:  # "trt_minitron.export.plan_export" in strings (monkeypatch targets)
        module, _, attr = m.group(1).rpartition(".")
        if m.group(1) in now or module not in MODULES:
            return m.group(0)
        return m.group(0).replace(m.group(1), f"{MODULES[module]}.{attr}")

    out = re.sub(r"[\"'](trt_minitron(?:\.\w+)+)[\"']", dotted, out)
    for i, line in enumerate(out.splitlines(), 1):
        for pattern, what in BY_HAND:
            if re.search(pattern, line):
                notes.append(f"{path}:{i}: {what}")
    if out != text:
        path.write_text(out)
        return True
    return False


def main(argv: list[str]) -> int:
    targets = [Path(a) for a in argv] or [ROOT / d for d in (PKG, "tests", "benchmarks", "scripts")]
    files = [p for t in targets for p in ([t] if t.is_file() else sorted(t.rglob("*.py")))
             if "fakes" not in p.parts and p.name != "rewrite_imports.py"]
    now, notes, changed = current_modules(), [], []
    for p in files:
        if rewrite(p, now, notes):
            changed.append(p)
    print(f"rewrote {len(changed)} of {len(files)} files" + "".join(f"\n  {p}" for p in changed))
    if notes:
        print("by hand (a name or signature changed, not only a path):")
        print("\n".join(f"  {n}" for n in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
