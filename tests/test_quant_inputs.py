"""`quantize` takes any source `export` takes, or refuses it in one line (issue 15, item 5), and its own inputs
(--tokenizer, --resume state) are untrusted: every case asserts the exit code, one line on stderr without a
traceback, nothing left beside the output, and the user's files byte-identical."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import pytest
from cli_checks import names, tree_digest, user_error
from quant_fixtures import SHARED, make_quant_model, write_tokenizer

from trt_minitron.cli import main

CALIB = ["--calib-dataset", str(SHARED), "--calib-size", "4", "--calib-max-len", "32", "--batch-size", "2"]
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_quant_model("llama", tmp_path_factory.mktemp("inputs") / "llama", num_hidden_layers=2)


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=lambda _d, files: [f for f in files if f in drop])
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def _refused(capsys, tmp_path: Path, args: list, match: str, *watched: Path) -> str:
    """quantize with `args` -> exit 2, one line containing `match`; no output, no sibling left, `watched` unchanged."""
    before = {p: tree_digest(p) for p in watched}
    entries = names(tmp_path)
    line = user_error(capsys, "quantize", *args, "-o", tmp_path / "out", *CALIB)
    assert match in line, line
    assert names(tmp_path) == entries and not (tmp_path / "out").exists()
    assert {p: tree_digest(p) for p in watched} == before
    return line


def _quantizes(tmp_path: Path, args: list, *watched: Path) -> Path:
    before = {p: tree_digest(p) for p in watched}
    out = tmp_path / "out"
    assert main(["quantize", *map(str, args), "-o", str(out), "--qformat", "fp8", *CALIB]) == 0
    assert sorted(n for n in names(tmp_path) if n.startswith(".")) == []
    assert {p: tree_digest(p) for p in watched} == before
    return out


def test_config_without_model_type_quantizes(tiny, tmp_path):
    """export and verify read the architecture from `architectures`; so does quantize (it used to die in transformers
    with exit 70: "Unrecognized model ... Should have a `model_type` key")."""
    src = _copy(tiny, tmp_path / "src")
    _edit_config(src, model_type=None)
    out = _quantizes(tmp_path, [src], src)
    assert json.loads((out / "config.json").read_text())["architecture"] == "LlamaForCausalLM"


def test_source_without_tokenizer_is_refused_and_tokenizer_flag_supplies_one(tiny, tmp_path, capsys):
    src = _copy(tiny, tmp_path / "src", drop=TOKENIZER)  # a bare save_pretrained of the model
    _refused(capsys, tmp_path, [src, "--qformat", "fp8"],
             "carries no tokenizer, and calibration needs text: pass --tokenizer DIR", src)
    out = _quantizes(tmp_path, [src, "--tokenizer", tiny], src, tiny)
    for name in TOKENIZER:  # the checkpoint carries the tokenizer it was calibrated with
        assert (out / name).read_bytes() == (tiny / name).read_bytes()


def test_config_without_model_type_and_without_tokenizer(tiny, tmp_path, capsys):
    src = _copy(tiny, tmp_path / "src", drop=TOKENIZER)
    _edit_config(src, model_type=None)
    _refused(capsys, tmp_path, [src, "--qformat", "fp8"], "pass --tokenizer DIR", src)
    _quantizes(tmp_path, [src, "--tokenizer", tiny], src, tiny)


@pytest.mark.parametrize("case", ["missing", "a file", "empty", "corrupt json", "not a tokenizer", "larger vocab"])
def test_bad_tokenizer_flag_is_one_line(tiny, tmp_path, capsys, case):
    src = _copy(tiny, tmp_path / "src", drop=TOKENIZER)
    tok = tmp_path / "tok"
    match = {"missing": "no such folder", "a file": "no such folder", "empty": "cannot load --tokenizer",
             "corrupt json": "cannot load --tokenizer", "not a tokenizer": "cannot load --tokenizer",
             "larger vocab": "produced token id"}[case]
    if case == "a file":
        tok.write_text("not a folder")
    elif case == "empty":
        tok.mkdir()
    elif case == "corrupt json":
        tok.mkdir()
        (tok / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    elif case == "not a tokenizer":
        tok.mkdir()
        (tok / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "NoSuchTokenizer"}))
        (tok / "tokenizer.json").write_text(json.dumps({"hello": "world"}))
    elif case == "larger vocab":
        write_tokenizer(tok, 1024)  # ids up to 1023; the model has 256 embedding rows
    watched = [src] + ([tok] if tok.exists() else [])
    _refused(capsys, tmp_path, [src, "--qformat", "fp8", "--tokenizer", tok], match, *watched)


def test_source_with_a_broken_tokenizer_is_one_line(tiny, tmp_path, capsys):
    src = _copy(tiny, tmp_path / "src")
    (src / "tokenizer.json").write_text("{ not json")
    line = _refused(capsys, tmp_path, [src, "--qformat", "fp8"], "cannot load the tokenizer of", src)
    assert line.endswith("pass --tokenizer DIR with a working one")


@pytest.mark.parametrize("change,match", [({"num_hidden_layers": 5}, "the config says num_hidden_layers=5, but the "
                                                                   "weights hold 2 layers (model.layers.0 to model.layers.1)"),
                                          ({"intermediate_size": 640}, "but the config implies [640, 256]"),
                                          ({"architectures": ["GPT2LMHeadModel"]}, "unsupported architecture")])
def test_config_that_contradicts_the_weights_is_refused_before_calibration(tiny, tmp_path, capsys, change, match):
    src = _copy(tiny, tmp_path / "src")
    _edit_config(src, **change)
    _refused(capsys, tmp_path, [src, "--qformat", "fp8"], match, src)


def test_resume_with_whole_model_is_refused(tiny, tmp_path, capsys):
    _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume", "--whole-model"],
             "--resume continues a layer-by-layer run", tiny)


def _resume_state(tiny: Path, tmp_path: Path, capsys) -> Path:
    """An unfinished --resume run's state: the run crashes (KeyboardInterrupt outside our signal handler) right
    after committing its first layer."""
    from trt_minitron.quantize.layer_store import LayerStore

    state = tmp_path / ".out.quantize-resume"
    original = LayerStore.save_layer

    def save_then_stop(self, index, *args):
        original(self, index, *args)
        raise KeyboardInterrupt  # stands in for a crash after layer 0 was committed

    LayerStore.save_layer = save_then_stop
    try:
        assert main(["quantize", str(tiny), "-o", str(tmp_path / "out"), "--qformat", "fp8", "--resume", *CALIB]) == 130
    finally:
        LayerStore.save_layer = original
    assert f"1 finished layer(s) kept in {state}; rerun the same command with --resume" in capsys.readouterr().err
    assert json.loads((state / "manifest.json").read_text())["layers_done"] == 1
    assert names(tmp_path) == [".out.quantize-resume"]
    return state


def test_resume_state_that_is_corrupt_or_in_use_is_refused(tiny, tmp_path, capsys):
    state = _resume_state(tiny, tmp_path, capsys)
    manifest = state / "manifest.json"
    good = manifest.read_bytes()
    with open(state / "lock", "w") as held:  # another run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume"], "is in use by another quantize run",
                 tiny, manifest)
    manifest.write_text('{"version": 1, "layers_done": ')
    _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume"], "manifest.json is unreadable", tiny, state)
    manifest.write_bytes(good.replace(b'"layers_done": 1', b'"layers_done": 7'))
    _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume"], "is inconsistent", tiny, state)
    manifest.write_bytes(good)
    layer = state / "layer_00000.safetensors"
    saved = layer.read_bytes()
    layer.write_bytes(saved[:len(saved) // 2])  # truncated
    _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume"], "layer_00000.safetensors: ", tiny, state)
    layer.unlink()
    _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume"], "is inconsistent (a file it lists is missing?)",
             tiny, state)
    layer.write_bytes(saved)
    _refused(capsys, tmp_path, [tiny, "--qformat", "fp8", "--resume", "--kv-cache-dtype", "fp8"],
             "options.kv_cache_dtype: None then, 'fp8' now", tiny, state)


def test_run_without_resume_leaves_a_resume_state_alone(tiny, tmp_path, capsys):
    state = _resume_state(tiny, tmp_path, capsys)
    before = tree_digest(state)
    assert main(["quantize", str(tiny), "-o", str(tmp_path / "out"), "--qformat", "fp8", *CALIB]) == 0
    assert "holds layers of an interrupted --resume run; this run starts afresh" in capsys.readouterr().err
    assert tree_digest(state) == before
    shutil.rmtree(tmp_path / "out")
    assert main(["quantize", str(tiny), "-o", str(tmp_path / "out"), "--qformat", "fp8", "--resume", *CALIB]) == 0
    assert "1 layers resumed" in capsys.readouterr().err and not state.exists()
