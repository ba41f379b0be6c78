"""`trt-minitron generate` end to end through the CLI, on the fake tensorrt_llm runtime (no engine runs)."""

from __future__ import annotations

from test_backend_trtllm import fake_rt, make_engine  # noqa: F401  (fixture)

from trt_minitron.cli import main


def test_generate_cli_batch_and_stream(tmp_path, fake_rt, capsys):  # noqa: F811
    eng = make_engine(tmp_path / "eng")
    # "w92" is id 95 -> the fake continues 96 97 98 99 0 1 then the end id.
    assert main(["generate", "--backend", "trtllm", str(eng), "--prompt", "w92", "--prompt", "w7",
                 "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    # Ids 96 97 98 99 0: the fifth is <pad>, a special token, so it is counted but not printed.
    first, second = out.split("### w7")
    assert first.startswith("### w92\nw93 w94 w95 w96\n") and "5 generated (length)" in first
    assert second.startswith("\nw8 w9 w10 w11 w12\n") and "5 generated (length)" in second
    assert main(["generate", "--backend", "trtllm", str(eng), "--prompt", "w92", "--max-new-tokens", "10",
                 "--stream"]) == 0
    out = capsys.readouterr().out
    # ... 0 1 then the end id 2: six tokens, stopped by the end id, streamed as they came.
    assert "### w92\nw93 w94 w95 w96\n" in out and "6 generated (stop)" in out and "first token" in out
    call = fake_rt.CALLS[-1][1]
    assert call["streaming"] is True and call["max_new_tokens"] == 10


def test_generate_cli_unknown_backend_is_one_line(tmp_path, capsys):
    assert main(["generate", "--backend", "onnx", str(tmp_path), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown backend 'onnx'" in err[0]
