"""The architecture boundary, proven by an architecture declared here and nowhere else: linear biases
(q/k/v among them) on a non-gated MLP, registered for this file only.

Why not the Qwen2-like hybrid (biases on q/k/v alone, none on o_proj or the MLP) issue 16 names: the one
TensorRT-LLM class with a non-gated MLP, GPTForCausalLM, has a single `bias` switch for every linear
(GPTConfig.bias: attention qkv and dense, mlp fc and proj), so TensorRT-LLM could not load such a checkpoint;
`test_qkv_only_biases_on_the_gpt_class_fail_at_import` shows the registry refusing it. The closest honest
architecture is transformers' own Nemotron with `attention_bias` and `mlp_bias` on (NemotronConfig has both
flags; trt-minitron's Nemotron has neither), written as GPTForCausalLM with bias=true. It is exported (tp 1, 2;
the registry suite adds tp 2 x pp 2), verified against transformers, loaded rank by rank in the fake
TensorRT-LLM (which checks names and shapes only: fake-backed, no engine is built), and round-tripped through
`export --format hf`. Nothing outside this file knows it.
"""

import importlib
import inspect
import json
import shutil

import pytest
import test_registry as registry_suite
import torch
from cli_checks import user_error
from safetensors.torch import load_file, save_file
from transformers import NemotronConfig, NemotronForCausalLM
from transformers.models.nemotron.modeling_nemotron import (
    NemotronDecoderLayer,
    NemotronLayerNorm1P,
    NemotronRotaryEmbedding,
)

from trt_minitron.archs import get_arch, register, registered, unregister
from trt_minitron.archs.base import TransformersModules, copy, fused_qkv, split_rows
from trt_minitron.archs.config import ModelConfig
from trt_minitron.archs.nemotron import Nemotron
from trt_minitron.checkpoints.trtllm import read_checkpoint
from trt_minitron.cli import main
from trt_minitron.errors import ConfigError
from trt_minitron.export.run import ExportOptions, run_export


class BiasedNemotronForCausalLM(NemotronForCausalLM):
    """transformers' Nemotron under this architecture's name (save_pretrained writes the class name)."""


_BIASES = {  # TensorRT-LLM bias -> its rule, placed after the weight of the same linear
    "attention.qkv.weight": ("attention.qkv.bias", fused_qkv("self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                                              "self_attn.v_proj.bias")),
    "attention.dense.weight": ("attention.dense.bias", copy("self_attn.o_proj.bias")),  # RowLinear: whole, per rank
    "mlp.fc.weight": ("mlp.fc.bias", split_rows("mlp.up_proj.bias")),
    "mlp.proj.weight": ("mlp.proj.bias", copy("mlp.down_proj.bias")),
}


class BiasedNemotron(Nemotron):
    hf_architecture = "BiasedNemotronForCausalLM"
    model_type = "nemotron"  # transformers' Auto classes load it as a Nemotron, biases from the config's flags
    # A MODEL_MAP key of GPTForCausalLM that no registered arch claims (TensorRT-LLM loads by this key only).
    trt_architecture = "Starcoder2ForCausalLM"
    trt_aliases = ()
    gguf_architecture = None
    nemo_activations = ()
    nemo_normalization = None
    per_layer = {name: rule for trt, r in Nemotron.per_layer.items()
                 for name, rule in ((trt, r), *((_BIASES[trt],) if trt in _BIASES else ()))}

    def transformers_modules(self) -> TransformersModules:
        return TransformersModules(config=NemotronConfig, causal_lm=BiasedNemotronForCausalLM,
                                   decoder_layer=NemotronDecoderLayer, norm=NemotronLayerNorm1P,
                                   rotary=NemotronRotaryEmbedding)


NAME = BiasedNemotron.hf_architecture


@pytest.fixture(scope="module")
def arch():
    register(BiasedNemotron)
    try:
        yield get_arch(NAME)
    finally:
        unregister(BiasedNemotron)


@pytest.fixture(scope="module")
def models(arch, tmp_path_factory):
    root = tmp_path_factory.mktemp("biased")
    yield {NAME: registry_suite.make_tiny(arch, root / NAME)}
    shutil.rmtree(root, ignore_errors=True)


def _arch_tests():
    """test_registry's tests that it runs on every registered architecture."""
    return [f for name, f in vars(registry_suite).items() if name.startswith("test_")
            and any(m.name == "parametrize" and m.args[0] == "arch" for m in getattr(f, "pytestmark", []))]


@pytest.mark.parametrize("check", _arch_tests(), ids=lambda f: f.__name__)
def test_the_registry_suite_passes_on_it(check, arch, models, request):
    assert NAME in [a.hf_architecture for a in registered()]
    given = {"arch": arch, "models": models}
    check(**{p: given[p] if p in given else request.getfixturevalue(p) for p in inspect.signature(check).parameters})


def test_it_has_every_linear_bias_and_nemotron_none(arch, models):
    from safetensors import safe_open

    with safe_open(models[NAME] / "model.safetensors", "pt") as f:
        biases = sorted(n.split(".", 3)[3] for n in f.keys() if n.startswith("model.layers.0.") and "proj.bias" in n)
    assert biases == ["mlp.down_proj.bias", "mlp.up_proj.bias", "self_attn.k_proj.bias", "self_attn.o_proj.bias",
                      "self_attn.q_proj.bias", "self_attn.v_proj.bias"]
    cfg = registry_suite.tiny_config(arch)
    assert (cfg.to_hf()["attention_bias"], cfg.to_hf()["mlp_bias"]) == (True, True)
    assert arch.trt_config(cfg, "float32", _mapping(1))["bias"] is True
    nemotron = get_arch("NemotronForCausalLM")
    assert nemotron.trt_config(registry_suite.tiny_config(nemotron), "float32", _mapping(1))["bias"] is False


def _mapping(tp: int):
    from trt_minitron.tensors.mapping import Mapping

    return Mapping(tp_size=tp, pp_size=1)


@pytest.mark.parametrize("tp", [1, 2])
def test_export_tp_verifies_and_every_rank_loads_in_the_fake(tp, arch, models, tmp_path, fake_trtllm_path):
    src, out = models[NAME], tmp_path / f"tp{tp}"
    run_export(ExportOptions(src=str(src), output=out, dtype="float32", tp=tp))
    raw = json.loads((out / "config.json").read_text())
    assert (raw["architecture"], raw["bias"], raw["gpt_variant"]) == ("Starcoder2ForCausalLM", True, "nemotron")
    assert read_checkpoint(out).model.architecture == NAME
    rank = load_file(out / f"rank{tp - 1}.safetensors")
    hf = load_file(src / "model.safetensors")
    per = 96 // tp  # intermediate_size split by rank; RowLinear biases are whole on every rank
    assert torch.equal(rank["transformer.layers.1.mlp.fc.bias"], hf["model.layers.1.mlp.up_proj.bias"][-per:])
    assert torch.equal(rank["transformer.layers.1.attention.dense.bias"], hf["model.layers.1.self_attn.o_proj.bias"])
    assert torch.equal(rank["transformer.layers.1.mlp.proj.bias"], hf["model.layers.1.mlp.down_proj.bias"])
    q = 4 // tp * 24  # this rank's query heads; with kv heads 2 and tp <= 2 each rank has 2 // tp kv heads
    kv = 2 // tp * 24
    want_qkv = torch.cat([hf[f"model.layers.1.self_attn.{p}_proj.bias"][-n:] for p, n in (("q", q), ("k", kv), ("v", kv))])
    assert torch.equal(rank["transformer.layers.1.attention.qkv.bias"], want_qkv)
    trt = importlib.import_module("tensorrt_llm")
    config = trt.PretrainedConfig.from_json_file(str(out / "config.json"))
    for r in range(tp):  # the fake GPT model's tree (bias=true: every linear has one) takes each rank file exactly
        trt.MODEL_MAP[config.architecture].from_checkpoint(str(out), rank=r, config=config)
    assert main(["verify", str(out), "--reference", str(src)]) == 0


@pytest.mark.parametrize("bias", ["attention.qkv.bias", "attention.dense.bias", "mlp.fc.bias", "mlp.proj.bias"])
def test_verify_fails_when_a_bias_is_wrong(bias, arch, models, tmp_path, capsys):
    """The reference model adds each bias: one perturbed on one rank is caught, so verify is not vacuous here."""
    src, out = models[NAME], tmp_path / "ckpt"
    run_export(ExportOptions(src=str(src), output=out, dtype="float32", tp=2))
    path = out / "rank0.safetensors"
    tensors = load_file(path)
    tensors[f"transformer.layers.2.{bias}"] = tensors[f"transformer.layers.2.{bias}"] + 0.5
    if bias in ("attention.dense.bias", "mlp.proj.bias"):  # replicated: both ranks, or the read-back refuses
        other = load_file(out / "rank1.safetensors")
        other[f"transformer.layers.2.{bias}"] = tensors[f"transformer.layers.2.{bias}"]
        save_file(other, out / "rank1.safetensors", metadata={"format": "pt"})
    save_file(tensors, path, metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["verify", str(out), "--reference", str(src)]) != 0
    stage = bias.split(".")[0]
    assert f"first divergence: layer 2 {stage}" in capsys.readouterr().out


def test_format_hf_output_exports_and_verifies_again(arch, models, tmp_path):
    src, hf, out = models[NAME], tmp_path / "hf", tmp_path / "ckpt"
    assert main(["export", str(src), "--output", str(hf), "--format", "hf", "--dtype", "float32"]) == 0
    stated = json.loads((hf / "config.json").read_text())
    assert (stated["architectures"], stated["attention_bias"], stated["mlp_bias"]) == ([NAME], True, True)
    assert ModelConfig.from_hf_file(hf / "config.json").architecture == NAME
    assert main(["export", str(hf), "--output", str(out), "--dtype", "float32", "--tp", "2"]) == 0
    assert main(["verify", str(out), "--reference", str(src)]) == 0


def test_its_biases_under_nemotron_are_named_in_one_refusal(arch, models, tmp_path, capsys):
    """The same tensors with a config that says plain Nemotron: the source check names the biases."""
    folder = tmp_path / "said-nemotron"
    shutil.copytree(models[NAME], folder)
    stated = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**stated, "architectures": ["NemotronForCausalLM"],
                                                    "attention_bias": False, "mlp_bias": False}))
    msg = user_error(capsys, "export", folder, "--output", tmp_path / "out")
    assert msg.startswith(f"Hugging Face folder {folder}: biases a NemotronForCausalLM does not have: "
                          "['model.layers.0.mlp.down_proj.bias'")
    assert not (tmp_path / "out").exists()


def test_its_config_flags_are_held_to_its_biases(arch):
    hf = registry_suite.tiny_config(arch).to_hf()
    with pytest.raises(ConfigError, match=r"^mlp_bias=false in c.json is not supported: BiasedNemotronForCausalLM "
                                          r"has biases on mlp.fc, mlp.proj$"):
        ModelConfig.from_hf({**hf, "mlp_bias": False}, "c.json")
    with pytest.raises(ConfigError, match=r"^attention_bias=true in c.json is not supported: NemotronForCausalLM has "
                                          r"attention.qkv, attention.dense without biases$"):
        ModelConfig.from_hf({**hf, "architectures": ["NemotronForCausalLM"], "mlp_bias": False}, "c.json")


def test_qkv_only_biases_on_the_gpt_class_fail_at_import():
    """Qwen2-style biases (q/k/v only) on GPTForCausalLM: its one `bias` field cannot state them."""
    with pytest.raises(TypeError, match=r"the flag bias covers \['attention.dense', 'attention.qkv', 'mlp.fc', "
                                        r"'mlp.proj'\], which must all have biases or none"):
        @register
        class QkvBiased(BiasedNemotron):
            hf_architecture = "QkvBiasedForCausalLM"
            model_type = "qkv_biased"
            trt_architecture = "GPT2LMHeadModel"
            per_layer = {**Nemotron.per_layer, "attention.qkv.bias": _BIASES["attention.qkv.weight"][1]}
    assert "QkvBiasedForCausalLM" not in [a.hf_architecture for a in registered()]
