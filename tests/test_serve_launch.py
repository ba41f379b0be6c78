"""`trt-minitron serve`: the command line it builds for an engine folder (checked by a stand-in trtllm-serve that
declares the real serve.py options, tests/fake_trtllm_serve.py), the HF-folder route choice, the one-line
errors, and the process life cycle (ready after /health, Ctrl-C / SIGTERM stops the server and its group).
The HF route against the real `transformers serve` is in test_serve_real.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trt_minitron.cli import main
from trt_minitron.errors import ConfigError, MissingDependencyError
from trt_minitron.serve.run import ServeOptions, plan_launch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_engine(path: Path, tp: int = 2, pp: int = 1, tokenizer: bool = True, ckpt: Path | None = None) -> Path:
    """An engine folder as `trt-minitron build` leaves it (config.json as trtllm-build writes it; empty engines)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "version": "1.2.1",
        "pretrained_config": {"architecture": "LlamaForCausalLM", "dtype": "bfloat16",
                              "mapping": {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}},
        "build_config": {"max_input_len": 1024, "max_seq_len": 2048, "max_batch_size": 16, "max_beam_width": 1,
                         "max_num_tokens": 4096, "plugin_config": {"gpt_attention_plugin": "bfloat16"}}}))
    for r in range(tp * pp):
        (path / f"rank{r}.engine").write_bytes(b"")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    (path / "trt_minitron_manifest.json").write_text(json.dumps({"checkpoint": {"path": str(ckpt or path)}}))
    return path


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """PATH with a `trtllm-serve` that is tests/fake_trtllm_serve.py; returns the log it writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtllm-serve"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {TESTS / 'fake_trtllm_serve.py'} \"$@\"\n")
    exe.chmod(0o755)
    log = tmp_path / "trtllm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_LOG", str(log))
    return log


def parse_with_real_options(argv: list[str]) -> dict:
    """Parse argv (without the executable) with the real serve.py option table; a click error fails the test."""
    sys.path.insert(0, str(TESTS))
    try:
        import fake_trtllm_serve
    finally:
        sys.path.remove(str(TESTS))
    name, cmd, args = fake_trtllm_serve.main.resolve_command(None, list(argv))  # the group's default: serve
    assert name == "serve"
    return cmd.make_context("serve", list(args)).params


def test_engine_command_line(tmp_path, fake_bin):
    eng = make_engine(tmp_path / "eng", tp=2)
    launch = plan_launch(ServeOptions(model=eng, port=8123, max_batch_size=8))
    assert launch.argv[0].endswith("trtllm-serve")
    assert list(launch.argv[1:]) == [
        str(eng), "--backend", "tensorrt", "--tokenizer", str(eng), "--host", "127.0.0.1", "--port", "8123",
        "--max_batch_size", "8", "--max_num_tokens", "4096", "--max_seq_len", "2048", "--max_beam_width", "1",
        "--tp_size", "2", "--pp_size", "1"]
    params = parse_with_real_options(list(launch.argv[1:]))
    assert params["model"] == str(eng) and params["backend"] == "tensorrt"
    assert (params["max_batch_size"], params["max_num_tokens"], params["max_seq_len"]) == (8, 4096, 2048)
    assert (params["tensor_parallel_size"], params["pipeline_parallel_size"]) == (2, 1)
    assert launch.base_url == "http://127.0.0.1:8123/v1" and launch.health_url == "http://127.0.0.1:8123/health"
    assert "tp 2, pp 1" in launch.route and "--backend tensorrt" in launch.route


def test_real_option_table_rejects_what_serve_py_lacks():
    import click

    with pytest.raises(click.UsageError):  # the check can fail: a flag trtllm-serve does not have
        parse_with_real_options(["/e", "--max-batch-size", "8"])
    with pytest.raises(click.BadParameter):
        parse_with_real_options(["/e", "--backend", "onnx"])


def test_tokenizer_from_manifest_checkpoint_and_overrides(tmp_path, fake_bin):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tokenizer_config.json").write_text("{}")
    eng = make_engine(tmp_path / "eng", tp=1, pp=2, tokenizer=False, ckpt=ckpt)
    argv = plan_launch(ServeOptions(model=eng, host="0.0.0.0", kv_cache_free_gpu_memory_fraction=0.5)).argv
    params = parse_with_real_options(list(argv[1:]))
    assert params["tokenizer"] == str(ckpt) and params["pipeline_parallel_size"] == 2
    assert params["free_gpu_memory_fraction"] == 0.5 and params["host"] == "0.0.0.0"
    bare = make_engine(tmp_path / "bare", tp=1, tokenizer=False, ckpt=tmp_path / "gone")
    with pytest.raises(ConfigError, match="pass --tokenizer"):
        plan_launch(ServeOptions(model=bare))
    assert "--tokenizer" in plan_launch(ServeOptions(model=bare, tokenizer=ckpt)).argv


def test_mpirun_form(tmp_path):
    eng = make_engine(tmp_path / "eng", tp=2, pp=2)
    argv = plan_launch(ServeOptions(model=eng, mpirun=True, dry_run=True)).argv
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    assert list(argv[:5 + len(root)]) == ["mpirun", "-n", "4", *root, "trtllm-llmapi-launch", "trtllm-serve"]
    parse_with_real_options(list(argv[5 + len(root):]))


@pytest.mark.parametrize("opts, message", [
    (dict(max_batch_size=32), "--max-batch-size 32 exceeds the engine's 16"),
    (dict(max_seq_len=4096), "--max-seq-len 4096 exceeds the engine's 2048"),
    (dict(tp_size=1), "--tp-size 1: this engine was built for 2"),
    (dict(server="transformers"), "transformers serve cannot run a TensorRT engine"),
    (dict(port=0), "--port must be"),
])
def test_engine_option_errors(tmp_path, fake_bin, opts, message):
    with pytest.raises(ConfigError, match=message):
        plan_launch(ServeOptions(model=make_engine(tmp_path / "eng"), **opts))


def test_folder_errors(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"architecture": "LlamaForCausalLM"}))
    (ckpt / "rank0.safetensors").write_bytes(b"")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    empty = tmp_path / "empty"
    empty.mkdir()
    noweights = tmp_path / "hf"
    noweights.mkdir()
    (noweights / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    for path, message in ((ckpt, "TensorRT-LLM checkpoint, not an engine"), (gguf, "export --format hf|--format hf"),
                          (empty, "no config.json"), (noweights, "no weights"), (tmp_path / "nope", "not a folder")):
        with pytest.raises(ConfigError, match=message.split("|")[-1]):
            plan_launch(ServeOptions(model=path))


def test_missing_trtllm_serve_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    eng = make_engine(tmp_path / "eng")
    assert main(["serve", str(eng)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trtllm-serve (TensorRT-LLM) is not installed" in err
    assert "docker run --gpus all -p 8000:8000" in err and "serve /engines/NAME" in err
    assert main(["serve", str(eng), "--dry-run"]) == 0  # printing the command needs nothing
    assert "command: trtllm-serve " in capsys.readouterr().out


def test_hf_route_choice(tmp_path, fake_bin, monkeypatch):
    from tiny import make_tiny_llama

    hf = make_tiny_llama(tmp_path / "hf", max_position_embeddings=4096)  # a real folder: serve checks it as export does
    launch = plan_launch(ServeOptions(model=hf, tp_size=2, max_seq_len=4096))  # trtllm-serve is on PATH
    assert "trtllm-serve (PyTorch backend)" in launch.route
    params = parse_with_real_options(list(launch.argv[1:]))
    assert params["backend"] == "pytorch" and params["tensor_parallel_size"] == 2 and params["max_seq_len"] == 4096
    launch = plan_launch(ServeOptions(model=hf, server="transformers", continuous_batching=True, max_num_tokens=256,
                                      device="cpu"))
    assert launch.argv[1:] == ("serve", str(hf), "--host", "127.0.0.1", "--port", "8000", "--continuous-batching",
                               "--cb-max-batch-tokens", "256", "--device", "cpu")
    assert Path(launch.argv[0]).name == "transformers" and "transformers serve" in launch.route
    with pytest.raises(ConfigError, match="transformers serve has no equivalent of --max-batch-size"):
        plan_launch(ServeOptions(model=hf, server="transformers", max_batch_size=4))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert "(trtllm-serve not installed)" in plan_launch(ServeOptions(model=hf)).route
    with pytest.raises(MissingDependencyError, match="not installed"):
        plan_launch(ServeOptions(model=hf, server="trtllm"))


def as_in_a_terminal() -> None:
    """Child set-up: SIGINT at its default, as in a terminal (a background job inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trt_minitron", "serve", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_in_a_terminal)


def _read_until(proc: subprocess.Popen, word: str, timeout_s: float = 60) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(word):
            return lines
    proc.kill()
    raise AssertionError(f"no {word!r} line; got {lines}; stderr {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_lifecycle_ready_then_stop(tmp_path, fake_bin, sig):
    eng = make_engine(tmp_path / "eng")
    port = free_port()
    proc = _start([str(eng), "--port", str(port)])
    lines = _read_until(proc, "ready:")
    assert lines[0].startswith("serve: TensorRT engine (tp 2, pp 1")
    assert lines[1].startswith("command: ") and f"--port {port}" in lines[1]
    assert lines[-1].startswith(f"ready: http://127.0.0.1:{port}/v1 serves model '{eng}'")
    import urllib.request
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
    proc.send_signal(sig)  # Ctrl-C (SIGINT) or docker stop (SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped (server exit code 0)" in out
    events = [json.loads(line) for line in fake_bin.read_text().splitlines()]
    assert [e["event"] for e in events] == ["parsed", "signal"] and events[1]["signal"] == "SIGTERM"
    assert events[0]["argv"] == lines[1].split()[2:]  # it ran exactly the printed command
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_server_dying_before_ready(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_EXIT", "3")
    proc = _start([str(make_engine(tmp_path / "eng")), "--port", str(free_port())])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("trt-minitron: error: ")
    assert "exited with code 3 before answering" in err


def test_port_in_use(tmp_path, fake_bin, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", str(make_engine(tmp_path / "eng")), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not fake_bin.exists()  # nothing was started
