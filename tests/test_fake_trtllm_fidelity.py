"""The fake tensorrt_llm (tests/fakes) must refuse what the real 1.2 API refuses, and its module trees must agree
with what trt-minitron exports. These tests check the fake and the exporter against the real models' parameter
trees (as transcribed in tests/fakes/tensorrt_llm/models); they build no engine."""

import importlib
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from test_build import NEMOTRON_TINY, TINY, write_checkpoint
from tiny import make_tiny_llama, make_tiny_nemotron

import trt_minitron.build.run as b
from trt_minitron.build.api import make_build_config
from trt_minitron.errors import ConfigError, MissingDependencyError
from trt_minitron.export.run import ExportOptions, run_export


@pytest.fixture
def trt(fake_trtllm_path):
    return importlib.import_module("tensorrt_llm")


def load_rank(trt, ckpt: Path, rank: int):
    config = trt.PretrainedConfig.from_json_file(str(ckpt / "config.json"))
    return trt.MODEL_MAP[config.architecture].from_checkpoint(str(ckpt), rank=rank, config=config)


# --- BuildConfig / PluginConfig: pydantic models with the 1.2 constructor -----------------------------------------

def test_build_config_is_a_pydantic_model_built_by_keyword(trt):
    from tensorrt_llm.llmapi.kv_cache_type import KVCacheType

    bc = trt.BuildConfig(max_seq_len=512, kv_cache_type=KVCacheType.PAGED,
                         plugin_config=trt.PluginConfig(gemm_plugin="auto", paged_kv_cache=True))
    assert bc.max_seq_len == 512 and bc.max_batch_size == 2048 and bc.kv_cache_type is KVCacheType.PAGED
    assert not hasattr(trt.BuildConfig, "from_dict")  # the dataclass-era classmethod is gone in the fake


@pytest.mark.parametrize("kwargs", [{"max_output_len": 100},  # removed in 0.12
                                    {"auto_parallel_config": {}},  # gone in the 1.2 builder
                                    {"max_batch_size": "many"}])
def test_fake_build_config_rejects_unknown_key_or_bad_value(trt, kwargs):
    with pytest.raises(ValidationError):
        trt.BuildConfig(**kwargs)


def test_fake_plugin_config_validation(trt):
    with pytest.raises(ValidationError):
        trt.PluginConfig(enable_context_fmha=True)  # unknown field (the real model would drop it silently)
    with pytest.raises(ValidationError):
        trt.PluginConfig(gemm_plugin="int8")  # not a DefaultPluginDtype
    with pytest.raises(ValidationError):
        trt.PluginConfig(dtype="auto")
    pc = trt.PluginConfig(gpt_attention_plugin="auto", gemm_plugin="disable", context_fmha="enable")
    assert pc.gemm_plugin is None and pc.context_fmha is True
    pc.dtype = "float32"
    assert pc.gpt_attention_plugin == "float32"  # "auto" reads back as the model dtype
    with pytest.raises(ValidationError):
        pc.tokens_per_block = "many"  # validate_assignment


def test_make_build_config_names_an_unknown_field_before_tensorrt_llm_sees_it(trt):
    settings = b.build_settings(b.BuildOptions(checkpoint=Path(".")), "bfloat16")
    assert make_build_config(settings).max_seq_len == 2048
    with pytest.raises(MissingDependencyError, match=r"BuildConfig has no field\(s\) \['max_output_len'\]"):
        make_build_config({**settings, "max_output_len": 100})
    bad_plugin = {**settings, "plugin_config": {**settings["plugin_config"], "use_custom_all_reduce": True}}
    with pytest.raises(MissingDependencyError, match="PluginConfig has no field"):
        make_build_config(bad_plugin)
    with pytest.raises(ConfigError, match="tensorrt_llm refused the build settings: max_batch_size"):
        make_build_config({**settings, "max_batch_size": "many"})


def test_legacy_dataclass_build_config_goes_through_from_dict(trt, monkeypatch):
    from tensorrt_llm._legacy_builder import LegacyBuildConfig

    monkeypatch.setattr(trt.builder, "BuildConfig", LegacyBuildConfig)
    settings = b.build_settings(b.BuildOptions(checkpoint=Path(".")), "float32")
    bc = make_build_config(settings)
    assert isinstance(bc, LegacyBuildConfig) and bc.kv_cache_type.name == "PAGED"
    assert bc.plugin_config.gpt_attention_plugin == "float16"  # "auto" before build() sets the model dtype
    assert [n for n, _ in trt.CALLS if n.startswith("BuildConfig")] == ["BuildConfig.from_dict"]
    with pytest.raises(KeyError):  # older from_dict pops the sizes without defaults
        LegacyBuildConfig.from_dict({k: v for k, v in settings.items() if k != "opt_num_tokens"})


# --- from_checkpoint: names and shapes against the real module trees ----------------------------------------------

@pytest.mark.parametrize("fields", [TINY, NEMOTRON_TINY], ids=["llama", "nemotron"])
@pytest.mark.parametrize("tp, pp", [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2)])
def test_exported_rank_files_match_the_real_module_tree(tmp_path, trt, fields, tp, pp):
    """tp 4 > 2 KV heads (repeated KV head), vocab 250 padded to 252 for lm_head at tp 4, pp with local layer names."""
    ckpt = write_checkpoint(tmp_path / "ckpt", fields, tp=tp, pp=pp)
    for rank in range(tp * pp):
        model = load_rank(trt, ckpt, rank)
        assert set(model.expected_tensors()) == set(load_file(str(ckpt / f"rank{rank}.safetensors")))
    expected = load_rank(trt, ckpt, tp * pp - 1).expected_tensors()  # last stage holds lm_head
    assert expected["lm_head.weight"] == (-(-250 // tp), 64)
    heads, kv = 4 // tp, -(-2 // tp)
    assert expected["transformer.layers.0.attention.qkv.weight"] == ((heads + 2 * kv) * 24, 64)
    assert expected["transformer.layers.0.attention.dense.weight"] == (64, heads * 24 // 1)
    if fields is NEMOTRON_TINY:
        assert "transformer.layers.0.mlp.gate.weight" not in expected
        assert "transformer.layers.0.input_layernorm.bias" in expected and "transformer.ln_f.bias" in expected
        assert "transformer.layers.0.attention.qkv.bias" not in expected  # bias: false in the config
    else:
        assert expected["transformer.layers.0.mlp.gate.weight"] == (96 // tp, 64)
        assert "transformer.ln_f.bias" not in expected  # RmsNorm


@pytest.mark.parametrize("make, arch", [(make_tiny_llama, "LLaMAForCausalLM"),
                                        (make_tiny_nemotron, "GPTForCausalLM")])
def test_real_export_at_tp2_pp2_loads_in_the_fake_models(tmp_path, trt, make, arch):
    hf = make(tmp_path / "hf")
    run_export(ExportOptions(src=str(hf), output=tmp_path / "ckpt", dtype="float32", tp=2, pp=2))
    for rank in range(4):
        assert type(load_rank(trt, tmp_path / "ckpt", rank)).__name__ == arch


def _rewrite(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_fake_rejects_a_misnamed_tensor(tmp_path, trt):
    ckpt = write_checkpoint(tmp_path / "ckpt", NEMOTRON_TINY)
    _rewrite(ckpt / "rank0.safetensors",
             lambda t: t.__setitem__("transformer.layers.1.mlp.up.weight", t.pop("transformer.layers.1.mlp.fc.weight")))
    with pytest.raises(RuntimeError, match=r"Required but not provided tensors:\{'transformer.layers.1.mlp.fc.weight'"):
        load_rank(trt, ckpt, 0)


def test_fake_rejects_a_gate_in_a_squared_relu_mlp(tmp_path, trt):
    ckpt = write_checkpoint(tmp_path / "ckpt", NEMOTRON_TINY)
    _rewrite(ckpt / "rank0.safetensors",
             lambda t: t.__setitem__("transformer.layers.0.mlp.gate.weight", torch.zeros(96, 64, dtype=torch.bfloat16)))
    with pytest.raises(RuntimeError, match="Provided but not required tensors.*mlp.gate"):
        load_rank(trt, ckpt, 0)


def test_fake_rejects_a_wrong_shape(tmp_path, trt):
    ckpt = write_checkpoint(tmp_path / "ckpt", TINY, tp=2)
    _rewrite(ckpt / "rank1.safetensors", lambda t: t.__setitem__("lm_head.weight", torch.zeros(126, 64, dtype=torch.bfloat16)))
    with pytest.raises(RuntimeError, match=r"Updated: \(126, 64\), original: \(125, 64\)' for parameter 'lm_head.weight'"):
        load_rank(trt, ckpt, 1)


def test_fake_demands_linear_biases_when_the_gpt_config_omits_bias(tmp_path, trt):
    """GPTConfig.bias defaults to True: a Nemotron config.json without "bias": false needs qkv/dense/fc/proj biases."""
    import json

    ckpt = write_checkpoint(tmp_path / "ckpt", NEMOTRON_TINY)
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["bias"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="Required but not provided tensors.*attention.qkv.bias"):
        load_rank(trt, ckpt, 0)
