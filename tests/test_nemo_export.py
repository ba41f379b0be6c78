"""`export` of a `.nemo`: same TensorRT-LLM checkpoint as from the HF model it came from, `--format hf`
round trip, and one clear line for every kind of bad archive."""

import io
import json
import tarfile

import pytest
import torch
from nemo_fixtures import SP_NAME, add_member, build_nemo, cast_hf, hf_model, tar_folder
from safetensors.torch import load_file
from tiny import make_tiny_llama, make_tiny_nemotron

from trt_minitron.cli import main
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.run import run_verify


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    nem, llama = make_tiny_nemotron(root / "nemotron"), make_tiny_llama(root / "llama")
    return {"nemotron": nem, "llama": llama,
            "nemotron16": cast_hf(nem, root / "nemotron16", torch.bfloat16),
            "llama16": cast_hf(llama, root / "llama16", torch.bfloat16)}


def export(src, out, **kw):
    run_export(ExportOptions(src=str(src), output=out, **kw))
    return out


def assert_same_checkpoint(a, b, world):
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    for r in range(world):
        ta, tb = load_file(a / f"rank{r}.safetensors"), load_file(b / f"rank{r}.safetensors")
        assert sorted(ta) == sorted(tb)  # the same tensors; each file orders them like its source
        for n in ta:
            assert ta[n].dtype == tb[n].dtype and torch.equal(ta[n], tb[n]), (r, n)


# (hf model, layout, training tp/pp of the .nemo, dtype): every layout, both archs, bf16 and fp32
CASES = [
    ("nemotron16", "zarr", 1, 1, "bfloat16"),
    ("llama16", "zarr", 1, 1, "bfloat16"),
    ("nemotron16", "torch_dist", 1, 1, "bfloat16"),
    ("llama", "torch_dist", 1, 1, "float32"),
    ("nemotron", "ckpt", 1, 1, "float32"),
    ("llama", "mp_rank", 2, 1, "float32"),
    ("nemotron", "mp_rank", 2, 1, "float32"),
    ("nemotron16", "tp_pp", 2, 2, "bfloat16"),
]


@pytest.mark.parametrize("export_tp", [1, 2])
@pytest.mark.parametrize("name, layout, tp, pp, dtype", CASES)
def test_nemo_export_equals_hf_export_bit_exact(hf, tmp_path, name, layout, tp, pp, dtype, export_tp):
    nemo = build_nemo(hf[name], tmp_path / "m.nemo", layout, tp=tp, pp=pp,
                      dtype=torch.bfloat16 if dtype == "bfloat16" else None)
    a = export(nemo, tmp_path / "from_nemo", dtype=dtype, tp=export_tp)
    b = export(hf[name], tmp_path / "from_hf", dtype=dtype, tp=export_tp)
    assert_same_checkpoint(a, b, export_tp)
    with tarfile.open(nemo) as tf:
        assert (a / "tokenizer.model").read_bytes() == tf.extractfile("./" + SP_NAME).read()


@pytest.mark.parametrize("name", ["nemotron", "llama"])
def test_verify_passes_against_hf_source(hf, tmp_path, name):
    nemo = build_nemo(hf[name], tmp_path / "m.nemo", "torch_dist", archive="tar")
    out = export(nemo, tmp_path / "ckpt", dtype="float32", tp=2)
    result = run_verify(VerifyOptions(checkpoint=out, reference=hf[name]))
    assert result.ok, result.summary()
    assert result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0


@pytest.mark.parametrize("name, layout", [("nemotron", "zarr"), ("llama", "mp_rank")])
def test_format_hf_reproduces_the_original_hf_model(hf, tmp_path, name, layout):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    nemo = build_nemo(hf[name], tmp_path / "m.nemo", layout, tp=2 if layout == "mp_rank" else 1)
    out = tmp_path / "hf_out"
    assert main(["export", str(nemo), "--output", str(out), "--format", "hf", "--dtype", "float32"]) == 0
    got = load_file(out / "model.safetensors")
    _, ref = hf_model(hf[name])
    assert sorted(got) == sorted(ref)
    for n in ref:
        assert torch.equal(got[n], ref[n]), n
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [json.loads((hf[name] / "config.json").read_text())["architectures"][0]]
    a = AutoModelForCausalLM.from_pretrained(out).eval()
    b = AutoModelForCausalLM.from_pretrained(hf[name]).eval()
    ids = torch.tensor([[1, 5, 17, 200, 3, 99, 42]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2


def test_format_hf_shards(hf, tmp_path):
    from trt_minitron.archs import hf_tensor_shapes
    from trt_minitron.export.hf_writer import write_hf_checkpoint
    from trt_minitron.sources.nemo import open_nemo

    src = open_nemo(build_nemo(hf["nemotron16"], tmp_path / "m.nemo", "zarr", dtype=torch.bfloat16), hf_tensor_shapes)
    out = tmp_path / "o"
    out.mkdir()
    write_hf_checkpoint(src, out, torch.bfloat16, max_shard_bytes=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    _, ref = hf_model(hf["nemotron16"])
    got = {}
    for f in files:
        got.update(load_file(out / f))
    assert sorted(got) == sorted(ref) and all(torch.equal(got[n], ref[n]) for n in ref)
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in ref.values())


# --- bad archives: one clear line, exit 2, nothing at the output path --------------------------
def _run_bad(src, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["export", str(src), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("trt-minitron: error: "), err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    return err


@pytest.fixture(scope="module")
def good(hf, tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    return build_nemo(hf["nemotron"], d / "good.nemo", "zarr")


def test_truncated_tar(good, tmp_path, capsys):
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in _run_bad(bad, tmp_path, capsys)


def test_truncated_gz(hf, tmp_path, capsys):
    gz = build_nemo(hf["nemotron"], tmp_path / "g.nemo", "ckpt", archive="tar.gz")
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    assert "truncated or corrupt" in _run_bad(bad, tmp_path, capsys)


@pytest.mark.parametrize("member, why", [
    ("../evil.txt", "'..' component"),
    ("./model_weights/../../evil.txt", "'..' component"),
    ("/tmp/evil.txt", "absolute path"),
])
def test_path_escaping_member(good, tmp_path, capsys, member, why):
    info = tarfile.TarInfo(member)
    info.size = 4
    bad = add_member(tmp_path / "bad.nemo", good, info, b"evil")
    err = _run_bad(bad, tmp_path, capsys)
    assert "unsafe member" in err and why in err and member in err


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_member(good, tmp_path, capsys, kind):
    info = tarfile.TarInfo("./" + SP_NAME + ".link")
    info.type, info.linkname = kind, "/etc/passwd"
    assert "link to '/etc/passwd'" in _run_bad(add_member(tmp_path / "bad.nemo", good, info), tmp_path, capsys)


def test_device_member(good, tmp_path, capsys):
    info = tarfile.TarInfo("./dev")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    assert "device" in _run_bad(add_member(tmp_path / "bad.nemo", good, info), tmp_path, capsys)


def test_unsafe_member_in_gz_archive_is_refused_before_extraction(hf, tmp_path, capsys):
    folder = build_nemo(hf["nemotron"], tmp_path / "f", "ckpt", archive="folder")
    bad = tmp_path / "bad.nemo"
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(folder, arcname=".")
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    assert "unsafe member" in _run_bad(bad, tmp_path, capsys)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_missing_model_config(hf, tmp_path, capsys):
    folder = build_nemo(hf["nemotron"], tmp_path / "f", "zarr", archive="folder")
    (folder / "model_config.yaml").unlink()
    bad = tar_folder(folder, tmp_path / "bad.nemo")
    assert "no model_config.yaml" in _run_bad(bad, tmp_path, capsys)


def test_unknown_sharded_backend(hf, tmp_path, capsys):
    folder = build_nemo(hf["nemotron"], tmp_path / "f", "zarr", archive="folder")
    (folder / "model_weights/metadata.json").write_text(json.dumps({"sharded_backend": "tensorstore"}))
    err = _run_bad(tar_folder(folder, tmp_path / "bad.nemo"), tmp_path, capsys)
    assert "unknown sharded_backend 'tensorstore'" in err and "supported: zarr, torch_dist" in err


@pytest.mark.parametrize("change, message", [
    ({"ffn_hidden_size": 128}, "tensor model.decoder.layers.mlp.linear_fc2.weight in {} (torch_dist) has shape "
                               "[4, 64, 96], but model_config.yaml implies [4, 64, 128]"),
    ({"kv_channels": 16}, "tensor model.decoder.layers.self_attention.linear_proj.weight in {} (torch_dist) has "
                          "shape [4, 64, 96], but model_config.yaml implies [4, 64, 64]"),
    ({"num_query_groups": 4}, "tensor model.decoder.layers.self_attention.linear_qkv.weight in {} (torch_dist) "
                              "has shape [4, 192, 64], but model_config.yaml implies [4, 288, 64]"),
    ({"num_layers": 2}, "{}: model_config.yaml says num_layers=2, but its torch_dist weights hold 4 layers "
                        "(layer 0 to layer 3)"),
])
def test_weights_contradicting_the_config(hf, tmp_path, capsys, change, message):
    bad = build_nemo(hf["nemotron"], tmp_path / "bad.nemo", "torch_dist", yaml_overrides=change)
    assert _run_bad(bad, tmp_path, capsys) == "trt-minitron: error: " + message.format(bad)


def test_weights_contradicting_the_config_legacy(hf, tmp_path, capsys):
    bad = build_nemo(hf["llama"], tmp_path / "bad.nemo", "mp_rank", tp=2, yaml_overrides={"ffn_hidden_size": 48})
    assert _run_bad(bad, tmp_path, capsys) == (
        f"trt-minitron: error: tensor model.decoder.layers.0.mlp.linear_fc2.weight in {bad} (legacy tp=2 pp=1) "
        "has shape [64, 96], but model_config.yaml implies [64, 48]")


def test_unsupported_config_in_nemo(hf, tmp_path, capsys):
    bad = build_nemo(hf["nemotron"], tmp_path / "bad.nemo", "zarr", yaml_overrides={"rotary_interleaved": True})
    assert "rotary_interleaved" in _run_bad(bad, tmp_path, capsys)
