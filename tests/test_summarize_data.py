"""Dataset files, prompt building, and the CLI's one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_minitron.cli import main
from trt_minitron.eval.data import DatasetError, PromptBuilder, read_dataset_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnn_dailymail_sample.jsonl"


def test_reads_shared_sample_in_order():
    recs = read_dataset_file(SHARED)
    assert len(recs) == 100
    assert recs[0].id == "f001ec5c4704938247d27a44948eebb37ae98d01"
    assert recs[0].article.startswith("(CNN)The Palestinian Authority")
    assert "\n" in recs[0].highlights


def test_json_and_parquet_forms(tmp_path):
    rows = [{"article": "a b", "highlights": "c"}, {"article": "d", "highlights": "e", "id": "x"}]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    (tmp_path / "c.json").write_text(json.dumps({"article": ["a b", "d"], "highlights": ["c", "e"]}))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    for name in ("l.json", "c.json", "p.parquet"):
        recs = read_dataset_file(tmp_path / name)
        assert [(r.article, r.highlights) for r in recs] == [("a b", "c"), ("d", "e")]


@pytest.mark.parametrize("name,content,match", [
    ("empty.jsonl", "", "holds no records"),
    ("bad.jsonl", '{"article": "a", "highlights": "b"}\nnot json\n', "line 2 is not JSON"),
    ("missing.jsonl", '{"article": "a"}\n', r"record 0 lacks string field\(s\) \['highlights'\]"),
    ("bad.json", "{oops", "is not JSON"),
    ("scalar.json", "3", "expected a list of records"),
    ("data.csv", "article,highlights\n", "unsupported dataset file type"),
    ("bad.parquet", "not parquet", "not a readable parquet file"),
])
def test_bad_dataset_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(DatasetError, match=match):
        read_dataset_file(tmp_path / name)


def test_cli_bad_dataset_is_one_line_and_nonzero(tmp_path, capsys):
    """The dataset is read before any model loads, so a missing model path is not reached."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"article": "x"}\n')
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    code = main(["summarize", "--backend", "torch", str(ckpt), "--dataset-file", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "lacks string field(s) ['highlights']" in err[0] and str(bad) in err[0]


class WordTok:
    """Whitespace tokenizer with a BOS, enough to test truncation rules exactly."""

    truncation_side = "right"
    chat_template = None

    def __init__(self):
        self.vocab = {"<s>": 0}

    def _ids(self, text):
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]

    def __call__(self, text, add_special_tokens=True, truncation=False, max_length=None):
        ids = self._ids(text)
        if truncation and len(ids) + add_special_tokens > max_length:
            keep = max_length - add_special_tokens
            ids = ids[-keep:] if self.truncation_side == "left" else ids[:keep]
        return {"input_ids": ([0] if add_special_tokens else []) + ids}


def test_default_prompt_is_summarize_py_and_truncates_from_the_left():
    tok = WordTok()
    pb = PromptBuilder(tok, max_input_len=8)
    ids = pb.build("zero one two three do n't four five six")
    words = {v: k for k, v in tok.vocab.items()}
    # " n't" joined, " TL;DR: " appended and stripped; BOS kept; the article's start dropped.
    assert [words[i] for i in ids] == ["<s>", "two", "three", "don't", "four", "five", "six", "TL;DR:"]
    assert tok.truncation_side == "left"
    short = pb.build("a b")
    words = {v: k for k, v in tok.vocab.items()}
    assert [words[i] for i in short] == ["<s>", "a", "b", "TL;DR:"]


def test_template_with_leading_text_keeps_it_and_cuts_only_the_article():
    tok = WordTok()
    pb = PromptBuilder(tok, template="Summarize : {article} Summary :", max_input_len=8)
    ids = pb.build("a b c d e f g h")
    words = {v: k for k, v in tok.vocab.items()}
    assert [words[i] for i in ids] == ["<s>", "Summarize", ":", "f", "g", "h", "Summary", ":"]


def test_template_needs_article_placeholder():
    with pytest.raises(DatasetError, match="{article}"):
        PromptBuilder(WordTok(), template="no placeholder")
