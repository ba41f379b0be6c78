"""`trt-minitron build`: validation, dry run, output safety, and the TensorRT-LLM call sequence against the fake
package in tests/fakes (the 1.2 line's signatures and module trees). Tests named *_on_fake_trtllm check how the
API is called; they build no engine. A real engine is built only by the gpu-marked test at the end."""

import hashlib
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import trt_minitron.build.run as b
from trt_minitron.archs import get_arch
from trt_minitron.archs.config import ModelConfig
from trt_minitron.checkpoints.trtllm import read_checkpoint
from trt_minitron.cli import main
from trt_minitron.tensors.mapping import Mapping

FAKES = Path(__file__).parent / "fakes"
TINY = dict(architecture="LlamaForCausalLM", vocab_size=250, hidden_size=64, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24, hidden_act="silu",
            norm_eps=1e-5, max_position_embeddings=256)
NEMOTRON_TINY = dict(architecture="NemotronForCausalLM", vocab_size=250, hidden_size=64, intermediate_size=96,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                     hidden_act="relu2", norm_eps=1e-5, max_position_embeddings=256, partial_rotary_factor=0.5)


def write_checkpoint(path: Path, fields=TINY, tp=1, rank_files=True, dtype="bfloat16", pp=1) -> Path:
    """config.json as the exporter writes it, plus zero-filled rank files with exactly the expected tensors."""
    cfg = ModelConfig(**fields)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(get_arch(cfg.architecture).trt_config(cfg, dtype, Mapping(tp, pp))))
    if rank_files:
        ckpt = read_checkpoint(path)
        for r in range(tp * pp):
            tensors = {n: torch.zeros(i.shape, dtype=i.dtype) for n, i in ckpt.expected_tensors(r).items()}
            save_file(tensors, str(path / f"rank{r}.safetensors"))
    return path


@pytest.fixture
def fake_trtllm(fake_trtllm_path, monkeypatch):
    """The fake tensorrt_llm importable, a CUDA GPU pretended; yields the fake's call log."""
    monkeypatch.setattr(b, "_cuda_available", lambda: True)
    monkeypatch.setattr(b, "_gpu_info", lambda: (24 << 30, "Fake GPU"))
    trt = importlib.import_module("tensorrt_llm")
    trt.CALLS.clear()
    return trt


def run_cli(capsys, *args):
    code = main(["build", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# --- dry run -----------------------------------------------------------------------------------------

def test_dry_run_prints_one_json_document(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt", tp=2)
    code, out, err = run_cli(capsys, ckpt, "--dry-run", "--gpu-memory", "16", "--max-seq-len", "512",
                             "--max-input-len", "256", "--gemm-plugin", "disable")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["build_config"] == {
        "max_input_len": 256, "max_seq_len": 512, "max_batch_size": 8, "max_beam_width": 1, "max_num_tokens": 8192,
        "opt_num_tokens": None, "kv_cache_type": "PAGED",
        "plugin_config": {"gpt_attention_plugin": "auto", "gemm_plugin": None, "context_fmha": True,
                          "paged_kv_cache": True, "remove_input_padding": True}}
    p = doc["plan"]
    assert p["weight_bytes_source"] == "rank files"
    # rank files hold the data: header sizes equal the tensors' bytes
    assert p["weight_bytes_per_rank"] == max(sum(t.nbytes for t in read_checkpoint(ckpt).expected_tensors(r).values())
                                            for r in range(2))
    assert p["kv_cache_bytes_per_token"] == 2 * 2 * 1 * 24 * 2  # 2 * layers * kv heads per rank * head * bytes
    assert p["gpu_memory_bytes"] == 16 << 30
    assert doc["checkpoint"]["rank_files"] == "validated"


def test_dry_run_needs_no_tensorrt_llm(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt", rank_files=False)
    code, out, _ = run_cli(capsys, ckpt, "--dry-run")
    assert code == 0
    assert json.loads(out)["checkpoint"]["rank_files"] == "absent (config-only dry run)"
    assert "tensorrt_llm" not in sys.modules


def test_importing_trt_minitron_never_imports_tensorrt_llm():
    code = ("import sys; sys.path.insert(0, %r); import trt_minitron.cli, trt_minitron.build.run; "
            "print('tensorrt_llm' in sys.modules)" % str(FAKES))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- validation errors: one line, named file and tensor, exit 2 ----------------------------------------

def test_wrong_tensor_shape_names_file_and_tensor(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    tensors = {n: torch.zeros(i.shape, dtype=i.dtype) for n, i in read_checkpoint(ckpt).expected_tensors(0).items()}
    tensors["transformer.layers.1.mlp.fc.weight"] = torch.zeros(95, 64, dtype=torch.bfloat16)
    save_file(tensors, str(ckpt / "rank0.safetensors"))
    code, out, err = run_cli(capsys, ckpt, "--dry-run")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "rank0.safetensors" in err and "transformer.layers.1.mlp.fc.weight" in err and "[95, 64]" in err


def test_missing_rank_file_is_named(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt", tp=2)
    (ckpt / "rank1.safetensors").unlink()
    code, _, err = run_cli(capsys, ckpt, "--dry-run")
    assert code == 2 and "rank1.safetensors" in err


def test_real_build_requires_rank_files(tmp_path, capsys, fake_trtllm):
    ckpt = write_checkpoint(tmp_path / "ckpt", rank_files=False)
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng")
    assert code == 2 and "missing rank files ['rank0.safetensors']" in err
    assert fake_trtllm.CALLS == []  # validated before touching TensorRT-LLM


def test_bad_config_json(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, tmp_path / "ckpt", "--dry-run")
    assert code == 2 and "config.json is not valid JSON" in err


@pytest.mark.parametrize("args, message", [
    (["--max-input-len", "4096", "--max-seq-len", "2048"], "--max-input-len 4096 is larger than --max-seq-len 2048"),
    (["--max-num-tokens", "512"], "--max-num-tokens 512 is smaller than --max-input-len 1024"),
    (["--gemm-plugin", "int8"], "--gemm-plugin 'int8'; choose one of auto, bfloat16, float16, float32, disable"),
    (["--gpt-attention-plugin", "disable"], "need the GPT attention plugin"),
    (["--gemm-plugin", "float16"], "--gemm-plugin float16 does not match the checkpoint dtype bfloat16"),
    (["--gpt-attention-plugin", "float32"], "--gpt-attention-plugin float32 does not match the checkpoint dtype"),
    (["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
    (["--gpu-memory", "nan"], "--gpu-memory must be a positive, finite number of GiB, got nan"),
    (["--gpu-memory", "inf"], "--gpu-memory must be a positive, finite number of GiB, got inf"),
    (["--gpu-memory", "-8"], "--gpu-memory must be a positive, finite number of GiB, got -8.0"),
    (["--gpu-memory", "0"], "--gpu-memory must be a positive, finite number of GiB, got 0.0"),
])
def test_bad_options(tmp_path, capsys, args, message):
    ckpt = write_checkpoint(tmp_path / "ckpt", rank_files=False)
    code, out, err = run_cli(capsys, ckpt, "--dry-run", *args)
    assert code == 2 and out == "" and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_float32_checkpoint_dry_run_uses_float32_plugins(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt", dtype="float32")
    code, out, err = run_cli(capsys, ckpt, "--dry-run", "--gemm-plugin", "float32", "--gpu-memory", "16")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["build_config"]["plugin_config"]["gemm_plugin"] == "float32"
    assert doc["plan"]["kv_cache_bytes_per_token"] == 2 * 2 * 2 * 24 * 4  # float32 KV cache


def test_without_tensorrt_llm_names_docker_target(tmp_path, capsys, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorrt_llm" else real_find_spec(name, *a))
    ckpt = write_checkpoint(tmp_path / "ckpt")
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng")
    assert code == 2 and err.count("\n") == 1
    assert "tensorrt_llm is not installed" in err and "--target build" in err
    assert not (tmp_path / "eng").exists()


def test_without_cuda_names_docker_target(tmp_path, capsys, fake_trtllm, monkeypatch):
    monkeypatch.setattr(b, "_cuda_available", lambda: False)
    ckpt = write_checkpoint(tmp_path / "ckpt")
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng")
    assert code == 2 and err.count("\n") == 1
    assert "no CUDA GPU is visible" in err and "--target build" in err
    assert fake_trtllm.CALLS == []

# --- the build against the fake API (call sequence and arguments; no engine is built) ----------------------------

def test_build_call_sequence_on_fake_trtllm(tmp_path, capsys, fake_trtllm):
    ckpt = write_checkpoint(tmp_path / "ckpt", tp=2)
    tokenizer = ["added_tokens.json", "merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                 "vocab.json"]  # a BPE tokenizer's files: an engine folder must carry every one
    for name in tokenizer:
        (ckpt / name).write_text("{}")
    out = tmp_path / "engines" / "tiny"
    code, _, err = run_cli(capsys, ckpt, "--output", out, "--max-seq-len", "512", "--max-input-len", "256",
                           "--max-num-tokens", "1024", "--gpu-memory", "8")
    assert code == 0, err
    names = [name for name, _ in fake_trtllm.CALLS if name != "PluginConfig"]
    # 1.2: BuildConfig is constructed by keyword (a pydantic model), never BuildConfig.from_dict.
    per_rank = ["PretrainedConfig.from_json_file", "PretrainedConfig.set_rank", "LLaMAForCausalLM.from_checkpoint",
                "BuildConfig", "build", "Engine.save"]
    assert names == per_rank * 2
    calls = [kw for name, kw in fake_trtllm.CALLS if name in ("PretrainedConfig.set_rank", "build")]
    assert [c["rank"] for c in calls] == [0, 0, 1, 1]
    bc = calls[1]["build_config"]
    assert (bc["max_batch_size"], bc["max_input_len"], bc["max_seq_len"], bc["max_num_tokens"],
            bc["max_beam_width"]) == (8, 256, 512, 1024, 1)
    assert bc["kv_cache_type"] == "paged"  # the 1.2 KVCacheType enum's value
    pc = bc["plugin_config"]
    assert (pc["gpt_attention_plugin"], pc["gemm_plugin"], pc["context_fmha"], pc["paged_kv_cache"],
            pc["remove_input_padding"]) == ("auto", "auto", True, True, True)

    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "rank0.engine", "rank1.engine", *tokenizer,
                                                            "trt_minitron_manifest.json"])
    engine_cfg = json.loads((out / "config.json").read_text())
    assert engine_cfg["pretrained_config"]["architecture"] == "LlamaForCausalLM"
    assert engine_cfg["build_config"]["plugin_config"]["gpt_attention_plugin"] == "bfloat16"  # auto -> model dtype
    m = json.loads((out / "trt_minitron_manifest.json").read_text())
    assert m["tensorrt_llm_version"] == "1.2.1+fake" and m["gpu"] == "Fake GPU"
    assert m["checkpoint"]["path"] == str(ckpt.resolve()) and m["checkpoint"]["tp_size"] == 2
    assert set(m["rank_seconds"]) == {"0", "1"}
    assert m["build_config"]["max_seq_len"] == 512 and m["plan"]["gpu_memory_bytes"] == 8 << 30
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left behind


@pytest.mark.parametrize("fields", [TINY, NEMOTRON_TINY], ids=["llama", "nemotron"])
def test_float32_checkpoint_builds_on_fake_trtllm(tmp_path, capsys, fake_trtllm, fields):
    """A float32 checkpoint (e.g. the demo's SmolLM2 export) used to be refused: plugins now default to auto."""
    ckpt = write_checkpoint(tmp_path / "ckpt", fields, dtype="float32", tp=2)
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng", "--gpu-memory", "8")
    assert code == 0, err
    plugin = json.loads((tmp_path / "eng" / "config.json").read_text())["build_config"]["plugin_config"]
    assert (plugin["gpt_attention_plugin"], plugin["gemm_plugin"]) == ("float32", "float32")
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng2", "--gemm-plugin", "bfloat16")
    assert code == 2 and "--gemm-plugin bfloat16 does not match the checkpoint dtype float32" in err
    assert not (tmp_path / "eng2").exists()


def test_real_export_builds_on_fake_trtllm(tmp_path, capsys, fake_trtllm):
    """A float32 export of a tiny HF Nemotron at tp 2 passes the fake's module-tree check on both ranks."""
    from tiny import make_tiny_nemotron

    from trt_minitron.export.run import ExportOptions, run_export

    run_export(ExportOptions(src=str(make_tiny_nemotron(tmp_path / "hf")), output=tmp_path / "ckpt",
                             dtype="float32", tp=2))
    code, _, err = run_cli(capsys, tmp_path / "ckpt", "--output", tmp_path / "eng", "--gpu-memory", "8")
    assert code == 0, err
    assert [kw["rank"] for n, kw in fake_trtllm.CALLS if n == "GPTForCausalLM.from_checkpoint"] == [0, 1]


def test_existing_output_needs_overwrite(tmp_path, capsys, fake_trtllm):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "eng"
    assert run_cli(capsys, ckpt, "--output", out)[0] == 0
    (out / "rank0.engine").write_bytes(b"an older engine")
    fake_trtllm.CALLS.clear()
    code, _, err = run_cli(capsys, ckpt, "--output", out)
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert fake_trtllm.CALLS == []
    (out / "notes.txt").write_text("the user's own file")  # not ours: --overwrite must not delete it
    code, _, err = run_cli(capsys, ckpt, "--output", out, "--overwrite")
    assert code == 2 and "notes.txt" in err and fake_trtllm.CALLS == []
    assert (out / "rank0.engine").read_bytes() == b"an older engine"
    (out / "notes.txt").unlink()
    code, _, err = run_cli(capsys, ckpt, "--output", out, "--overwrite")
    assert code == 0, err
    assert (out / "rank0.engine").read_bytes().startswith(b"FAKE-ENGINE")
    plan = json.loads((out / "trt_minitron_manifest.json").read_text())["plan"]
    assert plan["gpu_memory_source"] == "local GPU Fake GPU" and plan["gpu_memory_bytes"] == 24 << 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "eng"]


def _tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_output_that_is_contains_or_lies_in_the_checkpoint_is_refused(tmp_path, capsys, fake_trtllm, where):
    ckpt = write_checkpoint(tmp_path / "models" / "ckpt")
    out = {"same": ckpt, "inside": ckpt / "engine", "parent": tmp_path / "models"}[where]
    before = _tree_digest(tmp_path)
    code, stdout, err = run_cli(capsys, ckpt, "--output", out, "--overwrite")
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"(is|contains|lies inside) the source", err)
    assert _tree_digest(tmp_path) == before and fake_trtllm.CALLS == []


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_overwrite_refuses_what_build_did_not_write(tmp_path, capsys, fake_trtllm, kind):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "precious"
    if kind == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    else:
        out.write_text("keep me")
    before = _tree_digest(tmp_path)
    code, _, err = run_cli(capsys, ckpt, "--output", out, "--overwrite")
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err and "remove it yourself" in err
    assert _tree_digest(tmp_path) == before and fake_trtllm.CALLS == []


def test_output_below_a_file_is_one_line(tmp_path, capsys, fake_trtllm):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "afile" / "eng")
    assert code == 2 and err.count("\n") == 1 and "afile is a file, not a folder" in err
    assert fake_trtllm.CALLS == []


def test_overwrite_accepts_an_empty_folder(tmp_path, capsys, fake_trtllm):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    (tmp_path / "eng").mkdir()
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng", "--overwrite")
    assert code == 0, err
    assert (tmp_path / "eng" / "rank0.engine").is_file()


def test_build_under_mpirun_is_refused_on_fake_trtllm(tmp_path, capsys, fake_trtllm, monkeypatch):
    """Rank and world size come from tensorrt_llm.mpi_world_size(), not from launcher environment variables."""
    monkeypatch.setattr(fake_trtllm._utils, "MPI_WORLD_SIZE", 2)
    ckpt = write_checkpoint(tmp_path / "ckpt")
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "eng")
    assert code == 2 and err.count("\n") == 1 and "one of 2 MPI ranks" in err and "--workers" in err
    assert not (tmp_path / "eng").exists()
    monkeypatch.setattr(fake_trtllm._utils, "MPI_WORLD_SIZE", 1)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")  # ignored: the API is asked, not the environment
    assert run_cli(capsys, ckpt, "--output", tmp_path / "eng")[0] == 0


def test_failed_build_leaves_nothing(tmp_path, capsys, fake_trtllm, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "ckpt", tp=2)

    def broken(model, build_config):
        raise RuntimeError("engine build failed")

    monkeypatch.setattr(fake_trtllm.builder, "build", broken)
    code, _, err = run_cli(capsys, ckpt, "--output", tmp_path / "out" / "eng")
    assert code == 70 and "internal error, please report it: RuntimeError: engine build failed" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_parallel_workers_build_every_rank_on_fake_trtllm(tmp_path, capsys, fake_trtllm):
    ckpt = write_checkpoint(tmp_path / "ckpt", tp=2)
    out = tmp_path / "eng"
    code, _, err = run_cli(capsys, ckpt, "--output", out, "--workers", "2")
    assert code == 0, err
    assert (out / "rank0.engine").read_bytes().startswith(b"FAKE-ENGINE rank=0")
    assert (out / "rank1.engine").read_bytes().startswith(b"FAKE-ENGINE rank=1")
    assert fake_trtllm.CALLS == []  # the ranks ran in worker processes


# --- real engine build -------------------------------------------------------------------------------

def _real_trtllm_and_cuda() -> bool:
    if importlib.util.find_spec("tensorrt_llm") is None or not torch.cuda.is_available():
        return False
    return "fakes" not in (importlib.util.find_spec("tensorrt_llm").origin or "")


@pytest.mark.gpu
@pytest.mark.skipif(not _real_trtllm_and_cuda(), reason="needs tensorrt_llm and a CUDA GPU")
@pytest.mark.parametrize("arch, dtype", [("llama", "bfloat16"), ("llama", "float32"), ("nemotron", "bfloat16")])
def test_real_engine_build_of_tiny_export(tmp_path, capsys, arch, dtype):
    """A real TensorRT-LLM engine of a tiny export, with the default plugins (auto = checkpoint dtype)."""
    from tiny import make_tiny_llama, make_tiny_nemotron

    from trt_minitron.export.run import ExportOptions, run_export

    make = make_tiny_llama if arch == "llama" else make_tiny_nemotron
    run_export(ExportOptions(src=str(make(tmp_path / "hf")), output=tmp_path / "ckpt", dtype=dtype))
    code, _, err = run_cli(capsys, tmp_path / "ckpt", "--output", tmp_path / "eng", "--max-batch-size", "2",
                           "--max-input-len", "64", "--max-seq-len", "128", "--max-num-tokens", "256")
    assert code == 0, err
    assert (tmp_path / "eng" / "rank0.engine").stat().st_size > 0
    m = json.loads((tmp_path / "eng" / "trt_minitron_manifest.json").read_text())
    import tensorrt_llm

    assert m["tensorrt_llm_version"] == tensorrt_llm.__version__
    assert m["checkpoint"]["dtype"] == dtype
