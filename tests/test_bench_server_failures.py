"""bench and the openai backend when the server fails: HTTP errors, timeouts, dropped streams, a server killed
mid-run, the --max-duration bound; and seeded Poisson arrivals. Served by tests/fake_openai.py (a tiny local
HTTP server); the real-server behaviour is in test_serve_real.py."""

from __future__ import annotations

import json

import pytest
from fake_openai import MODEL, FakeOpenAIServer, make_word_tokenizer

from trt_minitron.bench.run import arrival_offsets
from trt_minitron.cli import main

ARTICLES = {
    "ok1": "the cat sat on the mat today",
    "fail": "this one will FAIL on the server",
    "ok2": "a dog ran in the park today",
    "slow": "this one is SLOW to answer",
    "cut": "this one gets CUT off",
    "reject": "this one the server will REJECT",
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    data = root / "records.jsonl"
    data.write_text("".join(json.dumps({"id": k, "article": v, "highlights": "the cat sat"}) + "\n"
                            for k, v in ARTICLES.items()))
    tok = make_word_tokenizer(root / "tok", list(ARTICLES.values()) + ["TL;DR:", "the cat sat"])
    return {"data": data, "tok": tok, "root": root}


def bench(url, assets, tmp_path, *extra, n=6):
    report = tmp_path / "r.json"
    code = main(["bench", url, "--tokenizer", str(assets["tok"]), "--dataset-file", str(assets["data"]),
                 "--num-requests", str(n), "--output-len", "4", "--request-timeout", "1.5", "--warmup", "0",
                 "--report", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def errors_by_prompt(point) -> dict[str, str | None]:
    return {r["prompt_id"]: r["error"] for r in point["requests"]}


def test_failures_are_counted_with_the_servers_message(assets, tmp_path, capsys):
    with FakeOpenAIServer(tokens=4) as srv:
        code, rep = bench(srv.url, assets, tmp_path, "--concurrency", "1,2")
    assert code == 1  # README: 1 when any request failed, after the table and the report
    assert rep["server"]["model"] == MODEL
    assert [p["label"] for p in rep["points"]] == ["c=1", "c=2"]
    for point in rep["points"]:
        a, errs = point["aggregate"], errors_by_prompt(point)
        assert (a["completed"], a["failed"]) == (2, 4)
        assert errs["ok1"] is None and errs["ok2"] is None
        assert errs["fail"] == "HTTP 500: fake failure: the model exploded"
        assert errs["reject"] == "HTTP 400: prompt too long for max_seq_len"  # trtllm-serve's flat error body
        assert errs["slow"].startswith("timeout")
        assert errs["cut"].startswith("connection error")
        assert sum(e["count"] for e in a["errors"]) == 4
        ok = [r for r in point["requests"] if r["error"] is None]
        assert all(r["output_tokens"] == 4 == r["usage_completion_tokens"] == r["text_tokens"] for r in ok)
        assert a["output_tokens"] == 8  # failed requests' partial text is not throughput
        cut = next(r for r in point["requests"] if r["prompt_id"] == "cut")
        assert cut["text"] == " w0 w1" and cut["finished_s"] is None  # partial text kept for the record
    out, err = capsys.readouterr()
    assert "| c=1 | 2 / 4 |" in out and "| c=2 | 2 / 4 |" in out
    assert "HTTP 500: fake failure: the model exploded" in err
    assert "8 of 12 requests failed" in err
    assert "Traceback" not in err


def test_server_killed_mid_run(assets, tmp_path, capsys):
    data = assets["root"] / "ok.jsonl"
    data.write_text("".join(json.dumps({"id": f"a{i}", "article": "the cat sat on the mat", "highlights": "the cat"})
                            + "\n" for i in range(6)))
    with FakeOpenAIServer(tokens=4, delay_s=0.05) as srv:
        srv.kill_after(3)
        report = tmp_path / "r.json"
        code = main(["bench", srv.url, "--tokenizer", str(assets["tok"]), "--dataset-file", str(data),
                     "--num-requests", "6", "--output-len", "4", "--concurrency", "2", "--warmup", "0",
                     "--report", str(report), "--plot", str(tmp_path / "p.png")])
    assert code == 1
    a = json.loads(report.read_text())["points"][0]["aggregate"]
    assert a["completed"] + a["failed"] == 6
    assert 1 <= a["completed"] <= 3 and a["failed"] >= 3
    assert all(e["message"].startswith("connection error") for e in a["errors"])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in capsys.readouterr().err


def test_unreachable_server_is_one_line_exit_2(assets, tmp_path, capsys):
    with FakeOpenAIServer() as srv:
        url = srv.url
    code, rep = bench(url, assets, tmp_path)  # the server is gone: nothing listens there now
    err = capsys.readouterr().err
    assert code == 2 and rep is None
    assert err.startswith("trt-minitron: error: cannot reach") and err.count("\n") == 1


def test_max_duration_bounds_a_point(assets, tmp_path):
    data = assets["root"] / "slow.jsonl"
    data.write_text("".join(json.dumps({"id": f"s{i}", "article": "this one is SLOW" if i == 0 else "the cat sat",
                                        "highlights": "the cat"}) + "\n" for i in range(4)))
    with FakeOpenAIServer(tokens=4, delay_s=0.02) as srv:
        report = tmp_path / "r.json"
        code = main(["bench", srv.url, "--tokenizer", str(assets["tok"]), "--dataset-file", str(data),
                     "--num-requests", "4", "--output-len", "4", "--concurrency", "1", "--warmup", "0",
                     "--request-timeout", "60", "--max-duration", "1", "--report", str(report)])
    assert code == 1
    reqs = json.loads(report.read_text())["points"][0]["requests"]
    assert reqs[0]["error"].startswith("cancelled")  # the slow one holds the only slot until the deadline
    assert all(r["error"].startswith("not sent") for r in reqs[1:])


def test_request_rate_follows_seeded_poisson_arrivals(assets, tmp_path):
    data = assets["root"] / "many.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "article": "the cat sat", "highlights": "the cat"}) + "\n"
                            for i in range(12)))
    with FakeOpenAIServer(tokens=2, delay_s=0.0) as srv:
        report = tmp_path / "r.json"
        code = main(["bench", srv.url, "--tokenizer", str(assets["tok"]), "--dataset-file", str(data),
                     "--num-requests", "12", "--output-len", "2", "--request-rate", "8", "--seed", "7",
                     "--warmup", "0", "--report", str(report)])
    assert code == 0
    point = json.loads(report.read_text())["points"][0]
    assert point["label"] == "r=8/s" and point["request_rate"] == 8
    expected = arrival_offsets(12, 8.0, 7)
    sent = [r["sent_s"] for r in point["requests"]]
    for want, got in zip(expected, sent):
        assert want - 1e-3 <= got <= want + 0.25, (want, got)
    assert arrival_offsets(12, 8.0, 7) == expected and arrival_offsets(12, 8.0, 8) != expected


def test_openai_backend_raises_with_the_servers_message(assets):
    from trt_minitron.backends import open_backend
    from trt_minitron.backends.base import Sampling
    from trt_minitron.errors import TrtMinitronError
    from trt_minitron.options import BackendSpec

    with FakeOpenAIServer(tokens=3) as srv:
        b = open_backend(BackendSpec(kind="openai", model=srv.url, tokenizer=str(assets["tok"]), concurrency=2))
        assert b.served_model == MODEL
        ids = [b.tokenizer("the cat sat")["input_ids"], b.tokenizer("the dog ran")["input_ids"]]
        gens = b.generate(ids, Sampling(max_new_tokens=3))
        assert [g.text for g in gens] == [" w0 w1 w2"] * 2 and all(g.num_tokens == 3 for g in gens)
        assert [r["prompt"] for r in srv.requests] == ["the cat sat", "the dog ran"]
        assert all(r["temperature"] == 0.0 and r["max_tokens"] == 3 and r["stream"] for r in srv.requests)
        with pytest.raises(TrtMinitronError, match="1 of 2 request.*HTTP 500: fake failure"):
            b.generate([ids[0], b.tokenizer("will FAIL")["input_ids"]], Sampling(max_new_tokens=3))


def test_chat_api_and_random_dataset(assets, tmp_path):
    with FakeOpenAIServer(tokens=3) as srv:
        report = tmp_path / "r.json"
        code = main(["bench", srv.url, "--tokenizer", str(assets["tok"]), "--dataset", "random", "--input-len", "5",
                     "--num-requests", "3", "--output-len", "3", "--api", "chat", "--concurrency", "3",
                     "--warmup", "1", "--report", str(report)])
        assert code == 0
        assert all("messages" in r and r["messages"][0]["role"] == "user" for r in srv.requests)
        assert len(srv.requests) == 4  # the warm-up, then one per prompt
    rep = json.loads(report.read_text())
    assert rep["dataset"]["name"] == "random" and rep["dataset"]["prompts"] == 3
    assert rep["points"][0]["aggregate"]["rouge"] is None  # no references: no ROUGE
    reqs = rep["points"][0]["requests"]
    assert [r["text"] for r in reqs] == [" w0 w1 w2"] * 3 and all(r["prompt_tokens"] == 5 for r in reqs)
    assert rep["warmup"][0]["error"] is None
