"""trtllm backend against the fake tensorrt_llm.runtime (real runner signatures, no engine).

These tests check how the backend calls the runners and slices their outputs; they are not
evidence that a TensorRT-LLM engine ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from trt_minitron.backends import open_backend
from trt_minitron.backends.base import Sampling
from trt_minitron.errors import ConfigError, MissingDependencyError
from trt_minitron.options import BackendSpec

FAKES = Path(__file__).resolve().parent / "fakes"
VOCAB = 100
END = 2


def write_tokenizer(path: Path) -> None:
    """A word-level tokenizer: 'w0'..'w96' plus <pad>=0, <s>=1, </s>=2 (eos)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": END, **{f"w{i}": i + 3 for i in range(VOCAB - 3)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", bos_token="<s>")
    fast.save_pretrained(path)


def make_engine(path: Path, *, world_size: int = 1, ifb: bool = True, max_seq_len: int = 64) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"version": "1.2.1",
           "pretrained_config": {"architecture": "LlamaForCausalLM", "vocab_size": VOCAB,
                                 "mapping": {"world_size": world_size, "tp_size": world_size, "pp_size": 1}},
           "build_config": {"max_batch_size": 8, "max_input_len": 32, "max_seq_len": max_seq_len,
                            "max_beam_width": 2,
                            "plugin_config": {"gpt_attention_plugin": "float16" if ifb else None,
                                              "remove_input_padding": ifb, "paged_kv_cache": ifb}}}
    (path / "config.json").write_text(json.dumps(cfg))
    for r in range(world_size):
        (path / f"rank{r}.engine").write_bytes(b"fake")
    write_tokenizer(path)
    return path


@pytest.fixture
def fake_rt(fake_trtllm_path):
    import tensorrt_llm.runtime as rt
    rt.CALLS.clear()
    return rt


def spec(engine: Path, **kw) -> BackendSpec:
    return BackendSpec(kind="trtllm", model=str(engine), max_batch_size=4, max_input_len=32, max_output_len=16, **kw)


def test_cpp_runner_output_slicing_and_end_token(tmp_path, fake_rt):
    be = open_backend(spec(make_engine(tmp_path / "eng")))
    assert be.runner_kind == "cpp"
    # Fake rule: next = prompt[-1] + k + 1 (mod 100). Prompt ending in 95 -> 96 97 98 99 0 1 2(end).
    # Prompt ending in 10 -> 11..26, never the end id within 16 tokens.
    batch = [[5, 6, 95], [7, 10]]
    gens = be.generate(batch, Sampling(max_new_tokens=16))
    assert gens[0].tokens == [96, 97, 98, 99, 0, 1]
    assert gens[0].finish_reason == "stop" and gens[0].num_tokens == 6
    assert gens[1].tokens == list(range(11, 27)) and gens[1].finish_reason == "length"
    assert [g.prompt_tokens for g in gens] == [3, 2]
    assert gens[1].text == " ".join(f"w{t - 3}" for t in range(11, 27))
    name, call = fake_rt.CALLS[-1]
    assert name == "ModelRunnerCpp.generate"
    assert call["batch_input_ids"] == batch  # unpadded, one tensor per prompt
    assert call["end_id"] == END and call["pad_id"] == 0
    assert call["output_sequence_lengths"] and call["return_dict"]
    assert call["top_k"] == 1 and call["top_p"] == 0.0 and call["num_beams"] == 1  # greedy, TRT spelling
    fd = next(c for n, c in fake_rt.CALLS if n == "ModelRunnerCpp.from_dir")
    assert (fd["max_batch_size"], fd["max_input_len"], fd["max_output_len"]) == (4, 32, 16)


def test_slicing_uses_sequence_lengths_not_padding(tmp_path, fake_rt, monkeypatch):
    """A generated token equal to end_id mid-row would be lost by 'strip trailing end_id'; the backend
    must cut at sequence_lengths and at the first end token, whatever padding follows."""
    monkeypatch.setattr(fake_rt, "NEXT_TOKEN", lambda p, g, v: [40, 41, END, 42][len(g)] if len(g) < 4 else 43)
    be = open_backend(spec(make_engine(tmp_path / "eng")))
    out = be.generate([[3, 4, 5, 6, 7]], Sampling(max_new_tokens=8))
    assert out[0].tokens == [40, 41] and out[0].finish_reason == "stop"


def test_python_runner_fallback_without_inflight_batching(tmp_path, fake_rt):
    be = open_backend(spec(make_engine(tmp_path / "eng", ifb=False)))
    assert be.runner_kind == "python"
    gens = be.generate([[95], [3, 4, 10]], Sampling(max_new_tokens=10))
    assert gens[0].tokens == [96, 97, 98, 99, 0, 1] and gens[1].tokens == list(range(11, 21))
    name, call = fake_rt.CALLS[-1]
    assert name == "ModelRunner.generate" and call["end_id"] == END and call["max_new_tokens"] == 10


def test_sampling_arguments_reach_runner(tmp_path, fake_rt):
    be = open_backend(spec(make_engine(tmp_path / "eng")))
    be.generate([[9]], Sampling(max_new_tokens=4, temperature=0.7, top_k=40, top_p=0.9, seed=123))
    call = fake_rt.CALLS[-1][1]
    assert (call["temperature"], call["top_k"], call["top_p"], call["random_seed"]) == (0.7, 40, 0.9, 123)


def test_streaming_emits_each_token_once_and_records_ttft(tmp_path, fake_rt):
    be = open_backend(spec(make_engine(tmp_path / "eng")))
    seen = []
    gens = be.generate([[95], [10]], Sampling(max_new_tokens=8), on_token=lambda r, t: seen.append((r, t)))
    assert [t for r, t in seen if r == 0] == [96, 97, 98, 99, 0, 1]
    assert [t for r, t in seen if r == 1] == list(range(11, 19))
    assert gens[0].ttft_s is not None and gens[0].ttft_s <= gens[0].batch_latency_s


def _fake_mpi(monkeypatch, rank: int, size: int) -> None:
    import tensorrt_llm._utils as utils

    monkeypatch.setattr(utils, "MPI_RANK", rank)
    monkeypatch.setattr(utils, "MPI_WORLD_SIZE", size)


def test_non_zero_rank_returns_nothing(tmp_path, fake_rt, monkeypatch):
    _fake_mpi(monkeypatch, rank=1, size=2)
    be = open_backend(spec(make_engine(tmp_path / "eng", world_size=2)))
    assert not be.is_main
    assert be.generate([[95]], Sampling(max_new_tokens=4)) == []
    assert fake_rt.CALLS[0][1]["rank"] == 1


def test_rank_comes_from_tensorrt_llm_not_from_launcher_variables(tmp_path, fake_rt, monkeypatch):
    """srun --mpi=pmix sets neither OMPI_* nor the variables another launcher uses: ask tensorrt_llm.mpi_rank()."""
    _fake_mpi(monkeypatch, rank=1, size=2)
    for name, value in (("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1"), ("SLURM_PROCID", "0")):
        monkeypatch.setenv(name, value)
    be = open_backend(spec(make_engine(tmp_path / "eng", world_size=2)))
    assert be.rank == 1 and not be.is_main


def test_multi_gpu_engine_without_mpirun_is_a_clear_error(tmp_path, fake_rt, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # not consulted: mpi_world_size() is 1 here
    with pytest.raises(ConfigError, match=r"runs with 1 MPI rank\(s\); launch it as `mpirun -n 2"):
        open_backend(spec(make_engine(tmp_path / "eng", world_size=2)))


def test_engine_limits_are_enforced_by_runner(tmp_path, fake_rt):
    be = open_backend(spec(make_engine(tmp_path / "eng")))
    with pytest.raises(RuntimeError, match="exceeds"):
        be.generate([[3] * 33], Sampling(max_new_tokens=4))


def test_unknown_generate_keyword_fails_in_fake(fake_rt, tmp_path):
    runner = fake_rt.ModelRunnerCpp.from_dir(str(make_engine(tmp_path / "eng")), max_output_len=8)
    with pytest.raises(TypeError, match="unknown keyword"):
        runner.generate([torch.tensor([3])], max_new_tokens=2, end_id=END, pad_id=0, topk=3)
    with pytest.raises(TypeError):
        fake_rt.ModelRunnerCpp.from_dir(str(tmp_path / "eng"), max_seq_len=8)


def test_missing_tensorrt_llm_names_the_container(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(MissingDependencyError, match="nvcr.io/nvidia/tensorrt-llm"):
        open_backend(spec(make_engine(tmp_path / "eng")))


def test_not_an_engine_folder(tmp_path, fake_rt):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="rank\\*.engine"):
        open_backend(spec(tmp_path / "e"))
