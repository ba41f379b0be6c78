"""The hub route of the CNN/DailyMail loaders (no hub here: a stand-in `datasets` module records the call)."""

import sys
import types

import pytest

from trt_minitron.errors import MissingDependencyError
from trt_minitron.eval.data import DatasetError, load_records
from trt_minitron.options import CalibSettings
from trt_minitron.quantize.calib import load_articles

ROW = {"id": "a1", "article": "The article.", "highlights": "The summary."}


def fake_datasets(monkeypatch, load):
    mod = types.ModuleType("datasets")
    mod.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", mod)


def test_summarize_reads_the_test_split_and_calibration_the_train_split(monkeypatch):
    calls = []

    def load(name, config, split, cache_dir=None):
        calls.append((name, config, split, cache_dir))
        return [dict(ROW)] * 3

    fake_datasets(monkeypatch, load)
    assert [r.article for r in load_records(None, 3, cache_dir="/c")] == ["The article."] * 3
    assert load_articles(CalibSettings(dataset="cnn_dailymail", size=2)) == ["The article."] * 3
    assert calls == [("abisee/cnn_dailymail", "3.0.0", "test[:3]", "/c"),
                     ("abisee/cnn_dailymail", "3.0.0", "train[:2]", None)]


def test_hub_failure_is_one_line_naming_the_local_alternative(monkeypatch):
    def load(*_a, **_k):
        raise ConnectionError("Couldn't reach 'abisee/cnn_dailymail' on the Hub (LocalEntryNotFoundError)\nmore")

    fake_datasets(monkeypatch, load)
    with pytest.raises(DatasetError) as e:
        load_records(None, 5)
    assert "\n" not in str(e.value) and "ConnectionError" in str(e.value) and "--dataset-file" in str(e.value)
    with pytest.raises(DatasetError) as e:
        load_articles(CalibSettings(dataset="cnn_dailymail", size=4))
    assert "\n" not in str(e.value) and "--calib-dataset" in str(e.value)


def test_missing_datasets_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install .*--dataset-file"):
        load_records(None, 5)
    with pytest.raises(MissingDependencyError, match=r"--calib-dataset"):
        load_articles(CalibSettings(dataset="cnn_dailymail", size=4))
