""".nemo reader: every layout yields the HF tensors of the model it was built from, exactly."""

import json
import tarfile

import pytest
import torch
import yaml
from nemo_fixtures import SP_NAME, build_nemo, cast_hf, hf_model, merge_qkv, sentencepiece_model
from tiny import make_tiny_llama, make_tiny_nemotron

from trt_minitron.archs import hf_tensor_shapes
from trt_minitron.errors import CheckpointError, ConfigError
from trt_minitron.sources import open_source
from trt_minitron.sources.nemo import is_nemo, open_nemo
from trt_minitron.sources.nemo.config import parse_model_config
from trt_minitron.sources.nemo.source import split_qkv
from trt_minitron.sources.nemo.zarr import ZarrStore

# (layout, tp, pp, archive): every weight layout, every container form
CASES = [
    ("zarr", 1, 1, "tar"), ("torch_dist", 1, 1, "tar"), ("ckpt", 1, 1, "tar"),
    ("mp_rank", 2, 1, "tar"), ("tp_pp", 2, 2, "tar"),
    ("zarr", 1, 1, "folder"), ("torch_dist", 1, 1, "tar.gz"), ("mp_rank", 2, 1, "folder"),
]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        "nemotron": make_tiny_nemotron(root / "nemotron"),
        "llama": make_tiny_llama(root / "llama"),
        "llama_tied": make_tiny_llama(root / "llama_tied", seed=1, tie_word_embeddings=True),
    }


@pytest.mark.parametrize("layout, tp, pp, archive", CASES)
@pytest.mark.parametrize("name", ["nemotron", "llama", "llama_tied"])
def test_every_layout_reads_back_the_hf_tensors_exactly(hf, tmp_path, name, layout, tp, pp, archive):
    nemo = build_nemo(hf[name], tmp_path / "m.nemo", layout, tp=tp, pp=pp, archive=archive)
    _, ref = hf_model(hf[name])
    with_open = open_nemo(nemo, hf_tensor_shapes)
    try:
        infos = with_open.tensors()
        assert sorted(infos) == sorted(ref)
        for n, t in ref.items():
            assert infos[n].shape == tuple(t.shape) and infos[n].dtype == t.dtype, n
            assert torch.equal(with_open.read(n), t), n
        # slices come from the same view
        q = "model.layers.1.self_attn.q_proj.weight"
        assert torch.equal(with_open.read(q, 0, 24, 72), ref[q][24:72])
        assert torch.equal(with_open.read("model.embed_tokens.weight", 0, 240, 250), ref["model.embed_tokens.weight"][240:])
    finally:
        with_open.close()


def test_config_comes_from_model_config_yaml(hf, tmp_path):
    src = open_nemo(build_nemo(hf["nemotron"], tmp_path / "m.nemo", "zarr"), hf_tensor_shapes)
    ref = open_source(str(hf["nemotron"])).config
    c = src.config
    for f in ("architecture", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "norm_eps",
              "max_position_embeddings", "rope_theta", "partial_rotary_factor", "tie_word_embeddings"):
        assert getattr(c, f) == getattr(ref, f), f
    assert c.head_dim == 24 != c.hidden_size // c.num_attention_heads
    assert (c.bos_token_id, c.eos_token_id) == (1, 2)  # read from the SentencePiece model
    assert "zarr" in src.description
    llama = open_nemo(build_nemo(hf["llama"], tmp_path / "l.nemo", "ckpt"), hf_tensor_shapes).config
    assert llama.rope_scaling == open_source(str(hf["llama"])).config.rope_scaling
    assert llama.rope_scaling.rope_type == "llama3" and llama.rope_scaling.original_max_position_embeddings == 32


def test_vocab_padding_is_trimmed_to_the_tokenizer(hf, tmp_path):
    nemo = build_nemo(hf["nemotron"], tmp_path / "m", "zarr", archive="folder")
    arr = json.loads((nemo / "model_weights/model.embedding.word_embeddings.weight/.zarray").read_text())
    assert arr["shape"][0] == 256  # 250 padded to a multiple of 128
    src = open_nemo(nemo, hf_tensor_shapes)
    assert src.config.vocab_size == 250 and src.tensors()["model.embed_tokens.weight"].shape == (250, 64)
    assert src.read("lm_head.weight").shape == (250, 64)


def test_tokenizer_written_for_trtllm_and_transformers(hf, tmp_path):
    from transformers import AutoTokenizer

    src = open_nemo(build_nemo(hf["nemotron"], tmp_path / "m.nemo", "torch_dist"), hf_tensor_shapes)
    out = tmp_path / "tok"
    out.mkdir()
    assert src.write_tokenizer(out) == ["tokenizer.model", "tokenizer_config.json"]
    assert (out / "tokenizer.model").read_bytes() == sentencepiece_model(250)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(out)
    text = "hello world " + sp.id_to_piece(100).replace("\u2581", "")
    assert tok(text)["input_ids"] == [sp.bos_id()] + sp.encode(text)
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)


def test_torch_dist_metadata_with_megatron_classes_reads_without_megatron(hf, tmp_path):
    import sys

    nemo = build_nemo(hf["nemotron"], tmp_path / "m", "torch_dist", archive="folder")
    raw = (nemo / "model_weights/.metadata").read_bytes()
    assert b"megatron.core.dist_checkpointing.strategies.torch" in raw and b"MCoreMetadata" in raw
    assert "megatron" not in sys.modules
    src = open_nemo(nemo, hf_tensor_shapes)
    _, ref = hf_model(hf["nemotron"])
    assert torch.equal(src.read("model.layers.3.mlp.up_proj.weight"), ref["model.layers.3.mlp.up_proj.weight"])
    assert "megatron" not in sys.modules


def test_torch_dist_metadata_with_other_globals_is_refused(hf, tmp_path):
    import pickle

    nemo = build_nemo(hf["nemotron"], tmp_path / "m", "torch_dist", archive="folder")

    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    (nemo / "model_weights/.metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="builtins.eval is not allowed"):
        open_nemo(nemo, hf_tensor_shapes)


def test_reading_one_layer_reads_only_its_chunks(hf, tmp_path, monkeypatch):
    nemo = build_nemo(hf["nemotron"], tmp_path / "m", "zarr", archive="folder")
    src = open_nemo(nemo, hf_tensor_shapes)
    seen = []
    real = ZarrStore._chunk
    monkeypatch.setattr(ZarrStore, "_chunk", lambda self, key, a, coord: seen.append((key, coord)) or
                        real(self, key, a, coord))
    src.read("model.layers.2.mlp.down_proj.weight")
    assert seen == [("model.decoder.layers.mlp.linear_fc2.weight", (2, 0, 0))]
    seen.clear()
    for p in "qkv":  # the three projections share one read of the fused tensor (2 row chunks)
        src.read(f"model.layers.3.self_attn.{p}_proj.weight")
    assert seen == [("model.decoder.layers.self_attention.linear_qkv.weight", (3, r, 0)) for r in (0, 1)]


def test_bf16_zarr_and_torch_dist(hf, tmp_path):
    hf16 = cast_hf(hf["llama"], tmp_path / "hf16", torch.bfloat16)
    _, ref = hf_model(hf16)
    for layout in ("zarr", "torch_dist"):
        nemo = build_nemo(hf16, tmp_path / f"{layout}.nemo", layout)
        src = open_nemo(nemo, hf_tensor_shapes)
        assert src.config.torch_dtype == "bfloat16"
        for n, t in ref.items():
            assert t.dtype == torch.bfloat16 and torch.equal(src.read(n), t), (layout, n)
    spec = json.loads(tarfile.open(tmp_path / "zarr.nemo").extractfile(
        "./model_weights/model.decoder.layers.mlp.linear_fc2.weight/.zarray").read())
    assert spec["dtype"] == "bfloat16"


def test_local_spec_layernorm_names(hf, tmp_path):
    nemo = build_nemo(hf["nemotron"], tmp_path / "m.nemo", "ckpt", te=False)
    _, ref = hf_model(hf["nemotron"])
    src = open_nemo(nemo, hf_tensor_shapes)
    for n in ("model.layers.0.input_layernorm.bias", "model.layers.3.post_attention_layernorm.weight"):
        assert torch.equal(src.read(n), ref[n])


def test_split_qkv_matches_megatron_group_order():
    # 4 query heads in 2 groups, head_dim 2, hidden 1: row label = which head it belongs to
    w = torch.tensor([[10.], [10.], [11.], [11.], [20.], [20.], [30.], [30.],   # group 0: q0 q1 k0 v0
                      [12.], [12.], [13.], [13.], [21.], [21.], [31.], [31.]])  # group 1: q2 q3 k1 v1
    parts = split_qkv(w, heads=4, groups=2, head_dim=2)
    assert parts["q"].flatten().tolist() == [10, 10, 11, 11, 12, 12, 13, 13]
    assert parts["k"].flatten().tolist() == [20, 20, 21, 21]
    assert parts["v"].flatten().tolist() == [30, 30, 31, 31]
    cfg = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 2, "hidden_size": 1}
    assert torch.equal(merge_qkv(parts["q"], parts["k"], parts["v"], cfg), w)


def test_is_nemo(hf, tmp_path):
    folder = build_nemo(hf["nemotron"], tmp_path / "f", "zarr", archive="folder")
    assert is_nemo(folder) and is_nemo(build_nemo(hf["nemotron"], tmp_path / "x.nemo", "ckpt"))
    assert not is_nemo(hf["nemotron"])


BASE = yaml.safe_load("""
mcore_gpt: true
num_layers: 2
hidden_size: 64
ffn_hidden_size: 96
num_attention_heads: 4
num_query_groups: 2
kv_channels: 24
activation: squared-relu
normalization: layernorm1p
bias: false
position_embedding_type: rope
rotary_percentage: 0.5
layernorm_epsilon: 1e-5
""")


@pytest.mark.parametrize("change, message", [
    ({"activation": "gelu"}, "unsupported activation 'gelu'"),
    ({"normalization": "rmsnorm"}, "must use layernorm1p"),
    ({"activation": "swiglu", "normalization": "layernorm1p"}, "must use rmsnorm"),
    ({"bias": True}, "bias: true"),
    ({"bias": None}, "bias: true"),  # absent -> NeMo default True
    ({"qkv_bias": True}, "qkv_bias: true"),
    ({"rotary_interleaved": True}, "rotary_interleaved"),
    ({"position_embedding_type": "learned_absolute"}, "learned_absolute"),
    ({"position_embedding_type": None}, "learned_absolute"),
    ({"mcore_gpt": False}, "mcore_gpt: false"),
    ({"num_query_groups": 3}, "not a multiple"),
    ({"hidden_size": None}, "lacks 'hidden_size'"),
])
def test_unsupported_model_config_raises_config_error(change, message):
    raw = {**BASE, **change}
    with pytest.raises(ConfigError, match=message):
        parse_model_config({k: v for k, v in raw.items() if v is not None}, "model_config.yaml")


def test_model_config_values_and_defaults():
    m = parse_model_config(BASE, "x")
    assert m.fields["norm_eps"] == 1e-5  # "1e-5" is a string to PyYAML; coerced
    assert m.fields["head_dim"] == 24 and m.fields["tie_word_embeddings"] is True  # NeMo default: shared
    assert m.fields["rope_theta"] == 10000.0
    lin = parse_model_config({**BASE, "seq_len_interpolation_factor": 4}, "x").fields["rope_scaling"]
    assert (lin.rope_type, lin.factor) == ("linear", 4.0)
    assert parse_model_config({"model": BASE}, "x").fields["hidden_size"] == 64
    assert parse_model_config({**BASE, "kv_channels": None}, "x").fields["head_dim"] == 16


def test_tokenizer_found_under_tokenizer_model_key_and_by_glob(hf, tmp_path):
    nemo = build_nemo(hf["nemotron"], tmp_path / "a", "ckpt", archive="folder",
                      yaml_overrides={"tokenizer": {"library": "sentencepiece", "tokenizer_model": f"nemo:{SP_NAME}"}})
    assert open_nemo(nemo, hf_tensor_shapes).config.bos_token_id == 1
    nemo = build_nemo(hf["nemotron"], tmp_path / "b", "ckpt", archive="folder",
                      yaml_overrides={"tokenizer": {"library": "sentencepiece"}})
    assert open_nemo(nemo, hf_tensor_shapes).config.eos_token_id == 2
    # a tokenizer that is not inside the archive (Llama-3 style: library huggingface) -> padded vocab kept
    nemo = build_nemo(hf["llama"], tmp_path / "c", "ckpt", archive="folder", divisible_by=8,
                      yaml_overrides={"tokenizer": {"library": "huggingface", "type": "meta-llama/Llama-3.1-8B"}})
    (nemo / SP_NAME).unlink()
    src = open_nemo(nemo, hf_tensor_shapes)
    assert src.config.vocab_size == 256 and src.write_tokenizer(tmp_path) == []


def test_truncated_zarr_chunk_is_a_checkpoint_error(hf, tmp_path):
    nemo = build_nemo(hf["nemotron"], tmp_path / "m", "zarr", archive="folder")
    chunk = nemo / "model_weights/model.decoder.layers.mlp.linear_fc2.weight/1.0.0"
    chunk.write_bytes(chunk.read_bytes()[:-2])
    with pytest.raises(CheckpointError, match="linear_fc2.weight/1.0.0 .* expected"):
        open_nemo(nemo, hf_tensor_shapes).read("model.layers.1.mlp.down_proj.weight")


def test_tar_member_read_in_place_not_extracted(hf, tmp_path, monkeypatch):
    import tempfile as tf

    nemo = build_nemo(hf["nemotron"], tmp_path / "m.nemo", "zarr")
    made = []
    real = tf.mkdtemp
    monkeypatch.setattr(tf, "mkdtemp", lambda *a, **k: made.append(1) or real(*a, **k))
    src = open_nemo(nemo, hf_tensor_shapes)
    for n in src.tensors():
        src.read(n)
    src.close()
    assert made == []  # no extraction: zarr chunks are read at their offsets in the tar
