"""The output rule for files, as for folders: a report or plot path that exists and is not recognisably ours is
refused without --overwrite, before the run starts (one line, exit 2, the user's file byte-identical, nothing
left behind); one trt-minitron wrote is replaced; files are written atomically, 0644, missing parents created.
The sidecar and report of `quantize` live in its output folder, under the folder rule: checked the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIServer, make_word_tokenizer
from tiny import make_tiny_llama

from trt_minitron.cli import main
from trt_minitron.errors import OutputError, OutputExistsError
from trt_minitron.outputs import check_output_file, is_ours, write_file

USER_JSON = b'{"mine": "precious"}'
USER_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + bytes(17) + b"not ours"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    data = root / "records.jsonl"
    data.write_text(json.dumps({"id": "a", "article": "the cat sat on the mat", "highlights": "the cat sat"}) + "\n")
    return {"data": data, "tok": make_word_tokenizer(root / "tok", ["the cat sat on the mat", "TL;DR:"])}


@pytest.fixture(autouse=True)
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("trt-minitron: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.removeprefix("trt-minitron: error: ")


def summarize(url, assets, report, *extra):
    return ["summarize", "--backend", "openai", url, "--tokenizer", assets["tok"], "--dataset-file", assets["data"],
            "--num-samples", "1", "--output-len", "3", "--no-warmup", "--report", report, *extra]


def bench(url, assets, *extra):
    return ["bench", url, "--tokenizer", assets["tok"], "--dataset-file", assets["data"], "--num-requests", "1",
            "--output-len", "3", "--warmup", "0", *extra]


def test_summarize_refuses_a_users_report_before_asking_the_server(assets, tmp_path, capsys):
    user = tmp_path / "existing.json"
    user.write_bytes(USER_JSON)
    before = tree(tmp_path)
    with FakeOpenAIServer() as srv:
        msg = refused(capsys, *summarize(srv.url, assets, user))
    assert srv.requests == []  # checked before the run, not after the work
    assert msg == (f"--report {user} exists and is not a file trt-minitron wrote; pass --overwrite to replace it, "
                   "or choose another path")
    assert tree(tmp_path) == before


def test_summarize_replaces_its_own_report_and_a_users_only_with_overwrite(assets, tmp_path, capsys):
    report = tmp_path / "new" / "deeper" / "r.json"  # missing parents are created
    with FakeOpenAIServer() as srv:
        assert main([str(a) for a in summarize(srv.url, assets, report)]) == 0
        first = json.loads(report.read_text())
        assert first["tool"] == "trt-minitron summarize" and is_ours(report)
        assert oct(report.stat().st_mode & 0o777) == "0o644"
        assert main([str(a) for a in summarize(srv.url, assets, report, "--seed", "1")]) == 0  # ours: replaced
        assert json.loads(report.read_text())["settings"]["seed"] == 1
        user = tmp_path / "user.json"
        user.write_bytes(USER_JSON)
        assert main([str(a) for a in summarize(srv.url, assets, user, "--overwrite")]) == 0
    assert json.loads(user.read_text())["tool"] == "trt-minitron summarize"
    assert sorted(tree(tmp_path)) == ["new/deeper/r.json", "user.json"]


@pytest.mark.parametrize("flag, name, content", [("--report", "existing.json", USER_JSON),
                                                 ("--report", "notes.txt", b"my notes\n"),
                                                 ("--plot", "existing.png", USER_PNG),
                                                 ("--csv", "existing.csv", b"point,concurrency\nc=1,1\n")])
def test_bench_refuses_a_users_file_before_the_run(assets, tmp_path, capsys, flag, name, content):
    user = tmp_path / name
    user.write_bytes(content)
    before = tree(tmp_path)
    with FakeOpenAIServer() as srv:
        msg = refused(capsys, *bench(srv.url, assets, flag, user))
    assert srv.requests == []
    assert msg.startswith(f"{flag} {user} exists and is not a file trt-minitron wrote; pass --overwrite")
    assert tree(tmp_path) == before


def test_bench_replaces_its_own_report_and_plot(assets, tmp_path, capsys):
    report, plot, csv = tmp_path / "out" / "r.json", tmp_path / "out" / "p.png", tmp_path / "out" / "a.csv"
    with FakeOpenAIServer() as srv:
        for _ in range(2):  # the second run finds the files: recognisably ours, replaced without --overwrite
            assert main([str(a) for a in bench(srv.url, assets, "--report", report, "--plot", plot, "--csv", csv)]) == 0
        assert is_ours(report) and is_ours(plot) and is_ours(csv)
        assert {oct(p.stat().st_mode & 0o777) for p in (report, plot, csv)} == {"0o644"}
        user = tmp_path / "user.png"
        user.write_bytes(USER_PNG)
        assert main([str(a) for a in bench(srv.url, assets, "--plot", user, "--overwrite")]) == 0
    assert is_ours(user)
    assert sorted(tree(tmp_path)) == ["out/a.csv", "out/p.png", "out/r.json", "user.png"]


@pytest.mark.parametrize("case", ["same_file", "same_csv", "under_a_file", "a_folder"])
def test_bench_output_paths_that_cannot_work_are_refused_before_the_run(assets, tmp_path, capsys, case):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    args, expect = {
        "same_file": (["--report", tmp_path / "o", "--plot", tmp_path / "o"], "--report and --plot name the same file"),
        "same_csv": (["--report", tmp_path / "o", "--csv", tmp_path / "o"], "--report and --csv name the same file"),
        "under_a_file": (["--report", tmp_path / "afile" / "r.json"], "is a file, not a folder"),
        "a_folder": (["--plot", tmp_path / "adir"], "is a folder; give a file path such as"),
    }[case]
    before = tree(tmp_path)
    with FakeOpenAIServer() as srv:
        msg = refused(capsys, *bench(srv.url, assets, *args))
    assert expect in msg and srv.requests == []
    assert tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_a_users_file_that_appears_during_the_run_is_not_replaced(tmp_path):
    path = tmp_path / "r.json"
    check_output_file(path, flag="--report", overwrite=False, example="r.json")  # nothing there yet: accepted
    path.write_bytes(USER_JSON)  # ... then the user writes it before the run ends
    with pytest.raises(OutputExistsError, match="appeared while the run went on"):
        write_file(path, b'{"tool": "trt-minitron bench"}', overwrite=False)
    assert path.read_bytes() == USER_JSON and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_link_is_never_ours(tmp_path):
    ours = tmp_path / "ours.json"
    write_file(ours, b'{"tool": "trt-minitron bench"}', overwrite=False)
    link = tmp_path / "link.json"
    link.symlink_to(ours)
    assert is_ours(ours) and not is_ours(link)
    for overwrite in (False, True):  # replacing the link would not write where it points: refused, as for folders
        with pytest.raises(OutputError, match="--report .*link.json is a symbolic link; name the file itself"):
            check_output_file(link, flag="--report", overwrite=overwrite, example="r.json")


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("src") / "llama")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_quantize_output_that_is_a_users_file_or_folder_is_refused(tiny_src, tmp_path, capsys, overwrite):
    user_file = tmp_path / "existing.json"
    user_file.write_bytes(USER_JSON)
    folder = tmp_path / "results"  # a folder holding a file named like quantize's report, not written by us
    folder.mkdir()
    (folder / "trt_minitron_quantize.json").write_bytes(USER_JSON)
    before = tree(tmp_path)
    for out in (user_file, folder):
        msg = refused(capsys, "quantize", tiny_src, "-o", out, "--qformat", "fp8", *overwrite)
        assert str(out) in msg and ("pass --overwrite" in msg if not overwrite else "trt-minitron wrote" in msg), msg
    assert tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["existing.json", "results"]


def test_serves_yaml_is_recognised_by_its_first_line(tmp_path):
    from trt_minitron.serve.pytorch_route import MARKER

    ours, user = tmp_path / "ours.yaml", tmp_path / "user.yaml"
    ours.write_text(f"{MARKER}\nkv_cache_config: {{dtype: auto}}\n")
    user.write_text("# written by me\nkv_cache_config: {dtype: auto}\n")
    assert is_ours(ours) and not is_ours(user)
    check_output_file(ours, flag="--llm-api-options", overwrite=False, example="m.yaml")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_output_file(user, flag="--llm-api-options", overwrite=False, example="m.yaml")
    write_file(user, ours.read_bytes(), overwrite=True)
    assert is_ours(user) and oct(user.stat().st_mode & 0o777) == "0o644"
