"""MistralForCausalLM (Mistral-NeMo-Minitron-8B): a tiny random model made with transformers (GQA, head_dim != hidden
/ heads) through export tp 2 -> verify and --format hf, the real model's widths planned, a sliding window refused."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from cli_checks import user_error

from trt_minitron.archs import get_arch
from trt_minitron.archs.config import ModelConfig
from trt_minitron.checkpoints.trtllm import read_checkpoint
from trt_minitron.cli import main
from trt_minitron.export.run import plan_export
from trt_minitron.tensors.info import TensorInfo
from trt_minitron.tensors.mapping import Mapping

# nvidia/Mistral-NeMo-Minitron-8B-Base: the widths of the model card's config.json.
MINITRON_8B = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "num_hidden_layers": 40,
               "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
               "intermediate_size": 11520, "vocab_size": 131072, "rope_theta": 1000000.0, "sliding_window": None,
               "tie_word_embeddings": False, "hidden_act": "silu", "rms_norm_eps": 1e-5,
               "max_position_embeddings": 8192, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}


def make_tiny_mistral(path, seed=0, **overrides):
    from transformers import MistralConfig, MistralForCausalLM

    kw = dict(vocab_size=250, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=1e6, sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = MistralForCausalLM(MistralConfig(**{**kw, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.2)
            if "norm" in name:
                p.add_(1.0)  # RMSNorm gammas around 1, random
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistral")
    yield make_tiny_mistral(root / "hf")
    shutil.rmtree(root, ignore_errors=True)


def test_export_tp2_is_tensorrt_llm_llama_and_verifies(hf, tmp_path):
    out = tmp_path / "ckpt"
    assert main(["export", str(hf), "--output", str(out), "--tp", "2", "--dtype", "float32"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    # LLaMAConfig.from_hugging_face: architecture = hf_config.architectures[0] (MODEL_MAP -> LLaMAForCausalLM)
    assert (cfg["architecture"], cfg["head_size"], cfg["num_key_value_heads"]) == ("MistralForCausalLM", 24, 2)
    assert (cfg["hidden_act"], cfg["rotary_base"], cfg["mapping"]["tp_size"]) == ("silu", 1e6, 2)
    back = read_checkpoint(out).model  # read back as Mistral, not Llama: --format hf and verify need it
    assert (back.architecture, back.head_dim, back.num_key_value_heads, back.rope_theta) == (
        "MistralForCausalLM", 24, 2, 1e6)
    assert main(["verify", str(out), "--reference", str(hf)]) == 0


def test_export_pp2_verifies(hf, tmp_path):
    out = tmp_path / "ckpt"
    assert main(["export", str(hf), "--output", str(out), "--pp", "2", "--tp", "2", "--dtype", "bfloat16"]) == 0
    assert main(["verify", str(out), "--reference", str(hf)]) == 0


def test_format_hf_round_trips(hf, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    assert main(["export", str(hf), "--output", str(out), "--format", "hf", "--dtype", "float32"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model_type"], cfg["architectures"], cfg["head_dim"]) == ("mistral", ["MistralForCausalLM"], 24)
    assert "sliding_window" in cfg and cfg["sliding_window"] is None  # MistralConfig's default would be 4096
    ids = torch.tensor([[1, 17, 99, 3, 245, 8, 2]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(hf)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.equal(got, want)


def test_a_sliding_window_is_refused_in_one_line(tmp_path, capsys):
    src = make_tiny_mistral(tmp_path / "hf", num_hidden_layers=2, sliding_window=16)
    out = tmp_path / "ckpt"
    msg = user_error(capsys, "export", src, "--output", out)
    assert msg == (f"sliding_window=16 in {src / 'config.json'} is not supported: the export would attend to the "
                   "whole context (Mistral-NeMo-Minitron states null)")
    assert not out.exists()


def test_minitron_8b_widths_plan_at_tp2_pp2():
    cfg = ModelConfig.from_hf(MINITRON_8B)
    assert (cfg.architecture, cfg.head_dim, cfg.rotary_dim, cfg.rope_theta) == ("MistralForCausalLM", 128, 128, 1e6)
    infos = {n: TensorInfo(s, torch.bfloat16) for n, s in get_arch(cfg.architecture).hf_tensors(cfg).items()}
    source = SimpleNamespace(config=cfg, tensors=lambda: infos, description="Minitron-8B shapes")
    _, trt, planned = plan_export(source, Mapping(tp_size=2, pp_size=2), "bfloat16")
    assert (trt["architecture"], trt["head_size"], trt["rotary_base"]) == ("MistralForCausalLM", 128, 1e6)
    shapes = {(p.rank, p.name): p.info.shape for p in planned}
    assert shapes[0, "transformer.layers.0.attention.qkv.weight"] == ((16 + 2 * 4) * 128, 4096)
    assert shapes[0, "transformer.layers.0.attention.dense.weight"] == (4096, 16 * 128)
    assert shapes[1, "transformer.layers.19.mlp.gate.weight"] == (5760, 4096)
    assert shapes[3, "lm_head.weight"] == (65536, 4096) and (2, "lm_head.weight") in shapes
    assert (0, "transformer.layers.20.attention.qkv.weight") not in shapes  # pp 2: 20 layers a stage
