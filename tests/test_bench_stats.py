"""bench metric definitions (AIPerf 0.13's) on hand-timed records, SLO parsing, arrivals, URL and request
settings, the Markdown table and the plot."""

from __future__ import annotations

import numpy as np
import pytest

from trt_minitron.backends.openai_client import RequestParams, RequestRecord
from trt_minitron.bench.report import CSV_COLUMNS, csv_text, markdown, plot_sweeps
from trt_minitron.bench.run import SweepPoint, arrival_offsets, sweep_points
from trt_minitron.bench.stats import aggregate, duration_s, tpot_s
from trt_minitron.errors import ConfigError, OutputError
from trt_minitron.options import SLO, BenchOptions, normalize_url, parse_slo


def rec(i, sent, chunks, usage=None, text_tokens=None, error=None, ended=None):
    r = RequestRecord(index=i, prompt_id=f"p{i}", sent_s=sent, chunk_s=list(chunks), usage_completion_tokens=usage,
                      text_tokens=text_tokens, error=error)
    r.first_token_s = chunks[0] if chunks else None
    if error is None:
        r.finished_s = r.ended_s = chunks[-1]
        r.finish_reason = "length"
    else:
        r.ended_s = ended
    return r


@pytest.fixture
def records():
    return [
        rec(0, 0.0, [1.0, 1.5, 2.0], usage=3),  # TTFT 1, E2E 2, TPOT (2-1)/2 = 0.5, ITL 0.5 0.5
        rec(1, 0.5, [1.5], usage=1),  # TTFT 1, E2E 1, one token: no TPOT (0 for goodput)
        rec(2, 1.0, [], error="HTTP 500: boom", ended=3.0),
        rec(3, 1.0, [2.0, 2.5, 4.0], text_tokens=5),  # no usage: tokenizer count 5; TPOT (3-1)/4 = 0.5
    ]


def test_definitions(records):
    assert [tpot_s(r) for r in records] == [0.5, None, None, 0.5]
    assert duration_s(records) == 4.0  # first sent (0) .. last ended (4)
    a = aggregate(records)
    assert (a["requests"], a["completed"], a["failed"]) == (4, 3, 1)
    assert a["output_tokens"] == 3 + 1 + 5
    assert a["request_throughput"] == pytest.approx(3 / 4.0)
    assert a["output_throughput"] == pytest.approx(9 / 4.0)
    assert a["ttft_ms"]["mean"] == pytest.approx(1000.0) and a["ttft_ms"]["n"] == 3
    assert a["e2el_ms"]["mean"] == pytest.approx((2.0 + 1.0 + 3.0) / 3 * 1000)
    assert a["e2el_ms"]["p50"] == pytest.approx(2000.0)
    assert a["e2el_ms"]["p99"] == pytest.approx(float(np.percentile([2000, 1000, 3000], 99)))
    assert a["tpot_ms"] == {"mean": 500.0, "p50": 500.0, "p90": 500.0, "p99": 500.0, "n": 2}
    assert a["itl_ms"]["n"] == 4 and a["itl_ms"]["mean"] == pytest.approx(750.0)
    assert a["itl_ms"]["p50"] == pytest.approx(500.0)
    assert a["goodput"] is None and a["errors"] == [{"message": "HTTP 500: boom", "count": 1}]
    assert a["usage_reported"] == 2


@pytest.mark.parametrize("slo, good", [
    (SLO(ttft_ms=1000, tpot_ms=600), 3),
    (SLO(tpot_ms=400), 1),  # only the one-token answer (TPOT counted as 0)
    (SLO(e2el_ms=1500), 1),
    (SLO(ttft_ms=999), 0),
])
def test_goodput(records, slo, good):
    assert aggregate(records, slo)["goodput"] == pytest.approx(good / 4.0)


def test_no_completed_request():
    a = aggregate([rec(0, 0.0, [], error="timeout", ended=2.0)])
    # AIPerf's duration spans completed requests only: none completed, no duration, no throughput.
    assert a["completed"] == 0 and a["duration_s"] == 0 and a["request_throughput"] is None
    assert a["ttft_ms"]["mean"] is None
    assert "n/a" in markdown({"points": [{"label": "c=1", "aggregate": a}]})


def test_parse_slo():
    assert parse_slo(["ttft:500", "tpot:50"]) == SLO(ttft_ms=500, tpot_ms=50)
    assert parse_slo([]) == SLO() and not SLO().any
    for bad in (["ttft"], ["itl:5"], ["ttft:x"], ["e2el:0"]):
        with pytest.raises(ConfigError, match="--goodput"):
            parse_slo(bad)


def test_arrivals():
    assert arrival_offsets(3, None, 0) == [0.0, 0.0, 0.0]
    t = np.asarray(arrival_offsets(20001, 4.0, 1))
    gaps = np.diff(t)
    assert t[0] == 0 and (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)  # exponential gaps of mean 1/rate
    assert gaps.std() == pytest.approx(0.25, rel=0.05)  # ... and standard deviation 1/rate (Poisson process)


def test_sweep_points_and_validation():
    assert [p.label for p in sweep_points(BenchOptions(url="h:1", concurrency=(1, 4)))] == ["c=1", "c=4"]
    assert sweep_points(BenchOptions(url="h:1")) == [SweepPoint(1)]
    pts = sweep_points(BenchOptions(url="h:1", request_rate=(0.5, float("inf")), max_concurrency=2))
    assert [p.label for p in pts] == ["r=0.5/s c<=2", "c=2"]
    for bad in (dict(concurrency=(1,), request_rate=(1.0,)), dict(concurrency=(0,)), dict(request_rate=(0.0,)),
                dict(dataset="sharegpt"), dict(num_requests=0), dict(max_duration_s=0.0),
                dict(url="ftp://x"), dict(dataset="random", dataset_file="x.jsonl")):
        with pytest.raises(ConfigError):
            BenchOptions(**{"url": "h:1", **bad}).validate()


def test_unwritable_report_is_refused_before_the_run(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OutputError, match="--report .* is a folder"):
        BenchOptions(url="h:1", report=tmp_path).validate()
    import os
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(OutputError, match="cannot be written: Permission denied"):
            BenchOptions(url="h:1", report=tmp_path / "ro" / "r.json").validate()


def test_url_and_request_settings():
    assert normalize_url("127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_url("https://h/openai/v1") == "https://h/openai/v1"
    for bad in ("ftp://h/v1", "http://", "http://h:99999/v1"):
        with pytest.raises(ConfigError):
            normalize_url(bad)
    kw = RequestParams(max_tokens=5).create_kwargs()
    assert kw["temperature"] == 0.0 and kw["stream"] and kw["stream_options"] == {"include_usage": True}
    assert "extra_body" not in kw and "seed" not in kw  # strict servers (transformers serve) reject unknown fields
    kw = RequestParams(max_tokens=5, top_k=4, ignore_eos=True, seed=3).create_kwargs()
    assert kw["extra_body"] == {"top_k": 4, "ignore_eos": True} and kw["seed"] == 3


def test_markdown_and_plot(records, tmp_path):
    a = aggregate(records, SLO(ttft_ms=1000))
    a["rouge"] = {k: {"mean": 10.0, "ci95_low": 5.0, "ci95_high": 15.0} for k in ("rouge1", "rouge2", "rougeL")}
    report = {"server": {"model": "/m/smol"}, "points": [{"label": "c=1", "aggregate": a},
                                                         {"label": "c=2", "aggregate": a}]}
    table = markdown(report).splitlines()
    assert len(table) == 4 and table[0].count("|") == 13
    # Every latency with its p90 (the README's mean / p50 / p90 / p99); ITL pools 0.5 0.5 0.5 1.5 s.
    assert all(f"{m} mean / p50 / p90 / p99 ms" in table[0] for m in ("TTFT", "TPOT", "ITL", "E2E"))
    assert table[2] == ("| c=1 | 3 / 1 | 0.750 | 2.25 | 0.750 | 1000 / 1000 / 1000 / 1000 | 500 / 500 / 500 / 500 | "
                        "750 / 500 / 1200 / 1470 | 2000 / 2000 / 2800 / 2980 | 10.00 [5.00, 15.00] | 10.00 | 10.00 |")
    png = tmp_path / "sub" / "plot.png"
    plot_sweeps({"a": report, "b": report}, png, title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(png.parent.glob(".*partial*"))


def test_csv_has_one_row_per_point_with_every_aggregate(records):
    import csv
    import io

    a = aggregate(records, SLO(ttft_ms=1000))
    a["rouge"] = {k: {"mean": 10.0, "ci95_low": 5.0, "ci95_high": 15.0} for k in ("rouge1", "rouge2", "rougeL")}
    b = aggregate(records[:2])
    b["rouge"] = None
    report = {"points": [{"label": "c=1", "concurrency": 1, "request_rate": None, "aggregate": a},
                         {"label": "r=2/s", "concurrency": None, "request_rate": 2.0, "aggregate": b}]}
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 2
    assert (rows[0]["point"], rows[0]["concurrency"], rows[0]["completed"], rows[0]["failed"]) == ("c=1", "1", "3", "1")
    assert float(rows[0]["itl_ms_p90"]) == pytest.approx(1200.0) and rows[0]["itl_ms_n"] == "4"
    assert float(rows[0]["e2el_ms_p90"]) == pytest.approx(2800.0) and float(rows[0]["goodput"]) == pytest.approx(0.75)
    assert rows[0]["rouge1_ci95_high"] == "15.0"
    assert (rows[1]["request_rate"], rows[1]["concurrency"], rows[1]["goodput"], rows[1]["rouge1_mean"]) == \
        ("2.0", "", "", "")


def test_sse_events_split_as_the_spec_says():
    import asyncio

    from trt_minitron.backends.openai_replies import BadReply, sse_data

    async def events(*pieces: bytes, limit: int = 1 << 20) -> list[str]:
        async def gen():
            for p in pieces:
                yield p
        return [e async for e in sse_data(gen(), "/x", limit)]

    # CRLF lines, a comment, an event: field, a two-line data, pieces cut anywhere, a last event without its blank line
    got = asyncio.run(events(b": ping\r\n\r\nevent: x\r\ndata: {\"a\"", b": 1}\r\n\r\ndata:one\ndata: two\n\n",
                             b"data: [DONE]"))
    assert got == ['{"a": 1}', "one\ntwo", "[DONE]"]
    with pytest.raises(BadReply, match="/x: a stream line is longer than 1 KiB"):
        asyncio.run(events(b"data: " + b"x" * 2000, limit=1024))
    with pytest.raises(BadReply, match="/x: a stream event is larger than 1 KiB"):
        asyncio.run(events(b"data: " + b"x" * 600 + b"\n" + b"data: " + b"x" * 600 + b"\n", limit=1024))
