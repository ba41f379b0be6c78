"""Sources read exactly what the files say, or refuse with one line (exit 2, no output, source untouched)."""

import json
import shutil
import struct

import pytest
import torch
from cli_checks import names, tree_digest, user_error
from safetensors.torch import load_file, save_file
from tiny import make_tiny_llama

from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.run import run_verify


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("src") / "llama")


@pytest.fixture
def src(llama, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(llama, dst)
    return dst


def st_parts(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data):
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def refused(capsys, src, tmp_path, *extra):
    """Export `src`; assert the one-line contract, nothing written, the source unchanged; return the message."""
    before = tree_digest(src)
    around = names(tmp_path)
    msg = user_error(capsys, "export", src, "--output", tmp_path / "out", *extra)
    assert names(tmp_path) == around and tree_digest(src) == before
    return msg


Q = "model.layers.0.self_attn.q_proj.weight"
K = "model.layers.0.self_attn.k_proj.weight"
V = "model.layers.0.self_attn.v_proj.weight"


def _mutate(header, data, case):
    k_begin, k_end = header[K]["data_offsets"]
    if case == "header_list":
        return [header], data
    if case == "entry_without_shape":
        del header[Q]["shape"]
    elif case == "entry_not_object":
        header[Q] = "F32"
    elif case == "negative_offsets":
        header[Q]["data_offsets"] = [-8, header[Q]["data_offsets"][1] - 8]
    elif case == "overlapping_offsets":
        header[V]["data_offsets"] = [k_begin, k_end]  # V read from K's bytes
    elif case == "size_not_shape":
        header[Q]["shape"] = [header[Q]["shape"][0] - 1, header[Q]["shape"][1]]
    elif case == "past_the_end":
        return header, data[:-64]
    elif case == "unknown_dtype":
        header[Q]["dtype"] = "F8_E4M3"
    elif case == "string_shape":
        header[Q]["shape"] = ["96", 64]
    elif case == "bool_offsets":
        header[Q]["data_offsets"] = [False, header[Q]["data_offsets"][1]]
    elif case == "metadata_not_strings":
        header["__metadata__"] = {"format": 1}
    elif case == "duplicate_name":
        text = json.dumps(header)
        dup = json.dumps({K: header[K]})[1:-1]
        return (text[:-1] + ", " + dup + "}").encode(), data
    return header, data


@pytest.mark.parametrize("case, expect", [
    ("header_list", "the safetensors header must be a JSON object, found a list"),
    ("entry_without_shape", f"tensor '{Q}' must be an object with dtype, shape and data_offsets"),
    ("entry_not_object", f"tensor '{Q}' must be an object with dtype, shape and data_offsets, found 'F32'"),
    ("negative_offsets", f"tensor '{Q}' has data_offsets [-8,"),
    ("overlapping_offsets", f"tensors '{K}' and '{V}' overlap in the file"),
    ("size_not_shape", f"tensor '{Q}' spans 24576 bytes, but F32[95, 64] needs 24320"),
    ("past_the_end", "runs past the end of the file"),
    ("unknown_dtype", f"tensor '{Q}' has unsupported dtype 'F8_E4M3'"),
    ("string_shape", f"tensor '{Q}' has shape ['96', 64]; expected a list of non-negative integers"),
    ("bool_offsets", f"tensor '{Q}' has data_offsets [False,"),
    ("metadata_not_strings", "__metadata__ must map strings to strings"),
    ("duplicate_name", f"the safetensors header has the key '{K}' twice"),
])
def test_malformed_safetensors_header_is_one_line(src, tmp_path, capsys, case, expect):
    f = src / "model.safetensors"
    header, data = _mutate(*st_parts(f), case)
    write_st(f, header, data)
    msg = refused(capsys, src, tmp_path)
    assert msg.startswith(f"{f}: ") and expect in msg, msg


def test_header_length_beyond_the_file_is_one_line(src, tmp_path, capsys):
    f = src / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    assert "not a safetensors file (header length 1000000000000" in refused(capsys, src, tmp_path)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_integer_or_bool_weight_is_refused_not_cast(src, tmp_path, capsys, dtype):
    sd = load_file(src / "model.safetensors")
    sd[Q] = (sd[Q] * 1e9).to(dtype)
    save_file(sd, src / "model.safetensors")
    msg = refused(capsys, src, tmp_path)
    assert f"tensor {Q} is stored as {str(dtype)[6:]}, but a weight must be floating point" in msg, msg


def test_same_tensor_in_two_files_without_index_is_refused(src, tmp_path, capsys):
    sd = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    items = sorted(sd)
    save_file({k: sd[k] for k in items[: len(items) // 2 + 1]}, src / "a.safetensors")
    save_file({k: sd[k] for k in items[len(items) // 2:]}, src / "b.safetensors")
    dup = items[len(items) // 2]
    msg = refused(capsys, src, tmp_path)
    assert f"tensor {dup!r} is stored in both a.safetensors and b.safetensors" in msg, msg


def _shard(src, weight_map_for):
    """Split model.safetensors in two shards with an index whose entries `weight_map_for(file)` names."""
    sd = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    items = sorted(sd)
    parts = {"model-1.safetensors": items[: len(items) // 2], "model-2.safetensors": items[len(items) // 2:]}
    for fname, keys in parts.items():
        save_file({k: sd[k] for k in keys}, src / fname)
    wm = {k: weight_map_for(fname) for fname, keys in parts.items() for k in keys}
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return parts


def test_sharded_index_with_plain_names_still_exports(src, tmp_path):
    _shard(src, lambda f: f)
    run_export(ExportOptions(src=str(src), output=tmp_path / "out", dtype="float32"))
    assert run_verify(VerifyOptions(checkpoint=tmp_path / "out", reference=src)).ok


@pytest.mark.parametrize("entry, expect", [
    ("absolute", "is not a plain file name inside"),
    ("dotdot", "is not a plain file name inside"),
    ("symlink", "is a link to"),
])
def test_index_entry_leaving_the_folder_is_refused(src, tmp_path, capsys, entry, expect):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(src / "model.safetensors", other / "model-2.safetensors")
    if entry == "symlink":
        (src / "link.safetensors").symlink_to(other / "model-2.safetensors")
    name = {"absolute": str(other / "model-2.safetensors"), "dotdot": "../other/model-2.safetensors",
            "symlink": "link.safetensors"}[entry]
    _shard(src, lambda f: name if f == "model-2.safetensors" else f)
    msg = refused(capsys, src, tmp_path)
    assert f"model.safetensors.index.json: shard {name!r}" in msg and expect in msg, msg


def test_index_naming_the_wrong_shard_is_refused(src, tmp_path, capsys):
    parts = _shard(src, lambda f: f)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    moved = parts["model-2.safetensors"][0]
    index["weight_map"][moved] = "model-1.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    msg = refused(capsys, src, tmp_path)
    assert f"the index puts {moved!r} in model-1.safetensors, but it is in model-2.safetensors" in msg, msg


@pytest.mark.parametrize("doc, found", [
    ([{"weight_map": {}}], "found a list"),
    ({"weight_map": ["model.safetensors"]}, "found a weight_map list"),
    ({"weight_map": {"x": 3}}, "found a weight_map dict"),
    ({"metadata": {}}, "found a weight_map NoneType"),
])
def test_malformed_index_is_one_line(src, tmp_path, capsys, doc, found):
    (src / "model.safetensors.index.json").write_text(json.dumps(doc))
    msg = refused(capsys, src, tmp_path)
    assert 'expected {"weight_map": {tensor name: file name}}' in msg and msg.endswith(found), msg


class Custom:  # a class torch's weights_only unpickler refuses
    pass


@pytest.mark.parametrize("content, expect", [
    ("list", "holds a list, not a state dict of named tensors"),
    ("nested", "holds a nested dict under 'model'; expected a flat state dict of named tensors"),
    ("number", "holds a int under 'step'; expected a flat state dict"),
    ("pickle", "cannot load with weights_only=True (Unsupported global: GLOBAL test_bad_sources.Custom"),
])
def test_malformed_bin_is_one_line(src, tmp_path, capsys, content, expect):
    sd = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    obj = {"list": list(sd.values()), "nested": {"model": sd}, "number": {**sd, "step": 3},
           "pickle": {**sd, "extra": Custom()}}[content]
    torch.save(obj, src / "pytorch_model.bin")
    msg = refused(capsys, src, tmp_path)
    assert f"{src / 'pytorch_model.bin'}" in msg and expect in msg, msg


# --- tied embeddings: do what transformers 5.x does -------------------------------------------------
def _tied_source(tmp_path, head: str):
    """A tied-config checkpoint whose lm_head.weight is absent ("none"), a copy of the embedding ("same"),
    different ("different"), or the only head-sized tensor ("only_head", no embedding stored)."""
    src = make_tiny_llama(tmp_path / f"tied-{head}", tie_word_embeddings=True)
    sd = load_file(src / "model.safetensors")
    emb = sd["model.embed_tokens.weight"]
    if head == "same":
        sd["lm_head.weight"] = emb.clone()
    elif head == "different":
        sd["lm_head.weight"] = torch.randn_like(emb)
    elif head == "only_head":
        sd["lm_head.weight"] = sd.pop("model.embed_tokens.weight")
    save_file(sd, src / "model.safetensors")
    return src, sd


@pytest.mark.parametrize("head", ["same", "different", "only_head"])
def test_tied_config_with_stored_lm_head_follows_transformers(tmp_path, capsys, head):
    from transformers import AutoModelForCausalLM

    src, sd = _tied_source(tmp_path, head)
    ref = AutoModelForCausalLM.from_pretrained(src)  # what transformers 5.x makes of this checkpoint
    out = tmp_path / f"out-{head}"
    run_export(ExportOptions(src=str(src), output=out, dtype="float32"))
    got = load_file(out / "rank0.safetensors")
    assert torch.equal(got["lm_head.weight"], ref.lm_head.weight)
    assert torch.equal(got["transformer.vocab_embedding.weight"], ref.model.embed_tokens.weight)
    tied = json.loads((out / "config.json").read_text())["tie_word_embeddings"]
    note = "tie_word_embeddings=true, but lm_head.weight is stored and differs from the embedding"
    err = capsys.readouterr().err
    if head == "different":
        assert torch.equal(ref.lm_head.weight, sd["lm_head.weight"]) and not tied and note in err
    else:
        assert ref.lm_head.weight.data_ptr() == ref.model.embed_tokens.weight.data_ptr() and tied
        assert note not in err
    result = run_verify(VerifyOptions(checkpoint=out, reference=src))
    assert result.ok and result.top1_agreement == 1.0, result.summary()


def test_tied_flag_must_be_a_real_boolean(src, tmp_path, capsys):
    cfg = json.loads((src / "config.json").read_text())
    cfg["tie_word_embeddings"] = "false"
    (src / "config.json").write_text(json.dumps(cfg))
    assert refused(capsys, src, tmp_path) == (f"{src / 'config.json'}: tie_word_embeddings='false' must be true "
                                              "or false (a JSON boolean, not a string or number)")


# --- config.json values are type-checked, every bad field named on one line -------------------------
@pytest.mark.parametrize("change, expect", [
    ({"hidden_size": "sixty-four"}, "hidden_size='sixty-four' must be a positive integer"),
    ({"num_hidden_layers": 4.0}, "num_hidden_layers=4.0 must be a positive integer"),
    ({"rope_theta": "10000"}, "rope_theta='10000' must be a positive number"),
    ({"rope_scaling": "llama3"}, "rope_scaling='llama3' must be a JSON object"),
    ({"rope_scaling": {"rope_type": "linear"}}, "linear rope scaling: lacks 'factor'"),
    ({"rope_scaling": {"rope_type": "linear", "factor": "2"}}, "linear rope scaling: factor='2' must be a positive"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks 'low_freq_factor'; lacks 'high_freq_factor'"),
    ({"head_dim": 0}, "head_dim=0 must be a positive integer"),
    ({"head_dim": -24}, "head_dim=-24 must be a positive integer"),
    ({"num_attention_heads": 0}, "num_attention_heads=0 must be a positive integer"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps=nan must be a positive number"),
    ({"architectures": "LlamaForCausalLM"}, "architectures='LlamaForCausalLM' must be a JSON list"),
    ({"attention_bias": "false"}, "attention_bias='false' must be true or false"),
    ({"eos_token_id": "</s>"}, "eos_token_id='</s>' must be a token id or a list of token ids"),
    ({"vocab_size": None}, "lacks 'vocab_size'"),
    ({"hidden_size": "x", "vocab_size": -1}, "hidden_size='x' must be a positive integer; vocab_size=-1 must be"),
])
def test_bad_config_value_is_one_line_naming_the_field(src, tmp_path, capsys, change, expect):
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(change)
    (src / "config.json").write_text(json.dumps(cfg))
    msg = refused(capsys, src, tmp_path)
    assert msg.startswith(f"{src / 'config.json'}") and expect in msg, msg


@pytest.mark.parametrize("text, expect", [
    ("[1, 2]", "must hold a JSON object, found a list"),
    ('{"hidden_size": ', "is not valid JSON"),
])
def test_config_json_that_is_not_an_object_is_one_line(src, tmp_path, capsys, text, expect):
    (src / "config.json").write_text(text)
    assert expect in refused(capsys, src, tmp_path)


def test_nemo_yaml_error_is_one_line(tmp_path, capsys):
    from nemo_fixtures import build_nemo

    nemo = build_nemo(make_tiny_llama(tmp_path / "hf"), tmp_path / "m", "zarr", archive="folder")
    (nemo / "model_config.yaml").write_text("hidden_size: 64\nlayers: [1, 2\nffn: {a: 1\n")
    msg = refused(capsys, nemo, tmp_path)
    assert "model_config.yaml is not valid YAML: while parsing a flow sequence" in msg, msg


@pytest.mark.parametrize("field, value, expect", [
    ("hidden_size", "64", "hidden_size='64' in"),
    ("share_embeddings_and_output_weights", "no", "share_embeddings_and_output_weights='no' in"),
    ("layernorm_epsilon", "tiny", "layernorm_epsilon='tiny' in"),
])
def test_nemo_config_values_are_type_checked(tmp_path, capsys, field, value, expect):
    from nemo_fixtures import build_nemo

    nemo = build_nemo(make_tiny_llama(tmp_path / "hf"), tmp_path / "m", "zarr", archive="folder",
                      yaml_overrides={field: value})
    assert expect in refused(capsys, nemo, tmp_path)
