"""Shared fixtures."""

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

FAKES = Path(__file__).parent / "fakes"
FAKES13 = Path(__file__).parent / "fakes13"  # the generation after 1.2: LLM API only, no engine path


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


@pytest.fixture
def fake_trtllm13_path(monkeypatch):
    """tests/fakes13 importable as `tensorrt_llm` (the 1.3+ generation) for one test; no fake module outlives it."""
    _drop_tensorrt_llm()
    monkeypatch.syspath_prepend(str(FAKES13))
    yield FAKES13
    _drop_tensorrt_llm()


@pytest.fixture(scope="module", autouse=True)
def _module_tmp_cleanup(request, tmp_path_factory):
    """Remove what a test module left under pytest's base temp folder once the module passed.

    Exports of SmolLM2 are ~0.5 GB each; kept for every module they fill a small CI disk. A module with a
    failure keeps its folders for inspection (tmp_path folders of passing tests go per test:
    tmp_path_retention_policy = "failed" in pyproject.toml).
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed != failed_before:
        return
    for entry in set(base.iterdir()) - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def quant_ckpts():
    """Every CPU quantization format of the tiny Llama and Nemotron at tp 1 and 2 (tests/quant_fixtures.py, 55 MB),
    written once for test_quant_build.py and test_quant_verify.py and removed when the session ends. Its own folder,
    not one under pytest's base temp, which per-module clean-ups may empty while a later module still needs it."""
    from quant_fixtures import write_quantized_checkpoints

    root = Path(tempfile.mkdtemp(prefix="trt-minitron-quant-ckpts-"))
    try:
        yield write_quantized_checkpoints(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """2 shared cores: torch's default 2 threads spin against each other (10x slower matmuls measured)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
