"""Every registered architecture, the same checks: its facts are complete at import, its tensor list is
transformers' own, and export (tp 2, pp 2) -> verify, reading back, the fake TensorRT-LLM models and
`--format hf` all work from the registry alone. A new arch module is tested here without editing this file."""

import importlib
import json
import shutil

import pytest
import torch
from cli_checks import user_error
from tiny import make_registered as make_tiny
from tiny import registry_config as tiny_config

from trt_minitron.archs import register, registered
from trt_minitron.archs.base import split_rows
from trt_minitron.archs.config import ModelConfig
from trt_minitron.archs.llama import Llama
from trt_minitron.checkpoints.trtllm import read_checkpoint
from trt_minitron.cli import main
from trt_minitron.export.run import ExportOptions, run_export

ARCHS = registered()
IDS = [a.hf_architecture for a in ARCHS]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    yield {a.hf_architecture: make_tiny(a, root / a.hf_architecture) for a in ARCHS}
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_hf_tensors_are_transformers_own_names_and_shapes(arch, models):
    from safetensors import safe_open

    cfg = ModelConfig.from_hf_file(models[arch.hf_architecture] / "config.json")
    assert cfg == tiny_config(arch, torch_dtype=cfg.torch_dtype)  # config.json read back as written
    with safe_open(models[arch.hf_architecture] / "model.safetensors", "pt") as f:
        stored = {n: tuple(f.get_slice(n).get_shape()) for n in f.keys()}
    assert arch.hf_tensors(cfg) == stored


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_export_tp2_pp2_verifies_reads_back_and_loads_in_the_fake(arch, models, tmp_path, fake_trtllm_path):
    src = models[arch.hf_architecture]
    out = tmp_path / "ckpt"
    run_export(ExportOptions(src=str(src), output=out, dtype="float32", tp=2, pp=2))
    raw = json.loads((out / "config.json").read_text())
    assert raw["architecture"] == arch.trt_architecture and raw["hidden_act"] == arch.trt_hidden_act
    back = read_checkpoint(out)
    assert back.model.architecture == arch.hf_architecture and back.model.head_dim == 24
    trt = importlib.import_module("tensorrt_llm")
    config = trt.PretrainedConfig.from_json_file(str(out / "config.json"))
    for rank in range(4):  # the fake's module tree must take every rank file exactly
        trt.MODEL_MAP[config.architecture].from_checkpoint(str(out), rank=rank, config=config)
    assert main(["verify", str(out), "--reference", str(src)]) == 0


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_format_hf_round_trips_through_transformers(arch, models, tmp_path):
    from transformers import AutoModelForCausalLM

    src = models[arch.hf_architecture]
    out = tmp_path / "hf"
    assert main(["export", str(src), "--output", str(out), "--format", "hf", "--dtype", "float32"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [arch.hf_architecture] and cfg["model_type"] == arch.model_type
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(src)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_torch_backend_on_the_hf_folder_names_the_right_backend(arch, models, capsys):
    src = models[arch.hf_architecture]
    msg = user_error(capsys, "generate", "--backend", "torch", src, "--prompt", "hi", "--tokenizer", src)
    assert msg == (f"{src} is a Hugging Face model, not a TensorRT-LLM checkpoint: use --backend hf {src} "
                   "(the torch backend runs `trt-minitron export` output)")


def test_an_architecture_missing_a_fact_fails_at_import():
    with pytest.raises(TypeError, match=r"architecture Half does not state model_type, trt_architecture"):
        @register
        class Half(Llama):
            hf_architecture = "HalfForCausalLM"


def test_an_architecture_claiming_a_taken_name_fails_at_import():
    with pytest.raises(TypeError, match=r"claims the TensorRT-LLM architecture 'LlamaForCausalLM', already Llama's"):
        @register
        class Twin(Llama):
            hf_architecture = "TwinForCausalLM"
            model_type = "twin"
            trt_architecture = "LlamaForCausalLM"
            gguf_architecture = None
            nemo_activations = ()
            nemo_normalization = None
    assert "TwinForCausalLM" not in [a.hf_architecture for a in registered()]


def test_an_architecture_splitting_a_linear_against_tensorrt_llm_fails_at_import():
    # Readers of quantized companions merge ranks by COLUMN/ROW_LINEARS: an arch may not split a RowLinear by rows.
    with pytest.raises(TypeError, match=r"\['mlp.proj.weight'\] split across ranks against TensorRT-LLM's Column/RowLinear"):
        @register
        class Sideways(Llama):
            hf_architecture = "SidewaysForCausalLM"
            model_type = "sideways"
            trt_architecture = "SidewaysForCausalLM"
            gguf_architecture = None
            nemo_activations = ()
            nemo_normalization = None
            per_layer = {**Llama.per_layer, "mlp.proj.weight": split_rows("mlp.down_proj.weight")}
    assert "SidewaysForCausalLM" not in [a.hf_architecture for a in registered()]
