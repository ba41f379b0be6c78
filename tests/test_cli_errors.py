"""One error path: user errors are one line and exit 2, verify/accuracy failures exit 1, signals 130/143,
and anything else is an internal error (exit 70) whose traceback shows only with --debug."""

import errno
import json
import subprocess
import sys

import pytest
from cli_checks import names, tree_digest, user_error
from test_backend_trtllm import write_tokenizer
from tiny import make_tiny_llama

from trt_minitron.cli import INTERNAL_ERROR_EXIT, main
from trt_minitron.export.run import ExportOptions, run_export


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    hf = make_tiny_llama(root / "hf")
    ckpt = root / "ckpt"
    run_export(ExportOptions(src=str(hf), output=ckpt, dtype="float32"))
    tok = root / "tok"
    tok.mkdir()
    write_tokenizer(tok)
    return {"hf": hf, "ckpt": ckpt, "tok": tok}


def _boom(*_a, **_k):
    raise RuntimeError("planner exploded\nsecond line of detail")


@pytest.mark.parametrize("debug", ["none", "flag", "env"])
def test_internal_error_is_one_line_with_traceback_only_on_debug(models, tmp_path, capsys, monkeypatch, debug):
    monkeypatch.setattr("trt_minitron.export.run.plan_export", _boom)
    monkeypatch.delenv("TRT_MINITRON_DEBUG", raising=False)
    args = ["export", str(models["hf"]), "--output", str(tmp_path / "out")]
    if debug == "flag":
        args = ["--debug", *args]
    elif debug == "env":
        monkeypatch.setenv("TRT_MINITRON_DEBUG", "1")
    assert main(args) == INTERNAL_ERROR_EXIT == 70
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("trt-minitron: internal error, please report it: RuntimeError: planner exploded "
                           "second line of detail")
    if debug == "none":
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "--debug" in last
    else:
        assert err.startswith("Traceback (most recent call last):") and "_boom" in err
    assert names(tmp_path) == []


def test_internal_error_in_a_real_process_prints_no_traceback(models, tmp_path):
    code = ("import sys, trt_minitron.export.run as e; e.plan_export = lambda *a, **k: {}['missing']; "
            "from trt_minitron.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "export", str(models["hf"]), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 70 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "internal error, please report it: KeyError: 'missing'" in r.stderr


@pytest.mark.parametrize("args, expect", [
    (["export"], "Missing argument 'src'. (see 'trt-minitron export --help')"),
    (["export", "x", "-o", "y", "--tp", "two"], "Invalid value for '--tp'"),
    (["export", "x", "-o", "y", "--bogus"], "No such option: --bogus"),
    (["nonsense"], "No such command 'nonsense'."),
])
def test_usage_errors_are_one_line(capsys, args, expect):
    assert expect in user_error(capsys, *args)


def test_environment_oserror_is_one_line_not_a_bug(models, tmp_path, capsys, monkeypatch):
    def denied(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/model/model.safetensors")

    monkeypatch.setattr("trt_minitron.export.run.open_source", denied)
    msg = user_error(capsys, "export", models["hf"], "--output", tmp_path / "out")
    assert msg == "Permission denied: /data/model/model.safetensors"


def test_verify_failure_keeps_exit_1(models, tmp_path, capsys):
    other = make_tiny_llama(tmp_path / "other", seed=7)
    assert main(["verify", str(models["ckpt"]), "--reference", str(other)]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("kind, expect", [
    ("ckpt", "is a TensorRT-LLM checkpoint, not a Hugging Face model; use --backend torch"),
    ("engine", "is a TensorRT-LLM engine folder, not a Hugging Face model; use --backend trtllm"),
])
def test_generate_hf_backend_on_a_tensorrt_llm_folder_is_one_line(models, tmp_path, capsys, kind, expect):
    folder = models["ckpt"]
    if kind == "engine":
        folder = tmp_path / "engine"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"version": "1.2", "pretrained_config": {},
                                                        "build_config": {}}))
    before = tree_digest(folder)
    msg = user_error(capsys, "generate", "--backend", "hf", folder, "--prompt", "w1", "--tokenizer", models["tok"])
    assert msg == f"{folder} {expect} {folder}" + (" (or the Hugging Face folder it was exported from)"
                                                   if kind == "ckpt" else "")
    assert tree_digest(folder) == before


def test_missing_tokenizer_is_one_line(models, capsys):
    msg = user_error(capsys, "generate", "--backend", "hf", models["hf"], "--prompt", "hi")
    assert msg.startswith(f"cannot load a tokenizer from {models['hf']}: ") and "pass --tokenizer DIR" in msg


@pytest.mark.parametrize("report", ["folder", "under_a_file"])
def test_summarize_report_is_checked_before_the_first_sample(models, tmp_path, capsys, monkeypatch, report):
    def never(*_a, **_k):
        raise AssertionError("a backend was opened before --report was checked")

    monkeypatch.setattr("trt_minitron.summarize.run.open_backend", never)
    monkeypatch.setattr("trt_minitron.summarize.run.load_records", never)
    if report == "folder":
        path, expect = tmp_path / "reports", "is a folder; give a file path such as"
        path.mkdir()
    else:
        (tmp_path / "afile").write_text("x")
        path, expect = tmp_path / "afile" / "summarize.json", "is a file, not a folder"
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "article": "w1 w2 w3", "highlights": "w2"}) + "\n")
    before = names(tmp_path)
    msg = user_error(capsys, "summarize", "--backend", "torch", models["ckpt"], "--tokenizer", models["tok"],
                     "--dataset-file", data, "--num-samples", "1", "--report", path)
    assert msg.startswith(f"--report {path} ") and expect in msg, msg
    assert names(tmp_path) == before


def test_summarize_report_is_written_atomically(models, tmp_path, capsys):
    from trt_minitron.options import BackendSpec
    from trt_minitron.summarize.run import SummarizeOptions, run_summarize

    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "article": "w1 w2 w3", "highlights": "w2"}) + "\n")
    report = tmp_path / "new" / "r.json"
    spec = BackendSpec(kind="torch", model=str(models["ckpt"]), tokenizer=str(models["tok"]))
    opts = SummarizeOptions(backends=(spec,), dataset_file=data, num_samples=1, output_len=2, report=report,
                            warmup=False)
    run_summarize(opts)
    assert json.loads(report.read_text())["dataset"]["num_samples"] == 1 and names(report.parent) == ["r.json"]
