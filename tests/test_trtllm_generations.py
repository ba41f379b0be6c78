"""Both TensorRT-LLM generations: the installed one decides (engines need the 1.2.x engine path, Hugging Face folders
the LLM API of the PyTorch backend), against the fake of each generation (tests/fakes: 1.2, tests/fakes13: 1.3+).

The 1.3+ fake's LLM generates with transformers on the CPU; these tests prove that trt-minitron calls the LLM API with
the real names and reads its outputs right, not that TensorRT-LLM ran. The `gpu` test at the end runs the real one.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from quant_fixtures import SHARED, write_tokenizer
from tiny import make_tiny_llama

from trt_minitron.backends import BackendSpec, open_backend
from trt_minitron.backends.base import Sampling
from trt_minitron.cli import main
from trt_minitron.errors import ConfigError
from trt_minitron.trtllm import install as trtllm_install

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> Path:
    """A tiny Llama (GQA, head_dim 24 != 64/4, llama3 rope, max_position_embeddings 256) with a BPE tokenizer."""
    path = make_tiny_llama(tmp_path_factory.mktemp("gen") / "tiny")
    write_tokenizer(path, 250)
    return path


def copy_with(src: Path, dst: Path, **files: dict) -> Path:
    """A copy of an HF folder with extra JSON files (e.g. hf_quant_config.json as ModelOpt writes it)."""
    import shutil

    shutil.copytree(src, dst)
    for name, data in files.items():
        (dst / name.replace("__", ".")).write_text(json.dumps(data))
    return dst


FP8_KV = {"producer": {"name": "modelopt", "version": "0.47.0"},
          "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}


def fake_old_trtllm(root: Path, version: str) -> Path:
    """A tensorrt_llm package with the engine path and an llmapi/llm.py, of a version whose LLM was not yet PyTorch."""
    pkg = root / "tensorrt_llm"
    (pkg / "llmapi").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "version.py").write_text(f'__version__ = "{version}"\n')
    (pkg / "builder.py").write_text("")
    (pkg / "llmapi" / "__init__.py").write_text("")
    (pkg / "llmapi" / "llm.py").write_text("")
    return root


def one_line_exit_2(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trt-minitron: error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


# --- which generation is installed ---------------------------------------------------------------------------------

def test_detect_each_generation(fake_trtllm_path, monkeypatch, tmp_path):
    found = trtllm_install.detect()
    assert (found.version, found.engine_path, found.llm_api) == ("1.2.1+fake", True, False)
    monkeypatch.syspath_prepend(str(TESTS / "fakes13"))
    sys.path.remove(str(fake_trtllm_path))
    found = trtllm_install.detect()
    assert (found.version, found.engine_path, found.llm_api) == ("1.3.0rc24+fake", False, True)
    assert "tensorrt_llm" not in sys.modules  # found from the files: nothing imported


def test_detect_a_pre_pytorch_llm_api_and_no_package(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(fake_old_trtllm(tmp_path, "0.12.0")))
    found = trtllm_install.detect()
    assert (found.version, found.engine_path, found.llm_api) == ("0.12.0", True, False)  # its LLM built engines
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    assert trtllm_install.detect() is None


# --- build: engines need the engine path --------------------------------------------------------------------------

def test_build_on_13_refuses_at_once_and_dry_run_still_plans(fake_trtllm13_path, tmp_path, capsys):
    out = tmp_path / "eng"
    err = one_line_exit_2(capsys, ["build", str(tmp_path / "no-such-ckpt"), "-o", str(out)],
                          "tensorrt_llm 1.3.0rc24+fake", "1.2.x", "release:1.2.1", "--format hf", "serve")
    assert "no config.json" not in err  # refused before the checkpoint was read
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    from test_build import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "ckpt")
    assert main(["build", str(ckpt), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["weight_bytes_per_rank"] > 0


# --- generate / summarize --backend trtllm ------------------------------------------------------------------------

def test_summarize_trtllm_hf_and_hf_give_identical_greedy_outputs(fake_trtllm13_path, hf, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main(["summarize", "--backend", "trtllm", str(hf), "--backend", "hf", str(hf), "--dataset-file", str(SHARED),
                 "--num-samples", "3", "--max-input-len", "96", "--output-len", "12", "--batch-size", "2",
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "| trtllm | tiny |" in out and "| hf | tiny |" in out and "identical outputs 3/3" in out
    rep = json.loads(report.read_text())
    trt, ref = rep["backends"]
    assert [s["token_ids"] for s in trt["samples"]] == [s["token_ids"] for s in ref["samples"]]
    assert all(len(s["token_ids"]) == 12 for s in trt["samples"])
    assert trt["aggregate"]["tokens_per_s"] > 0 and trt["aggregate"]["latency_per_batch"]["mean_s"] > 0
    import tensorrt_llm

    llm = next(c for n, c in tensorrt_llm.CALLS if n == "LLM")
    assert llm["max_batch_size"] == 2 and llm["max_seq_len"] == 96 + 12
    gen = [c for n, c in tensorrt_llm.CALLS if n == "LLM.generate"]
    assert all(c["sampling_params"].top_k == 1 and c["sampling_params"].end_id == 2 for c in gen)  # greedy, </s>
    assert sum(c["sampling_params"].max_tokens == 12 for c in gen) == 3  # + the warm-up
    assert ("LLM.shutdown", {}) in tensorrt_llm.CALLS


def test_parallel_and_kv_cache_settings_reach_llm_by_their_real_names(fake_trtllm13_path, hf, tmp_path):
    import tensorrt_llm
    from tensorrt_llm.llmapi import CudaGraphConfig, KvCacheConfig

    fp8kv = copy_with(hf, tmp_path / "fp8kv", hf_quant_config__json=FP8_KV)
    be = open_backend(BackendSpec(kind="trtllm", model=str(fp8kv), tp_size=2, pp_size=4, max_batch_size=6,
                                  max_input_len=200, max_output_len=50, kv_cache_free_gpu_memory_fraction=0.5))
    call = next(c for n, c in tensorrt_llm.CALLS if n == "LLM")
    assert (call["tensor_parallel_size"], call["pipeline_parallel_size"]) == (2, 4)
    assert call["kv_cache_config"] == KvCacheConfig(free_gpu_memory_fraction=0.5, dtype="fp8")
    assert call["cuda_graph_config"] == CudaGraphConfig(batch_sizes=[1, 2, 4, 6], enable_padding=True)
    assert (call["max_batch_size"], call["max_seq_len"], call["max_num_tokens"]) == (6, 250, 8192)
    assert "enable_chunked_prefill" not in call  # 8192 tokens per step hold a 250-token sequence
    be.close()


def test_fake_llm_api_rejects_what_the_real_one_rejects(fake_trtllm13_path, hf):
    from pydantic import ValidationError
    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm.llmapi import CudaGraphConfig, KvCacheConfig

    with pytest.raises(ValueError, match="invalid argument: kv_cache_free_gpu_memory_fraction"):
        LLM(model=str(hf), kv_cache_free_gpu_memory_fraction=0.5)  # a trtllm-serve flag, not an LlmArgs field
    with pytest.raises(TypeError):
        SamplingParams(max_new_tokens=4)  # the ModelRunner spelling
    with pytest.raises(ValidationError):
        KvCacheConfig(kv_cache_dtype="fp8")
    with pytest.raises(ValidationError):
        KvCacheConfig(free_gpu_memory_fraction=1.5)
    with pytest.raises(ValidationError):
        CudaGraphConfig(batch_sizes=[1, 2], max_batch_size=4)


@pytest.mark.parametrize("include_end", [True, False])
def test_generation_stops_at_the_end_id_like_the_hf_backend(fake_trtllm13_path, hf, monkeypatch, include_end):
    import tensorrt_llm.llmapi.llm as fake_llm

    monkeypatch.setattr(fake_llm, "INCLUDE_END_TOKEN", include_end)  # whether the runtime reports it: unconfirmed
    trt = open_backend(BackendSpec(kind="trtllm", model=str(hf), max_batch_size=2))
    ref = open_backend(BackendSpec(kind="hf", model=str(hf)))
    prompts = [[5, 6, 7], [30, 31, 32, 33]]
    free = trt.generate(prompts, Sampling(max_new_tokens=10))
    assert [g.finish_reason for g in free] == ["length", "length"]
    trt.end_id = ref.end_id = free[0].tokens[3]  # a token the model produces: generation must stop there
    got, want = trt.generate(prompts, Sampling(max_new_tokens=10)), [ref.generate([p], Sampling(max_new_tokens=10))[0]
                                                                       for p in prompts]
    assert got[0].tokens == free[0].tokens[:3] and got[0].finish_reason == "stop"
    assert [g.tokens for g in got] == [g.tokens for g in want]
    assert [g.finish_reason for g in got] == [g.finish_reason for g in want]
    trt.close()


def test_streaming_generate_prints_tokens_and_times_the_first(fake_trtllm13_path, hf, capsys):
    assert main(["generate", "--backend", "trtllm", str(hf), "--prompt", "The court said", "--max-new-tokens", "6",
                 "--stream"]) == 0
    out = capsys.readouterr().out
    assert "6 generated (length)" in out and "first token" in out


def test_tp_that_does_not_divide_the_heads_is_one_line(fake_trtllm13_path, hf, capsys):
    one_line_exit_2(capsys, ["generate", "--backend", "trtllm", str(hf), "--prompt", "x", "--tp-size", "3"],
                    "tp size 3 does not divide num_attention_heads=4")


def test_engine_on_13_and_hf_on_a_version_without_the_llm_api(fake_trtllm13_path, hf, tmp_path, capsys, monkeypatch):
    from test_backend_trtllm import make_engine

    eng = make_engine(tmp_path / "eng")
    one_line_exit_2(capsys, ["generate", "--backend", "trtllm", str(eng), "--prompt", "w1"],
                    "tensorrt_llm 1.3.0rc24+fake", "release:1.2.1", "--format hf")
    sys.path.remove(str(fake_trtllm13_path))
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorrt_llm"]:
        sys.modules.pop(name)
    monkeypatch.syspath_prepend(str(fake_old_trtllm(tmp_path / "old", "0.12.0")))
    one_line_exit_2(capsys, ["generate", "--backend", "trtllm", str(hf), "--prompt", "w1"],
                    "tensorrt_llm 0.12.0", "LLM API of the PyTorch backend", "docker/Dockerfile.hf", "trt-minitron build")


def test_engine_backend_on_12_is_unchanged(fake_trtllm_path, tmp_path):
    from test_backend_trtllm import make_engine

    eng = str(make_engine(tmp_path / "eng"))
    be = open_backend(BackendSpec(kind="trtllm", model=eng, max_batch_size=2, max_input_len=32, max_output_len=4))
    assert type(be).__name__ == "TrtllmBackend" and be.generate([[95]], Sampling(max_new_tokens=4))[0].tokens
    with pytest.raises(ConfigError, match="--tp-size apply to Hugging Face folders; the engine"):
        open_backend(BackendSpec(kind="trtllm", model=eng, tp_size=2))


def test_llm_api_settings_refuse_what_the_model_cannot_take(hf, tmp_path):
    from trt_minitron.trtllm.llmapi_args import derive, read_hf_checkpoint

    ckpt = read_hf_checkpoint(hf)
    with pytest.raises(ConfigError, match="exceeds the model's max_position_embeddings=256"):
        derive(ckpt, max_seq_len=257)
    with pytest.raises(ConfigError, match="pp size 5 is more than the 4 layers"):
        derive(ckpt, pp_size=5)
    odd = copy_with(hf, tmp_path / "odd", hf_quant_config__json={"quantization": {"kv_cache_quant_algo": "INT8"}})
    with pytest.raises(ConfigError, match="kv_cache_quant_algo 'INT8'"):
        derive(read_hf_checkpoint(odd))
    cfg = json.loads((hf / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_scheme": None}
    clash = copy_with(hf, tmp_path / "clash", hf_quant_config__json=FP8_KV)
    (clash / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="re-export the checkpoint"):
        read_hf_checkpoint(clash)


# --- serve on the PyTorch backend ---------------------------------------------------------------------------------

@pytest.fixture
def fake_serve(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtllm-serve"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {TESTS / 'fake_trtllm_serve.py'} \"$@\"\n")
    exe.chmod(0o755)
    log = tmp_path / "trtllm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_LOG", str(log))
    monkeypatch.chdir(tmp_path)
    return log


def dry_run(capsys, model: Path, *args: str) -> tuple[list[str], dict, dict, str]:
    """serve --dry-run: the printed trtllm-serve argv (parsed with the real serve.py option table), YAML and output."""
    import yaml
    from test_serve_launch import parse_with_real_options

    assert main(["serve", str(model), "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    argv = next(line for line in out.splitlines() if line.startswith("command: ")).split()[1:]
    serve_args = argv[argv.index("trtllm-serve") + 1:] if "mpirun" in argv[0] else argv[1:]
    params = parse_with_real_options(serve_args)
    text = out.split("(--dry-run: not written): ", 1)[1].split("\n", 1)[1] if "not written" in out else ""
    return argv, params, (yaml.safe_load(text) if text else {}), out


def check_yaml_against_llm_args(model: Path, options: dict) -> None:
    """The YAML's keys and values are TorchLlmArgs fields of the 1.3+ generation (pydantic, extra forbidden)."""
    sys.path.insert(0, str(TESTS / "fakes13"))
    try:
        llm_args = importlib.import_module("tensorrt_llm.llmapi.llm_args")
        llm_args.TorchLlmArgs(model=str(model), **options)
    finally:
        sys.path.remove(str(TESTS / "fakes13"))
        for name in [m for m in sys.modules if m.split(".")[0] == "tensorrt_llm"]:
            sys.modules.pop(name)


def test_serve_dry_run_plain_checkpoint(fake_serve, hf, capsys, tmp_path):
    argv, params, options, out = dry_run(capsys, hf)
    assert params["backend"] == "pytorch" and params["model"] == str(hf)
    assert (params["tensor_parallel_size"], params["pipeline_parallel_size"]) == (1, 1)
    assert (params["max_batch_size"], params["max_num_tokens"], params["max_seq_len"]) == (128, 8192, 256)
    assert params["free_gpu_memory_fraction"] == 0.9
    assert params["extra_llm_api_options"] == str(tmp_path / "tiny.trtllm-serve.yaml")
    assert options == {"kv_cache_config": {"free_gpu_memory_fraction": 0.9},
                       "cuda_graph_config": {"batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128], "enable_padding": True}}
    check_yaml_against_llm_args(hf, options)
    assert "unquantized" in out and "chunked prefill off" in out
    assert not (tmp_path / "tiny.trtllm-serve.yaml").exists()  # --dry-run writes nothing


def test_serve_dry_run_chunked_prefill_and_mpirun(fake_serve, hf, capsys):
    argv, params, options, _ = dry_run(capsys, hf, "--max-num-tokens", "128", "--tp-size", "2", "--pp-size", "2",
                                       "--max-batch-size", "48", "--mpirun")
    assert options["enable_chunked_prefill"] is True  # 128 tokens per step < 256 per sequence
    assert options["cuda_graph_config"]["batch_sizes"] == [1, 2, 4, 8, 16, 32, 48]
    assert argv[:3] == ["mpirun", "-n", "4"] and argv.index("trtllm-llmapi-launch") < argv.index("trtllm-serve")
    assert (params["tensor_parallel_size"], params["pipeline_parallel_size"], params["max_num_tokens"]) == (2, 2, 128)
    check_yaml_against_llm_args(hf, options)


@pytest.fixture(scope="module")
def fp8kv_unified(tmp_path_factory, hf):
    """A real ModelOpt unified checkpoint with FP8 weights and FP8 KV cache (`quantize --format hf`)."""
    pytest.importorskip("modelopt")
    out = tmp_path_factory.mktemp("fp8kv") / "fp8kv"
    calib = ["--calib-dataset", str(SHARED), "--calib-size", "4", "--calib-max-len", "32", "--batch-size", "4"]
    assert main(["quantize", str(hf), "-o", str(out), "--qformat", "fp8", "--kv-cache-dtype", "fp8", "--format", "hf",
                 *calib]) == 0
    return out


def test_serve_dry_run_fp8_kv_unified_checkpoint(fake_serve, fp8kv_unified, capsys):
    q = json.loads((fp8kv_unified / "hf_quant_config.json").read_text())["quantization"]
    assert q["kv_cache_quant_algo"] == "FP8"  # as ModelOpt wrote it
    _, params, options, out = dry_run(capsys, fp8kv_unified, "--kv-cache-free-gpu-memory-fraction", "0.8")
    assert options["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"}
    assert params["free_gpu_memory_fraction"] == 0.8
    assert "FP8 + FP8 KV cache (hf_quant_config.json and config.json quantization_config)" in out
    check_yaml_against_llm_args(fp8kv_unified, options)


def test_serve_writes_the_yaml_it_derived_and_refuses_a_users_file(fake_serve, hf, tmp_path, capsys):
    import signal
    import subprocess

    from test_serve_launch import _read_until, as_in_a_terminal, free_port

    yaml_path = tmp_path / "tiny.trtllm-serve.yaml"  # the default: named after the model, in the current folder
    for _ in range(2):  # the second run replaces our own file
        proc = subprocess.Popen([sys.executable, "-m", "trt_minitron", "serve", str(hf), "--port", str(free_port())],
                                cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=as_in_a_terminal, env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
        lines = _read_until(proc, "ready:")
        assert lines[2] == f"llm api options: {yaml_path}\n"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert yaml_path.read_text().startswith("# written by trt-minitron serve")
    events = [json.loads(line) for line in fake_serve.read_text().splitlines() if '"parsed"' in line]
    assert len(events) == 2 and events[-1]["options"]["extra_llm_api_options"] == str(yaml_path)
    assert events[-1]["llm_api_options"]["cuda_graph_config"]["enable_padding"] is True
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    yaml_path.write_text("kv_cache_config: {dtype: auto}\n")  # now the user's
    one_line_exit_2(capsys, ["serve", str(hf)], "exists and is not a file trt-minitron wrote; pass --overwrite")
    assert yaml_path.read_text() == "kv_cache_config: {dtype: auto}\n"
    assert len([1 for line in fake_serve.read_text().splitlines() if '"parsed"' in line]) == 2  # nothing started


def test_serve_never_writes_into_the_model_folder(fake_serve, hf, capsys, monkeypatch):
    monkeypatch.chdir(hf)  # the default path would be ./tiny.trtllm-serve.yaml inside the model
    one_line_exit_2(capsys, ["serve", ".", "--dry-run"], "inside the model folder")
    one_line_exit_2(capsys, ["serve", str(hf), "--llm-api-options", str(hf / "x.yaml")], "inside the model folder")
    assert not list(hf.glob("*.yaml"))


def test_summarize_labels_a_unified_checkpoint_by_its_format(hf, tmp_path):
    from trt_minitron.summarize.run import checkpoint_format

    fp8kv = copy_with(hf, tmp_path / "fp8kv", hf_quant_config__json=FP8_KV)
    assert checkpoint_format(BackendSpec(kind="trtllm", model=str(fp8kv))) == "FP8 + FP8 KV"
    assert checkpoint_format(BackendSpec(kind="trtllm", model=str(hf))) is None


def test_serve_leaves_a_users_extra_llm_api_options_alone(fake_serve, hf, capsys, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("print_iter_log: true\n")
    assert main(["serve", str(hf), "--dry-run", "--", "--extra_llm_api_options", str(mine)]) == 0
    out = capsys.readouterr().out
    assert "your --extra_llm_api_options replaces the derived YAML" in out and "llm api options" not in out
    command = next(line for line in out.splitlines() if line.startswith("command: "))
    assert command.count("--extra_llm_api_options") == 1 and command.endswith(f"--extra_llm_api_options {mine}")


def test_serve_on_13_refuses_an_engine_and_on_old_refuses_hf(fake_serve, fake_trtllm13_path, hf, tmp_path, capsys,
                                                               monkeypatch):
    from test_serve_launch import make_engine

    one_line_exit_2(capsys, ["serve", str(make_engine(tmp_path / "eng")), "--dry-run"],
                    "tensorrt_llm 1.3.0rc24+fake", "release:1.2.1")
    assert main(["serve", str(hf), "--dry-run"]) == 0
    assert "(tensorrt_llm 1.3.0rc24+fake)" in capsys.readouterr().out
    sys.path.remove(str(fake_trtllm13_path))
    monkeypatch.syspath_prepend(str(fake_old_trtllm(tmp_path / "old", "0.12.0")))
    one_line_exit_2(capsys, ["serve", str(hf), "--dry-run"], "tensorrt_llm 0.12.0", "docker/Dockerfile.hf")


# --- the real thing ------------------------------------------------------------------------------------------------

def _real_llm_api() -> bool:
    found = trtllm_install.detect()
    return found is not None and found.llm_api and "fakes" not in str(found.location) and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _real_llm_api(), reason="needs a real tensorrt_llm with the PyTorch LLM API and a CUDA GPU")
def test_real_llm_api_matches_hf_greedy(tmp_path):
    """On a GPU with TensorRT-LLM 1.x: the LLM API's greedy tokens on a tiny bf16 Llama (head_dim 64, a size its
    attention kernels take; GQA, llama3 rope) against transformers' on the same bf16 weights."""
    from transformers import AutoModelForCausalLM

    src = make_tiny_llama(tmp_path / "fp32", hidden_size=128, head_dim=64)
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    write_tokenizer(tmp_path / "bf16", 250)
    prompts = [[5, 6, 7, 8], [40, 41, 42]]
    trt = open_backend(BackendSpec(kind="trtllm", model=str(tmp_path / "bf16"), max_batch_size=2, max_input_len=32,
                                   max_output_len=8))
    got = trt.generate(prompts, Sampling(max_new_tokens=8))
    trt.close()
    ref = open_backend(BackendSpec(kind="hf", model=str(tmp_path / "bf16"), device="cuda", dtype="bfloat16"))
    want = [ref.generate([p], Sampling(max_new_tokens=8))[0] for p in prompts]
    assert [g.tokens[:2] for g in got] == [w.tokens[:2] for w in want]  # kernels differ: later ties may flip
    agree = sum(a == b for g, w in zip(got, want) for a, b in zip(g.tokens, w.tokens))
    assert agree >= 12, ([g.tokens for g in got], [w.tokens for w in want])
