"""Shared fixtures."""

import sys
from pathlib import Path

import pytest

FAKES = Path(__file__).parent / "fakes"


def _drop_tensorrt_llm() -> None:
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        sys.modules.pop(name)


@pytest.fixture
def fake_trtllm_path(monkeypatch):
    """tests/fakes importable as `tensorrt_llm` for one test; no fake module outlives it."""
    _drop_tensorrt_llm()
    monkeypatch.syspath_prepend(str(FAKES))
    yield FAKES
    _drop_tensorrt_llm()
