"""Red team of the server-facing commands: `generate`, `generate --stream`, `summarize --backend openai` and `bench`
against misbehaving OpenAI-compatible servers (tests/bad_openai.py: one misbehaviour each, on 127.0.0.1), and
`serve` start-up against a server that dies while serving and a /health that never says OK (a server dying before
it is ready and a port in use: test_serve_launch.py).

Every case asserts the exit code, the one stderr line (bench: the failed request's message in its report and
on stderr, the run going on), that the command returned within its --request-timeout plus slack, that no thread
is left running, that no file was left behind and that the user's files are byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_openai import LATE_S, MODES, BadServer
from cli_checks import PREFIX, names, tree_digest
from fake_openai import MODEL, FakeOpenAIServer, make_word_tokenizer
from test_serve_launch import fake_bin, free_port, make_engine  # noqa: F401  (fixture)

from trt_minitron.cli import main

TIMEOUT = "total:1,first-byte:0.5"
TOTAL_S, FIRST_BYTE_S = 1.0, 0.5
SLACK_S = 8.0  # a loaded 2-core machine; a hang would take the default limits (60 s, 600 s) or the fake's hour
ROOT = Path(__file__).resolve().parents[1]

# What each misbehaviour of /v1/models must say (every command refuses it before any request: exit 2).
MODELS = {
    "models-invalid-json": "/v1/models: the model list (application/json) is not valid JSON (Expecting value",
    "models-not-an-object": "/v1/models: the model list is a list, not a JSON object",
    "models-data-wrong-type": "/v1/models: the model list's 'data' is a string, not a list",
    "models-missing-data": "/v1/models: the model list's 'data' is missing, not a list",
    "models-missing-id": "/v1/models: model 0 of the list has no 'id' string: '{\"object\": \"model\"}'",
    "models-id-wrong-type": "/v1/models: model 0 of the list has no 'id' string: '{\"id\": 42}'",
    "models-error-in-200": "/v1/models: the server answered an error with HTTP 200: model is still loading",
    "models-html-200": "/v1/models: the model list (text/html) is not valid JSON",
    "models-empty-body": "/v1/models: the model list (no Content-Type) is not valid JSON (Expecting value at char 0): "
                         "an empty body",
    "models-huge": "/v1/models: the reply is larger than 16 MiB",
    "models-502-html": "/v1/models answered HTTP 502: HTML page: 502 Bad Gateway; pass --served-model NAME",
    "models-redirect": "/v1/models answered HTTP 307: redirect to http://127.0.0.1:9/v1/models (redirects are not "
                       "followed: give the server's own URL)",
    "models-no-headers": "/v1/models: timeout: no response headers within 0.5 s (--request-timeout first-byte)",
    "models-silence-after-headers": "/v1/models: timeout: the answer was not complete within 1 s (--request-timeout "
                                    "total)",
    "models-slow-drip": "/v1/models: timeout: the answer was not complete within 1 s (--request-timeout total)",
    "models-closed-mid-body": "/v1/models: connection error: RemoteProtocolError: peer closed connection without "
                              "sending complete message body",
    "models-empty-list": "/v1/models lists no model; pass --served-model NAME",
}

TOTAL = "timeout: the answer was not complete within 1 s (--request-timeout total)"
# What each misbehaviour of the completion stream must say (a failed request: exit 2, or counted failed by bench).
STREAM = {
    "stream-invalid-json": "stream chunk 3 is not valid JSON (Expecting ',' delimiter at char 27): "
                           "'{\"choices\": [{\"text\": \" w2\"'",
    "stream-not-an-object": "stream chunk 3 is a list, not a JSON object",
    "stream-choices-wrong-type": "stream chunk 3: 'choices' is a string, not a list",
    "stream-text-wrong-type": "stream chunk 3: 'text' is a number, not a string",
    "stream-finish-wrong-type": "stream chunk 3: 'finish_reason' is a number, not a string",
    "stream-missing-choices": "stream chunk 3 has no 'choices'",
    "stream-two-choices": "stream chunk 3 has 2 choices; one was asked for",
    "stream-empty-choices-only": "the stream ended without a finish_reason ([DONE] came first)",
    "stream-error-in-200": "server error in the stream: CUDA error: out of memory",
    "stream-error-string": "server error in the stream: generation failed: device lost",
    "stream-no-finish-reason": "the stream ended without a finish_reason or [DONE] (the server stopped mid-answer?)",
    "stream-done-without-finish": "the stream ended without a finish_reason ([DONE] came first)",
    "stream-endless": "the stream carries more than max_tokens=4 chunks of text: the server ignores max_tokens",
    "stream-keepalive-forever": TOTAL,
    "stream-no-headers": "timeout: no response headers within 0.5 s (--request-timeout first-byte)",
    "stream-silence-after-headers": TOTAL,
    "stream-slow-drip": TOTAL,
    "stream-huge-event": "a stream event is larger than 1024 KiB",
    "stream-huge-line": "a stream line is longer than 1024 KiB",
    "stream-json-not-sse": "the answer is application/json, not a text/event-stream (stream: true was asked)",
    "stream-html-200": "the answer is text/html, not a text/event-stream (stream: true was asked): "
                       "'<html><body>captive portal</body></html>'",
    "stream-redirect": "HTTP 302: redirect to http://127.0.0.1:9/v1/completions (redirects are not followed",
    "stream-500-html": "HTTP 500: HTML page: Internal Server Error",
    "stream-503-text": "HTTP 503: overloaded, retry later",
    "stream-422-detail": "HTTP 422: Field required",
    "stream-usage-negative": "stream chunk 4: usage.completion_tokens is -1, not a count of tokens",
    "stream-usage-float": "stream chunk 4: usage.completion_tokens is 2.5, not a count of tokens",
    "stream-usage-string": "stream chunk 4: usage.prompt_tokens is \"7\", not a count of tokens",
    "stream-usage-missing-count": "stream chunk 4: usage.completion_tokens is missing, not a count of tokens",
    "stream-usage-over-max-tokens": "usage.completion_tokens is 1000, more than max_tokens=4",
    "stream-usage-under-chunks": "usage.completion_tokens is 1, but the stream carried 2 chunks of text",
    "stream-closed-mid-chunk": "connection error: RemoteProtocolError: peer closed connection without sending "
                               "complete message body (incomplete chunked read)",
    "stream-bad-chunked-framing": "connection error: RemoteProtocolError: illegal chunk header",
    "stream-not-utf8": "a stream event is not UTF-8 text",
}
SLOW = {m for m, e in {**MODELS, **STREAM}.items() if "timeout" in e}
assert set(MODELS) | set(STREAM) <= set(MODES)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The served model's tokenizer; loading it once here also pays the imports (transformers, openai) that the
    first command would otherwise count in its time."""
    import trt_minitron.backends.openai  # noqa: F401
    import trt_minitron.bench.run  # noqa: F401
    from trt_minitron.backends.base import load_tokenizer
    from trt_minitron.eval.metrics import rouge_scores

    path = make_word_tokenizer(tmp_path_factory.mktemp("tok") / "tok", ["the cat sat on the mat", "TL;DR:"])
    load_tokenizer(path)
    rouge_scores(["the cat"], ["the cat sat"])
    return path


@pytest.fixture
def user(tmp_path, tok, monkeypatch):
    """The user's working folder: a dataset, notes and an earlier result of theirs; the run starts in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"id": f"a{i}", "article": "the cat sat on the mat",
                                                             "highlights": "the cat sat"}) + "\n" for i in range(2)))
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "mine.json").write_text('{"mine": "precious"}')
    return tmp_path


@dataclass
class Result:
    code: int
    out: str
    err: str
    elapsed_s: float


def run(capsys, args: list[str]) -> Result:
    """The CLI in-process; every thread it started must end (rich's refresh thread stops within a quarter second)."""
    capsys.readouterr()
    before = set(threading.enumerate())
    t0 = time.monotonic()
    code = main([str(a) for a in args])
    elapsed = time.monotonic() - t0
    out, err = capsys.readouterr()
    for t in set(threading.enumerate()) - before:
        t.join(2.0)
        assert not t.is_alive(), f"thread left running: {t}"
    return Result(code, out, err, elapsed)


def one_line(r: Result, code: int, expect: str) -> str:
    lines = r.err.strip().splitlines()
    assert r.code == code, r.err
    assert len(lines) == 1 and lines[0].startswith(PREFIX) and "Traceback" not in r.err, r.err
    assert expect in lines[0], lines[0]
    return lines[0]


def generate(url: str, tok: Path, *extra) -> list:
    return ["generate", "--backend", "openai", url, "--tokenizer", tok, "--prompt", "the cat sat", "--max-new-tokens",
            "4", "--request-timeout", TIMEOUT, *extra]


def summarize(url: str, tok: Path, *extra) -> list:
    return ["summarize", "--backend", "openai", url, "--tokenizer", tok, "--dataset-file", "data.jsonl",
            "--num-samples", "2", "--output-len", "4", "--request-timeout", TIMEOUT, "--report", "summ.json", *extra]


def bench(url: str, tok: Path, *extra) -> list:
    return ["bench", url, "--tokenizer", tok, "--dataset-file", "data.jsonl", "--num-requests", "1", "--output-len",
            "4", "--warmup", "0", "--request-timeout", TIMEOUT, "--report", "r.json", "--csv", "r.csv", *extra]


def command(kind: str, url: str, tok: Path) -> list:
    return {"generate": lambda: generate(url, tok), "stream": lambda: generate(url, tok, "--stream"),
            "summarize": lambda: summarize(url, tok), "bench": lambda: bench(url, tok)}[kind]()


class Guard:
    """The user's folder before a run: afterwards, the same names (plus what the run may write) and the same bytes."""

    def __init__(self, folder: Path, tok: Path):
        self.folder, self.tok = folder, tok
        self.names = names(folder)  # hidden ones included: a temporary file left behind shows
        self.digests = {n: tree_digest(folder / n) for n in self.names}
        self.tok_digest = tree_digest(tok)

    def check(self, written: tuple[str, ...] = ()) -> None:
        assert names(self.folder) == sorted(self.names + list(written))
        assert {n: tree_digest(self.folder / n) for n in self.names} == self.digests
        assert tree_digest(self.tok) == self.tok_digest


@pytest.fixture
def guard(user, tok):
    return Guard(user, tok)


def bounded(r: Result, mode: str) -> None:
    limit = (TOTAL_S if mode in SLOW else 0) + SLACK_S
    assert r.elapsed_s < limit, f"{mode}: {r.elapsed_s:.2f} s"


@pytest.mark.parametrize("kind", ["generate", "bench"])
@pytest.mark.parametrize("mode", sorted(MODELS))
def test_models_reply_is_refused_in_one_line(mode, kind, guard, tok, capsys):
    with BadServer(mode) as srv:
        r = run(capsys, command(kind, srv.url, tok))
        assert srv.requests == []  # refused before any completion request
    line = one_line(r, 2, MODELS[mode])
    assert srv.url in line  # the endpoint is named
    bounded(r, mode)
    guard.check()  # bench writes no report when it cannot start


@pytest.mark.parametrize("kind", ["stream", "summarize"])
@pytest.mark.parametrize("mode", ["models-invalid-json", "models-no-headers", "models-502-html"])
def test_models_reply_is_refused_by_stream_and_summarize(mode, kind, guard, tok, capsys):
    with BadServer(mode) as srv:
        r = run(capsys, command(kind, srv.url, tok))
    one_line(r, 2, MODELS[mode])
    bounded(r, mode)
    guard.check()


def test_served_model_stands_in_for_a_missing_list_but_not_for_a_redirect(guard, tok, capsys):
    with BadServer("models-502-html") as srv:
        r = run(capsys, generate(srv.url, tok, "--served-model", MODEL))
    assert r.code == 0 and " w0 w1 w2 w3" in r.out, r.err
    with BadServer("models-redirect") as srv:
        r = run(capsys, generate(srv.url, tok, "--served-model", MODEL))
        assert srv.requests == []
    one_line(r, 2, MODELS["models-redirect"])
    guard.check()


@pytest.mark.parametrize("mode", sorted(STREAM))
def test_stream_reply_fails_generate_in_one_line(mode, guard, tok, capsys):
    with BadServer(mode) as srv:
        r = run(capsys, generate(srv.url, tok))
    endpoint = f"{srv.url}/completions"
    one_line(r, 2, f"1 of 1 request(s) to {endpoint} failed; first: {STREAM[mode]}")
    bounded(r, mode)
    guard.check()


@pytest.mark.parametrize("mode", sorted(STREAM))
def test_stream_reply_is_a_failed_request_in_bench(mode, guard, tok, capsys):
    with BadServer(mode) as srv:
        r = run(capsys, bench(srv.url, tok))
    assert r.code == 1, r.err  # the run went on: table, report and CSV, then exit 1
    rep = json.loads((guard.folder / "r.json").read_text())
    req = rep["points"][0]["requests"][0]
    assert STREAM[mode] in req["error"] and req["finished_s"] is None
    assert rep["points"][0]["aggregate"]["failed"] == 1 and rep["points"][0]["aggregate"]["completed"] == 0
    assert "| c=1 | 0 / 1 |" in r.out
    lines = r.err.strip().splitlines()
    assert "Traceback" not in r.err and f"failed: c=1: 1 x {req['error']}" in lines
    assert lines[-1] == PREFIX + "1 of 1 requests failed (see above and the report)"
    assert (guard.folder / "r.csv").read_text().splitlines()[1].startswith("c=1,1,,1,0,1,")
    bounded(r, mode)
    guard.check(written=("r.csv", "r.json"))


@pytest.mark.parametrize("kind", ["stream", "summarize"])
@pytest.mark.parametrize("mode", ["stream-invalid-json", "stream-endless", "stream-no-headers", "stream-slow-drip",
                                  "stream-closed-mid-chunk", "stream-error-in-200", "stream-usage-over-max-tokens"])
def test_stream_reply_fails_stream_and_summarize_in_one_line(mode, kind, guard, tok, capsys):
    with BadServer(mode) as srv:
        r = run(capsys, command(kind, srv.url, tok))
    one_line(r, 2, f"request(s) to {srv.url}/completions failed; first: {STREAM[mode]}")
    bounded(r, mode)
    guard.check()  # summarize --report summ.json: not written


def test_chat_stream_delta_of_the_wrong_type_is_counted_failed(guard, tok, capsys):
    with BadServer("stream-delta-wrong-type") as srv:
        r = run(capsys, bench(srv.url, tok, "--api", "chat"))
    assert r.code == 1
    err = json.loads((guard.folder / "r.json").read_text())["points"][0]["requests"][0]["error"]
    assert err == f"{srv.url}/chat/completions: stream chunk 3: 'delta' is a string, not a JSON object"
    guard.check(written=("r.csv", "r.json"))


@pytest.mark.parametrize("kind", ["generate", "stream", "summarize", "bench"])
def test_stream_without_done_is_accepted(kind, guard, tok, capsys):
    """transformers serve ends its streams after the finish_reason and usage, without [DONE]."""
    with BadServer("stream-no-done") as srv:
        r = run(capsys, command(kind, srv.url, tok))
    assert r.code == 0 and r.err.count(PREFIX) == 0, r.err
    written = {"summarize": ("summ.json",), "bench": ("r.csv", "r.json")}.get(kind, ())
    if kind == "bench":
        req = json.loads((guard.folder / "r.json").read_text())["points"][0]["requests"][0]
        assert req["error"] is None and req["text"] == " w0 w1" and req["output_tokens"] == 2
    elif kind != "summarize":
        assert "w0 w1" in r.out and "2 generated (length)" in r.out
    guard.check(written=written)


def test_empty_answer_is_output_for_generate_and_a_failure_for_bench(guard, tok, capsys):
    """An answer without text is a valid (empty) completion; AIPerf counts it failed, so bench does too."""
    with BadServer("stream-empty-answer") as srv:
        r = run(capsys, generate(srv.url, tok))
        assert r.code == 0 and "0 generated (stop)" in r.out, r.err
        r = run(capsys, bench(srv.url, tok))
    assert r.code == 1
    rep = json.loads((guard.folder / "r.json").read_text())
    assert rep["points"][0]["requests"][0]["error"] == "empty answer: no chunk carried text"
    guard.check(written=("r.csv", "r.json"))


def test_e2e_ends_at_the_last_chunk_with_text(guard, tok, capsys):
    """AIPerf's request_latency: the finish_reason, usage and [DONE] that come LATE_S later do not count."""
    with BadServer("stream-late-finish") as srv:
        r = run(capsys, bench(srv.url, tok))
    assert r.code == 0, r.err
    point = json.loads((guard.folder / "r.json").read_text())["points"][0]
    req, a = point["requests"][0], point["aggregate"]
    assert req["ended_s"] - req["finished_s"] >= LATE_S * 0.9
    assert req["e2e_s"] == pytest.approx(req["finished_s"] - req["sent_s"]) and req["e2e_s"] < LATE_S
    assert a["duration_s"] == pytest.approx(req["e2e_s"])  # first sent .. last chunk with text
    assert a["e2el_ms"]["mean"] == pytest.approx(req["e2e_s"] * 1000)


# --- the process as a whole ends promptly ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, args", [
    ("stream-no-headers", ["generate", "--stream"]),
    ("models-silence-after-headers", ["bench"]),
])
def test_a_process_facing_a_silent_server_exits_promptly(mode, args, user, tok):
    """A real process (interpreter exit included) ends within the limit after the server got the request."""
    with BadServer(mode) as srv:
        cmd = (generate(srv.url, tok, *args[1:]) if args[0] == "generate" else bench(srv.url, tok))
        proc = subprocess.run([sys.executable, "-m", "trt_minitron", *map(str, cmd)], cwd=user, capture_output=True,
                              text=True, timeout=120)
        done = time.perf_counter()
        arrived = srv.arrivals[-1]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(PREFIX), proc.stderr
    assert done - arrived < TOTAL_S + SLACK_S, done - arrived


# --- --csv follows the output rule ---------------------------------------------------------------------------------

def test_csv_over_a_file_bench_did_not_write_is_refused_before_the_run(guard, tok, capsys):
    with FakeOpenAIServer(tokens=2) as srv:
        r = run(capsys, ["bench", srv.url, "--tokenizer", tok, "--dataset-file", "data.jsonl", "--num-requests", "1",
                         "--csv", "notes.txt", "--report", "r.json"])
        assert srv.models_requests == 0 and srv.requests == []
    one_line(r, 2, "--csv notes.txt exists and is not a file trt-minitron wrote; pass --overwrite")
    guard.check()
    for bad, message in (("sub", "--csv sub is a folder"), ("link.csv", "--csv link.csv is a symbolic link")):
        (guard.folder / "sub").mkdir(exist_ok=True)
        if bad == "link.csv":
            (guard.folder / "link.csv").symlink_to("notes.txt")
        r = run(capsys, ["bench", "http://127.0.0.1:9/v1", "--tokenizer", tok, "--csv", bad])
        one_line(r, 2, message)
    r = run(capsys, ["bench", "http://127.0.0.1:9/v1", "--tokenizer", tok, "--csv", "link.csv", "--overwrite"])
    one_line(r, 2, "--csv link.csv is a symbolic link")  # not even with --overwrite: the link is the user's
    assert (guard.folder / "notes.txt").read_text() == "my notes\n" and (guard.folder / "link.csv").is_symlink()


def test_csv_replaces_its_own_file_and_a_foreign_one_with_overwrite(guard, tok, capsys):
    with FakeOpenAIServer(tokens=2) as srv:
        args = ["bench", srv.url, "--tokenizer", tok, "--dataset-file", "data.jsonl", "--num-requests", "1",
                "--output-len", "2", "--warmup", "0", "--csv"]
        assert run(capsys, [*args, "out.csv"]).code == 0
        first = (guard.folder / "out.csv").read_text()
        assert first.startswith("point,concurrency,request_rate,requests,completed,failed,")
        assert run(capsys, [*args, "out.csv", "--concurrency", "1,2"]).code == 0  # ours: replaced
        assert len((guard.folder / "out.csv").read_text().splitlines()) == 3
        assert run(capsys, [*args, "notes.txt", "--overwrite"]).code == 0  # the user asked
        assert (guard.folder / "notes.txt").read_text().startswith("point,")
    assert [n for n in names(guard.folder) if n.startswith(".")] == []  # no temporary file left


def test_report_times_the_run(guard, tok, capsys):
    """started_at is taken when the run starts, finished_at when it ends (1 s resolution, ISO 8601 UTC)."""
    from datetime import datetime, timezone

    def stamp(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()

    with FakeOpenAIServer(tokens=4, delay_s=0.6) as srv:
        before = time.time()
        r = run(capsys, bench(srv.url, tok, "--request-timeout", "30"))  # the last one given counts
        after = time.time()
    assert r.code == 0, r.err
    rep = json.loads((guard.folder / "r.json").read_text())
    assert int(before) <= stamp(rep["started_at"]) <= before + 1.0
    assert after - 1.0 <= stamp(rep["finished_at"]) <= after
    assert stamp(rep["finished_at"]) - stamp(rep["started_at"]) >= 2  # the run lasted > 2.4 s


# --- serve start-up --------------------------------------------------------------------------------------------------

def _serve(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trt_minitron", "serve", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})
    return proc, time.monotonic() - t0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("health, expect", [
    ("503", "no 200 from http://127.0.0.1:{port}/health within 2 s (--ready-timeout)"),
    ("hang", "no 200 from http://127.0.0.1:{port}/health within 2 s (--ready-timeout)"),
])
def test_serve_health_never_ok_is_one_line_and_stops_the_server(health, expect, tmp_path, fake_bin):  # noqa: F811
    port = free_port()
    proc, elapsed = _serve([str(make_engine(tmp_path / "eng")), "--port", str(port), "--ready-timeout", "2",
                            "--stop-timeout", "5"], {"FAKE_TRTLLM_HEALTH": health})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == PREFIX + expect.format(port=port)
    assert elapsed < 2 + 2 + 15  # the deadline, one probe's 2 s, start-up and the stop
    events = [json.loads(line) for line in fake_bin.read_text().splitlines()]
    assert [e["event"] for e in events] == ["parsed", "signal"]  # stopped with SIGTERM, not left running
    assert _gone(events[0]["pid"])


def test_serve_server_dying_while_serving_is_one_line(tmp_path, fake_bin):  # noqa: F811
    port = free_port()
    proc, _ = _serve([str(make_engine(tmp_path / "eng")), "--port", str(port)], {"FAKE_TRTLLM_DIE_AFTER_READY": "5"})
    assert proc.returncode == 2, proc.stderr
    assert f"ready: http://127.0.0.1:{port}/v1" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX) and "exited with code 5 while serving" in lines[0]
    assert _gone(json.loads(fake_bin.read_text().splitlines()[0])["pid"])


def test_serve_sigterm_while_waiting_for_health_stops_the_server(tmp_path, fake_bin):  # noqa: F811
    proc = subprocess.Popen([sys.executable, "-m", "trt_minitron", "serve", str(make_engine(tmp_path / "eng")),
                             "--port", str(free_port())], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "FAKE_TRTLLM_HEALTH": "503"})
    deadline = time.monotonic() + 60
    while not (fake_bin.exists() and fake_bin.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped (server exit code 0)" in out and "Traceback" not in err
    assert _gone(json.loads(fake_bin.read_text().splitlines()[0])["pid"])


# --- connection and flags ------------------------------------------------------------------------------------------

@pytest.fixture
def full_backlog():
    """A port that listens but whose accept queue is full: the kernel drops new SYNs, so connecting hangs."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = [socket.socket() for _ in range(3)]
    for c in fill:
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
    probe = socket.create_connection  # a connection attempt that must time out, else the kernel refuses instead
    try:
        probe(("127.0.0.1", port), timeout=0.3).close()
        hangs = False
    except socket.timeout:
        hangs = True
    except OSError:
        hangs = False
    try:
        if not hangs:
            pytest.skip("this kernel answers a full accept queue instead of dropping the SYN (tcp_abort_on_overflow)")
        yield port
    finally:
        for c in (*fill, srv):
            c.close()


@pytest.mark.parametrize("kind", ["generate", "bench"])
def test_connect_timeout(kind, full_backlog, guard, tok, capsys):
    url = f"http://127.0.0.1:{full_backlog}/v1"
    args = command(kind, url, tok) + ["--request-timeout", "total:30,connect:0.5"]
    r = run(capsys, args)
    one_line(r, 2, f"{url}/models: timeout: no connection within 0.5 s (--request-timeout connect)")
    assert r.elapsed_s < 0.5 + SLACK_S
    guard.check()


@pytest.mark.parametrize("kind", ["generate", "summarize", "bench"])
@pytest.mark.parametrize("value, expect", [
    ("soon", "--request-timeout 'soon': 'soon' is not a number of seconds"),
    ("total:0", "--request-timeout total must be a positive number of seconds, got 0.0"),
    ("read:5", "--request-timeout 'read:5': unknown part 'read'; use SECONDS or total:S,connect:S,first-byte:S"),
])
def test_bad_request_timeout_is_one_line(kind, value, expect, guard, tok, capsys):
    r = run(capsys, command(kind, "http://127.0.0.1:9/v1", tok) + ["--request-timeout", value])
    one_line(r, 2, expect)
    guard.check()
