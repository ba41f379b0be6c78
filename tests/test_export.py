"""export -> verify on tiny random models whose shapes catch layout bugs, plus tensors checked by hand."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import make_tiny_llama, make_tiny_nemotron

from trt_minitron.archs.base import copy, fused_qkv, split_rows
from trt_minitron.archs.llama import Llama
from trt_minitron.archs.nemotron import Nemotron
from trt_minitron.cli import main
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.run import run_verify

LAYOUTS = [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2)]  # tiny models: 4 heads, 2 kv heads, 4 layers


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "llama": make_tiny_llama(root / "llama"),
        "llama_tied": make_tiny_llama(root / "llama_tied", seed=1, tie_word_embeddings=True),
        "nemotron": make_tiny_nemotron(root / "nemotron"),
    }


def export(src, out, **kw):
    return run_export(ExportOptions(src=str(src), output=out, **{"dtype": "float32", **kw}))


@pytest.mark.parametrize("tp, pp", LAYOUTS)
@pytest.mark.parametrize("name", ["llama", "llama_tied", "nemotron"])
def test_export_then_verify_passes(models, tmp_path, name, tp, pp):
    out = tmp_path / "ckpt"
    export(models[name], out, tp=tp, pp=pp)
    assert sorted(p.name for p in out.glob("rank*.safetensors")) == sorted(
        f"rank{r}.safetensors" for r in range(tp * pp))
    result = run_verify(VerifyOptions(checkpoint=out, reference=models[name]))
    assert result.ok, result.summary()
    assert result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0


def hf_tensors(folder):
    return load_file(folder / "model.safetensors")


def test_nemotron_tp2_tensors_match_hand_computed_layout(models, tmp_path):
    export(models["nemotron"], tmp_path / "c", tp=2)
    hf = hf_tensors(models["nemotron"])
    d, p = 24, "model.layers.1."
    for r in range(2):
        got = load_file(tmp_path / "c" / f"rank{r}.safetensors")
        t = "transformer.layers.1."
        # 4 query heads and 2 kv heads over 2 ranks: 2 query heads and 1 kv head each
        want_qkv = torch.cat([hf[p + "self_attn.q_proj.weight"][r * 2 * d:(r + 1) * 2 * d],
                              hf[p + "self_attn.k_proj.weight"][r * d:(r + 1) * d],
                              hf[p + "self_attn.v_proj.weight"][r * d:(r + 1) * d]])
        assert torch.equal(got[t + "attention.qkv.weight"], want_qkv)
        assert torch.equal(got[t + "attention.dense.weight"], hf[p + "self_attn.o_proj.weight"][:, r * 48:(r + 1) * 48])
        assert torch.equal(got[t + "mlp.fc.weight"], hf[p + "mlp.up_proj.weight"][r * 48:(r + 1) * 48])
        assert torch.equal(got[t + "mlp.proj.weight"], hf[p + "mlp.down_proj.weight"][:, r * 48:(r + 1) * 48])
        assert torch.equal(got[t + "input_layernorm.weight"], hf[p + "input_layernorm.weight"] + 1.0)
        assert torch.equal(got[t + "input_layernorm.bias"], hf[p + "input_layernorm.bias"])
        assert torch.equal(got[t + "post_layernorm.weight"], hf[p + "post_attention_layernorm.weight"] + 1.0)
        assert torch.equal(got["transformer.ln_f.weight"], hf["model.norm.weight"] + 1.0)
        assert not torch.equal(hf[p + "input_layernorm.weight"], torch.zeros(64))  # the +1 is observable
        assert "mlp.gate.weight" not in {k.split("layers.1.")[-1] for k in got}


def test_llama_tp4_repeats_kv_heads_and_pads_vocab(models, tmp_path):
    export(models["llama"], tmp_path / "c", tp=4)
    hf = hf_tensors(models["llama"])
    d, p = 24, "model.layers.0."
    for r in range(4):
        got = load_file(tmp_path / "c" / f"rank{r}.safetensors")
        qkv = got["transformer.layers.0.attention.qkv.weight"]
        assert qkv.shape == (3 * d, 64)  # 1 query head + 1 (repeated) kv head per rank
        kv_head = r // 2  # 2 kv heads over 4 ranks: each repeated twice, consecutively
        assert torch.equal(qkv[d:2 * d], hf[p + "self_attn.k_proj.weight"][kv_head * d:(kv_head + 1) * d])
        assert torch.equal(qkv[2 * d:], hf[p + "self_attn.v_proj.weight"][kv_head * d:(kv_head + 1) * d])
        assert torch.equal(got["transformer.layers.0.mlp.fc.weight"], hf[p + "mlp.gate_proj.weight"][r * 24:(r + 1) * 24])
        assert torch.equal(got["transformer.layers.0.mlp.gate.weight"], hf[p + "mlp.up_proj.weight"][r * 24:(r + 1) * 24])
        head = got["lm_head.weight"]
        assert head.shape == (63, 64)  # vocab 250 padded to 252 = 4 x 63
        rows = hf["lm_head.weight"][r * 63:(r + 1) * 63]
        assert torch.equal(head[: len(rows)], rows)
        assert torch.count_nonzero(head[len(rows):]) == 0
    assert load_file(tmp_path / "c" / "rank3.safetensors")["lm_head.weight"][61:].abs().sum() == 0


def test_pipeline_parallel_splits_layers_embedding_and_head(models, tmp_path):
    export(models["nemotron"], tmp_path / "c", pp=2)
    first = load_file(tmp_path / "c" / "rank0.safetensors")
    last = load_file(tmp_path / "c" / "rank1.safetensors")
    hf = hf_tensors(models["nemotron"])
    assert "transformer.vocab_embedding.weight" in first and "lm_head.weight" not in first
    assert "transformer.ln_f.weight" in last and "transformer.vocab_embedding.weight" not in last
    # stage 1 holds global layers 2 and 3 under local indices 0 and 1
    assert torch.equal(last["transformer.layers.0.mlp.fc.weight"], hf["model.layers.2.mlp.up_proj.weight"])
    assert not any(k.startswith("transformer.layers.2.") for k in last)


def test_golden_names_and_trtllm_config(models, tmp_path):
    export(models["nemotron"], tmp_path / "c", dtype="bfloat16")
    names = set(load_file(tmp_path / "c" / "rank0.safetensors"))
    per_layer = {"input_layernorm.weight", "input_layernorm.bias", "attention.qkv.weight", "attention.dense.weight",
                 "post_layernorm.weight", "post_layernorm.bias", "mlp.fc.weight", "mlp.proj.weight"}
    assert names == {f"transformer.layers.{i}.{n}" for i in range(4) for n in per_layer} | {
        "transformer.vocab_embedding.weight", "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"}
    assert all(t.dtype == torch.bfloat16 for t in load_file(tmp_path / "c" / "rank0.safetensors").values())
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    # Field names of GPTConfig.__init__/to_dict, NVIDIA/TensorRT-LLM tensorrt_llm/models/gpt/config.py
    # @6b25e1e0477152ec02207a906a1175a71b4bb418, and PretrainedConfig (models/modeling_utils.py).
    assert cfg["architecture"] == "GPTForCausalLM"
    assert cfg["head_size"] == 24 and cfg["hidden_size"] // cfg["num_attention_heads"] == 16
    assert (cfg["hidden_act"], cfg["rotary_pct"], cfg["bias"], cfg["position_embedding_type"]) == (
        "squared-relu", 0.5, False, "rope_gpt_neox")
    assert cfg["mapping"] == {"world_size": 1, "tp_size": 1, "pp_size": 1}
    assert cfg["quantization"] == {"quant_algo": None, "kv_cache_quant_algo": None}
    gpt_fields = {"gpt_variant", "bias", "q_scaling", "embedding_scale", "apply_query_key_layer_scaling",
                  "rotary_pct", "rotary_base", "rotary_scaling", "inner_layernorm", "norm_before_bmm1"}
    base_fields = {"architecture", "dtype", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "head_size", "intermediate_size", "hidden_act", "norm_epsilon",
                   "position_embedding_type", "max_position_embeddings", "mapping", "quantization", "logits_dtype",
                   "use_parallel_embedding", "embedding_sharding_dim"}
    assert gpt_fields | base_fields <= set(cfg)


def test_llama3_rope_config_has_type_and_rope_type(models, tmp_path):
    export(models["llama"], tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    # LLaMAConfig fields, tensorrt_llm/models/llama/config.py @89fd9b74ab7ae753b4c6b3db25a400dca7ea54a0
    assert cfg["architecture"] == "LlamaForCausalLM" and cfg["hidden_act"] == "silu"
    assert {"mlp_bias", "attn_bias", "rotary_base", "rotary_scaling", "residual_mlp"} <= set(cfg)
    assert cfg["rotary_scaling"] == {"type": "llama3", "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


@pytest.mark.parametrize("name, arch, key, rule", [
    ("llama", Llama, "mlp.fc.weight", split_rows("mlp.up_proj.weight")),  # fc/gate swapped
    ("nemotron", Nemotron, "input_layernorm.weight", copy("input_layernorm.weight")),  # +1 dropped
    ("llama", Llama, "attention.qkv.weight",
     fused_qkv("self_attn.q_proj.weight", "self_attn.v_proj.weight", "self_attn.k_proj.weight")),  # K and V swapped
    ("nemotron", Nemotron, "attention.qkv.weight",
     fused_qkv("self_attn.q_proj.weight", "self_attn.v_proj.weight", "self_attn.k_proj.weight")),
])
def test_planted_layout_bug_makes_verify_fail(models, tmp_path, monkeypatch, capsys, name, arch, key, rule):
    monkeypatch.setitem(arch.per_layer, key, rule)
    if key == "mlp.fc.weight":
        monkeypatch.setitem(arch.per_layer, "mlp.gate.weight", split_rows("mlp.gate_proj.weight"))
    export(models[name], tmp_path / "bad", tp=2)
    monkeypatch.undo()
    assert main(["verify", str(tmp_path / "bad"), "--reference", str(models[name])]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_tp_not_dividing_heads_is_one_clear_line(models, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["export", str(models["nemotron"]), "--output", str(out), "--tp", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "trt-minitron: error: num_attention_heads=4 is not divisible by tp_size=3"
    assert not out.exists() and not list(tmp_path.iterdir())


def test_existing_output_is_refused_unless_overwrite(models, tmp_path, capsys):
    out = tmp_path / "c"
    export(models["llama"], out)  # an earlier export: recognisably ours (test_output_folders.py: everything else)
    assert main(["export", str(models["llama"]), "--output", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(models["nemotron"]), "--output", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["architecture"] == "GPTForCausalLM"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_bad_source_leaves_nothing_behind(models, tmp_path, capsys):
    src = tmp_path / "broken"
    src.mkdir()
    (src / "config.json").write_text((models["llama"] / "config.json").read_text())
    weights = hf_tensors(models["llama"])
    del weights["model.layers.2.mlp.down_proj.weight"]
    save_file(weights, src / "model.safetensors")
    out = tmp_path / "out"
    assert main(["export", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing tensors ['model.layers.2.mlp.down_proj.weight']" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_shape_contradicting_config_is_refused(models, tmp_path, capsys):
    src = tmp_path / "wrong"
    src.mkdir()
    cfg = json.loads((models["nemotron"] / "config.json").read_text())
    cfg["head_dim"] = 16  # hidden/heads: what a converter that derives head_dim would assume
    (src / "config.json").write_text(json.dumps(cfg))
    save_file(hf_tensors(models["nemotron"]), src / "model.safetensors")
    assert main(["export", str(src), "--output", str(tmp_path / "o")]) == 2
    assert "q_proj.weight has shape [96, 64], but the config implies [64, 64]" in capsys.readouterr().err


def test_sharded_safetensors_and_bin_sources_export_identically(models, tmp_path):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(models["llama"])
    model.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((models["llama"] / "config.json").read_text())
    torch.save(hf_tensors(models["llama"]), tmp_path / "bin" / "pytorch_model.bin")
    for name in ("ref", "sharded", "bin"):
        export(models["llama"] if name == "ref" else tmp_path / name, tmp_path / f"out-{name}", tp=2)
    for r in range(2):
        ref = load_file(tmp_path / "out-ref" / f"rank{r}.safetensors")
        for name in ("sharded", "bin"):
            other = load_file(tmp_path / f"out-{name}" / f"rank{r}.safetensors")
            assert ref.keys() == other.keys() and all(torch.equal(ref[k], other[k]) for k in ref)


def test_dry_run_prints_plan_and_writes_nothing(models, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["export", str(models["llama"]), "--output", str(out), "--tp", "2", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert '"head_size": 24' in text
    # 2 query heads + 1 k + 1 v head of 24 per rank
    assert "rank1  transformer.layers.3.attention.qkv.weight" in text and "[96, 64]" in text
    assert not out.exists()


def test_passthrough_copy_without_copy_file_range_is_identical(models, tmp_path, monkeypatch):
    # Same-dtype tensors stream file to file (copy_file_range); the user-space fallback must match it.
    export(models["llama"], tmp_path / "kernel", tp=2)
    monkeypatch.delattr("os.copy_file_range", raising=False)
    export(models["llama"], tmp_path / "user", tp=2)
    for r in range(2):
        name = f"rank{r}.safetensors"
        assert (tmp_path / "kernel" / name).read_bytes() == (tmp_path / "user" / name).read_bytes()


def test_hub_id_offline_is_one_clear_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache: nothing to fall back on
    out = tmp_path / "c"
    assert main(["export", "nvidia/Minitron-4B-Base", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trt-minitron: error: cannot download 'nvidia/Minitron-4B-Base'") and err.count("\n") == 1
    assert not out.exists()


def test_unknown_file_is_one_clear_line(tmp_path, capsys):
    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["export", str(bogus), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("unsupported file; expected a folder, a .nemo (tar) or a .gguf file")
