"""The streaming GGUF reader on tiny GGUF files written here the way llama.cpp's converter writes them.

convert_hf_to_gguf.py conventions reproduced by `write_gguf`: tensor names through gguf's TensorNameMap;
`llama` Q/K rows permuted per head (LlamaModel.permute); `nemotron` norm gammas stored + 1; llama3 rope
scaling stored as the `rope_freqs.weight` factor tensor. Each file is checked against the HF original it
was written from and against transformers' own GGUF loader, bit for bit.
"""

import dataclasses
import itertools
import math

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny import make_tiny_llama, make_tiny_nemotron

from trt_minitron.archs.config import ModelConfig
from trt_minitron.cli import main
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.options import VerifyOptions
from trt_minitron.sources import open_source
from trt_minitron.sources.gguf.source import GGUFSource
from trt_minitron.verify.run import run_verify

Q = gguf.GGMLQuantizationType


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp LlamaModel.permute: each head's rows from (2, half) to (half, 2) order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_factors(cfg: ModelConfig) -> np.ndarray:
    """llama.cpp LlamaModel.generate_extra_tensors for rope_type llama3."""
    rs, base, dim = cfg.rope_scaling, cfg.rope_theta, cfg.head_dim
    factor, lo, hi, old = rs.factor, rs.low_freq_factor, rs.high_freq_factor, rs.original_max_position_embeddings
    out = []
    for freq in 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# A byte-level BPE tokenizer small enough for the tiny vocab: ASCII, "Ġ" (space) and 144 merges.
_BASE = ["<unk>", "<s>", "</s>", *(chr(c) for c in range(33, 127)), "Ġ"]
_PAIRS = list(itertools.product("etaoinshrdlu", repeat=2))
TOKENIZER = {"add_tokenizer_model": "gpt2", "add_token_list": _BASE + [a + b for a, b in _PAIRS],
             "add_token_types": [3, 3, 3] + [1] * (len(_BASE) - 3 + len(_PAIRS)),
             "add_token_merges": [f"{a} {b}" for a, b in _PAIRS]}


def write_gguf(hf_dir, path, arch="llama", qtype=Q.F32, rope_freqs=None, extra=TOKENIZER):
    """`hf_dir` (a tiny HF checkpoint) as a GGUF file; 2-D weights in `qtype`, vectors in F32."""
    cfg = ModelConfig.from_hf_file(hf_dir / "config.json")
    heads, kv, hidden = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(hidden)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    w.add_key_length(cfg.head_dim)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_value_length(cfg.head_dim)
    if arch == "nemotron":
        w.add_layer_norm_eps(cfg.norm_eps)
        w.add_rope_dimension_count(int(cfg.partial_rotary_factor * hidden) // heads)  # as llama.cpp computes it
    else:
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_rope_dimension_count(cfg.head_dim)
    if cfg.rope_scaling and cfg.rope_scaling.rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(cfg.rope_scaling.factor)
    for key, value in (extra or {}).items():
        getattr(w, key)(value)
    names = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch),
                                     cfg.num_hidden_layers)
    for hf_name, t in load_file(hf_dir / "model.safetensors").items():
        data = t.float().numpy()
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        if arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv)
        if arch == "nemotron" and hf_name.endswith("norm.weight"):
            data = data + 1
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if data.ndim == 2 and qtype != Q.F32:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(data))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        # GQA, head_dim 24 != 64/4, untied, llama3 rope scaling
        "llama": make_tiny_llama(root / "llama"),
        "llama_tied": make_tiny_llama(root / "llama_tied", seed=1, tie_word_embeddings=True, rope_scaling=None),
        "llama_linear": make_tiny_llama(root / "llama_linear", seed=2, rope_scaling={"rope_type": "linear",
                                                                                    "factor": 2.0}),
        # llama.cpp's nemotron rope size is only the model's when head_dim == hidden/heads
        "nemotron": make_tiny_nemotron(root / "nemotron", head_dim=16),
    }


def _llama_gguf(hf, path, qtype=Q.F32):
    factors = _llama3_factors(ModelConfig.from_hf_file(hf["llama"] / "config.json"))
    return write_gguf(hf["llama"], path, qtype=qtype, rope_freqs=factors)


def _gguf_of(hf, name, path):
    """The F32 GGUF llama.cpp would write for tiny model `name` (llama3 scaling as rope_freqs)."""
    if name == "llama":
        return _llama_gguf(hf, path)
    return write_gguf(hf[name], path, arch="nemotron" if name == "nemotron" else "llama")


def _transformers_state(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.state_dict()


@pytest.mark.parametrize("name", ["llama", "llama_tied", "llama_linear", "nemotron"])
def test_f32_gguf_reads_back_the_hf_tensors_and_config(hf, tmp_path, name):
    src = open_source(_gguf_of(hf, name, tmp_path / "m.gguf"))
    assert isinstance(src, GGUFSource)
    want = ModelConfig.from_hf_file(hf[name] / "config.json")
    # GGUF stores floats as float32: eps 1e-5 reads back as 9.99999975e-06 (transformers' loader too)
    assert src.config == dataclasses.replace(want, torch_dtype="float32", norm_eps=float(np.float32(want.norm_eps)))
    originals = load_file(hf[name] / "model.safetensors")
    assert set(src.tensors()) == set(originals)
    for n, t in originals.items():
        got = src.read(n)
        assert src.tensors()[n].shape == tuple(got.shape) and got.dtype == torch.float32
        if name == "nemotron" and n.endswith("norm.weight"):  # (g + 1) - 1 in float32: within one ulp of 1
            torch.testing.assert_close(got, t, atol=2**-23, rtol=0)
        else:
            assert torch.equal(got, t), n


def test_row_blocks_and_column_blocks_equal_slices_of_the_whole(hf, tmp_path):
    src = open_source(_llama_gguf(hf, tmp_path / "m.gguf", Q.Q8_0))
    for n in ("model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
              "model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        full = src.read(n)
        for start, stop in ((0, 24), (24, 48), (5, 37), (13, 14), (0, full.shape[0])):
            assert torch.equal(src.read(n, 0, start, stop), full[start:stop]), (n, start, stop)
        assert torch.equal(src.read(n, 1, 32, 64), full[:, 32:64])
    norm = src.read("model.norm.weight")
    assert torch.equal(src.read("model.norm.weight", 0, 3, 9), norm[3:9])


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.F16, Q.BF16])
def test_every_tensor_equals_transformers_gguf_loader_bit_for_bit(hf, tmp_path, qtype):
    path = _llama_gguf(hf, tmp_path / "m.gguf", qtype)
    src = open_source(path)
    theirs = _transformers_state(path)
    assert set(src.tensors()) == set(theirs)
    for n in src.tensors():
        got = src.read(n)
        stored = {Q.F16: torch.float16, Q.BF16: torch.bfloat16}.get(qtype, torch.float32)  # vectors stay F32
        assert got.dtype == (stored if got.ndim == 2 else torch.float32) == src.tensors()[n].dtype
        assert torch.equal(got.float(), theirs[n]), n


def test_nemotron_quantized_equals_transformers_gguf_loader_bit_for_bit(hf, tmp_path):
    path = write_gguf(hf["nemotron"], tmp_path / "m.gguf", arch="nemotron", qtype=Q.Q5_1)
    src = open_source(path)
    theirs = _transformers_state(path)
    assert set(src.tensors()) == set(theirs)
    for n in src.tensors():
        assert torch.equal(src.read(n), theirs[n]), n


@pytest.mark.parametrize("name, tp, pp", [("llama", 2, 1), ("llama_tied", 4, 1), ("llama_linear", 1, 2),
                                         ("nemotron", 2, 2)])
def test_export_from_gguf_verifies_against_the_hf_original(hf, tmp_path, name, tp, pp):
    path = _gguf_of(hf, name, tmp_path / "m.gguf")
    out = tmp_path / "ckpt"
    run_export(ExportOptions(src=str(path), output=out, dtype="float32", tp=tp, pp=pp))
    result = run_verify(VerifyOptions(checkpoint=out, reference=hf[name]))
    assert result.ok and result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0, result.summary()


def test_format_hf_from_gguf_reproduces_the_hf_original(hf, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "hf_out"
    run_export(ExportOptions(src=str(_llama_gguf(hf, tmp_path / "m.gguf")), output=out, dtype="float32", format="hf"))
    got, want = load_file(out / "model.safetensors"), load_file(hf["llama"] / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    cfg = ModelConfig.from_hf_file(out / "config.json")
    assert cfg.rope_scaling == ModelConfig.from_hf_file(hf["llama"] / "config.json").rope_scaling
    assert AutoTokenizer.from_pretrained(out)("the heat")["input_ids"]


def test_quantized_export_equals_the_transformers_route_at_tp2(hf, tmp_path, monkeypatch):
    from gguf_transformers import open_gguf
    from transformers import AutoTokenizer

    from trt_minitron.export import run as export_module

    path = _llama_gguf(hf, tmp_path / "m.gguf", Q.Q4_1)
    run_export(ExportOptions(src=str(path), output=tmp_path / "new", dtype="bfloat16", tp=2))
    monkeypatch.setattr(export_module, "open_source", lambda src: open_gguf(path))
    run_export(ExportOptions(src=str(path), output=tmp_path / "old", dtype="bfloat16", tp=2))
    for r in range(2):
        new, old = (load_file(tmp_path / d / f"rank{r}.safetensors") for d in ("new", "old"))
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
    files = sorted(p.name for p in (tmp_path / "new").iterdir() if p.name.startswith("tokenizer"))
    assert files == ["tokenizer.json", "tokenizer_config.json"]
    for f in files:
        assert (tmp_path / "new" / f).read_bytes() == (tmp_path / "old" / f).read_bytes()
    text = "the heat is on the rise"
    ids = AutoTokenizer.from_pretrained(tmp_path / "new")(text)["input_ids"]
    assert ids == AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")(text)["input_ids"] and len(ids) > 5
    # the transformers route loses llama3 scaling (it ignores rope_freqs); the streamed reader keeps it
    assert '"rotary_scaling": null' in (tmp_path / "old" / "config.json").read_text()
    assert '"rope_type": "llama3"' in (tmp_path / "new" / "config.json").read_text()


def _cli_error(argv, capsys) -> str:
    capsys.readouterr()  # drop what building the fixture printed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trt-minitron: error: ") and "Traceback" not in err
    return err


def test_rope_freqs_that_are_not_llama3_are_refused(hf, tmp_path, capsys):
    path = write_gguf(hf["llama"], tmp_path / "m.gguf", rope_freqs=np.linspace(1, 3, 12, dtype=np.float32))
    err = _cli_error(["export", str(path), "--output", str(tmp_path / "o")], capsys)
    assert "rope_freqs.weight holds rope factors that no llama3 scaling" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_nemotron_with_head_dim_not_hidden_over_heads_is_refused(tmp_path, capsys):
    hf_dir = make_tiny_nemotron(tmp_path / "hf")  # head_dim 24, hidden/heads 16
    path = write_gguf(hf_dir, tmp_path / "m.gguf", arch="nemotron")
    err = _cli_error(["export", str(path), "--output", str(tmp_path / "o")], capsys)
    assert "head_dim 24 != hidden/heads (64/4)" in err and not (tmp_path / "o").exists()


def _write(path, arch, tensors, fields=()):
    w = gguf.GGUFWriter(path, arch)
    for key, value, vtype in fields:
        w.add_key_value(key, value, vtype)
    for name, (data, raw_dtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_architecture_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "q.gguf", "qwen2", {"token_embd.weight": (np.zeros((4, 32), np.float32), None)})
    err = _cli_error(["export", str(path), "--output", str(tmp_path / "o")], capsys)
    assert "GGUF architecture 'qwen2' is not supported; supported: llama (LlamaForCausalLM), " \
           "nemotron (NemotronForCausalLM)" in err
    assert not (tmp_path / "o").exists()


def test_a_type_gguf_cannot_dequantize_is_refused_before_writing(hf, tmp_path, capsys):
    llama = gguf.GGUFReader(write_gguf(hf["llama_tied"], tmp_path / "m.gguf"))
    fields = [(k, f.contents(), f.types[0]) for k, f in llama.fields.items() if k.startswith("llama.")]
    tensors = {}
    for t in llama.tensors:
        if t.name == "blk.2.ffn_up.weight":  # Q8_1: gguf.quants has no dequantization for it
            rows, cols = (int(d) for d in reversed(t.shape.tolist()))
            tensors[t.name] = (np.zeros((rows, cols // 32 * 40), np.uint8), Q.Q8_1)
        else:
            tensors[t.name] = (np.array(t.data), None)
    path = _write(tmp_path / "q81.gguf", "llama", tensors, fields)
    err = _cli_error(["export", str(path), "--output", str(tmp_path / "o")], capsys)
    assert "blk.2.ffn_up.weight (model.layers.2.mlp.up_proj.weight) has type Q8_1, which gguf.quants cannot" in err
    assert not (tmp_path / "o").exists()
