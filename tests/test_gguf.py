"""The streaming GGUF reader on the real SmolLM2-135M-Instruct (Q4_1/Q8_0/F32), on broken files, and its memory.

The reference is the route it replaces: transformers dequantizing the whole file (tests/gguf_transformers.py open_gguf).
"""

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from gguf_transformers import open_gguf
from safetensors.torch import load_file
from test_smollm2 import GGUF

from trt_minitron.cli import main
from trt_minitron.export import run as export_module
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.sources import open_source
from trt_minitron.sources.gguf.source import GGUFSource


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """SmolLM2 exported to float32 at tp 3 through the streamed reader and through transformers."""
    root = tmp_path_factory.mktemp("smollm2")
    run_export(ExportOptions(src=str(GGUF), output=root / "new", dtype="float32", tp=3))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_module, "open_source", lambda src: open_gguf(GGUF))
        run_export(ExportOptions(src=str(GGUF), output=root / "old", dtype="float32", tp=3))
    return root / "new", root / "old"


@pytest.mark.slow
def test_float32_export_equals_the_transformers_route_bit_for_bit(exports):
    new, old = exports
    assert sorted(p.name for p in new.iterdir()) == sorted(p.name for p in old.iterdir())
    assert json.loads((new / "config.json").read_text()) == json.loads((old / "config.json").read_text())
    for r in range(3):
        a, b = load_file(new / f"rank{r}.safetensors"), load_file(old / f"rank{r}.safetensors")
        assert a.keys() == b.keys() and len(a) > 60
        for name in a:
            assert a[name].dtype == b[name].dtype == torch.float32 and torch.equal(a[name], b[name]), name
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (new / f).read_bytes() == (old / f).read_bytes(), f


@pytest.mark.slow
def test_exported_tokenizer_encodes_like_the_gguf_one(exports):
    from transformers import AutoTokenizer

    new, _ = exports
    ours = AutoTokenizer.from_pretrained(new)
    theirs = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    chat = [{"role": "user", "content": "Summarize: the cat sat on the mat."}]
    text = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in text
    assert ours(text)["input_ids"] == theirs(text)["input_ids"] and len(ours(text)["input_ids"]) > 15


@pytest.mark.slow
def test_cli_verify_passes_on_the_streamed_export(exports, capsys):
    new, _ = exports
    assert main(["verify", str(new), "--reference", str(GGUF)]) == 0
    assert "top-1" in capsys.readouterr().out


def test_smollm2_opens_with_the_config_and_tensor_table_transformers_gives():
    src = open_source(GGUF)
    assert isinstance(src, GGUFSource)
    cfg = src.config
    assert (cfg.architecture, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim, cfg.vocab_size, cfg.tie_word_embeddings) == ("LlamaForCausalLM", 30, 9, 3, 64, 49152, True)
    infos = src.tensors()
    assert len(infos) == 272 and "lm_head.weight" not in infos
    assert infos["model.embed_tokens.weight"].shape == (49152, 576)
    assert infos["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    # a row block of a permuted, quantized K is the same rows of the whole tensor
    k = src.read("model.layers.7.self_attn.k_proj.weight")
    assert torch.equal(src.read("model.layers.7.self_attn.k_proj.weight", 0, 64, 128), k[64:128])
    assert torch.equal(src.read("model.embed_tokens.weight", 0, 100, 200),
                       src.read("model.embed_tokens.weight")[100:200])


def _export_error(src, tmp_path, capsys) -> str:
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["export", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trt-minitron: error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no output, no temporary folder
    return err


@pytest.mark.parametrize("cut", [64, 2_000_000, 60_000_000])  # in the metadata, the tensor table, the data
def test_truncated_gguf_is_one_line(tmp_path, capsys, cut):
    src = tmp_path / "cut.gguf"
    src.write_bytes(GGUF.read_bytes()[:cut])
    assert "truncated" in _export_error(src, tmp_path, capsys)


@pytest.mark.parametrize("content, says", [(b"GGUF", "truncated or corrupt: the GGUF version at byte 4 needs 4 bytes, but "
                                                    "the 4-byte file has 0 left"),
                                           (b"", "empty file, not a GGUF"),
                                           (bytes(range(256)) * 64, "not a GGUF file (bad magic)"),
                                           (b"GGUF" + b"\x07\x00\x00\x00" + bytes(64), "version 7")])
def test_magic_only_empty_garbage_or_unknown_version_is_one_line(tmp_path, capsys, content, says):
    src = tmp_path / "bad.gguf"
    src.write_bytes(content)
    assert says in _export_error(src, tmp_path, capsys)


# --- memory: a synthetic Q8_0 llama whose float32 form is ~1.3 GB, exported in a child process ---

CHILD = r"""
import json, sys
from trt_minitron.cli import main
from trt_minitron.export.run import peak_rss_bytes
from trt_minitron.sources.gguf.source import GGUFSource  # noqa: F401  (everything export imports)
import gguf, rich.progress  # noqa: F401
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
# a dry run first: planning's own imports (torch._dynamo via meta-tensor ops) are not the reader's memory
assert main(["export", sys.argv[1], "--output", sys.argv[2], "--dtype", "float32", "--dry-run"]) == 0
base = hwm()
rc = main(["export", sys.argv[1], "--output", sys.argv[2], "--dtype", "float32"])
print(json.dumps({"rc": rc, "base": base, "peak": peak_rss_bytes()}))
"""
HIDDEN, FFN, VOCAB, LAYERS = 2048, 5632, 32768, 4
LARGEST_F32 = VOCAB * HIDDEN * 4  # embedding and lm_head: 268 MB


def write_synthetic_q8_0(path):
    """A llama GGUF with random Q8_0 weights (scale 2^-7, random int8), no tokenizer."""
    rng = np.random.default_rng(0)

    def q8_0(rows, cols):
        blocks = rng.integers(0, 256, size=(rows, cols // 32, 34), dtype=np.uint8)
        blocks[:, :, :2] = np.frombuffer(np.float16(2**-7).tobytes(), dtype=np.uint8)
        return blocks.reshape(rows, cols // 32 * 34)

    w = gguf.GGUFWriter(path, "llama")
    for key, value in {"context_length": 4096, "embedding_length": HIDDEN, "block_count": LAYERS,
                       "feed_forward_length": FFN, "head_count": 16, "head_count_kv": 4}.items():
        getattr(w, f"add_{key}")(value)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(128)
    w.add_tensor("token_embd.weight", q8_0(VOCAB, HIDDEN), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output.weight", q8_0(VOCAB, HIDDEN), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    shapes = {"attn_q": (HIDDEN, HIDDEN), "attn_k": (512, HIDDEN), "attn_v": (512, HIDDEN),
              "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN),
              "ffn_down": (HIDDEN, FFN)}
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        for name, (rows, cols) in shapes.items():
            w.add_tensor(f"blk.{i}.{name}.weight", q8_0(rows, cols), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.slow
def test_export_peak_rss_is_bounded_by_the_largest_tensor_not_the_model(tmp_path):
    src = write_synthetic_q8_0(tmp_path / "big.gguf")
    model_f32 = sum(i.nbytes for i in GGUFSource(src).tensors().values())
    assert model_f32 > 1.2e9
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = report["peak"] - report["base"]
    print(f"model {model_f32 / 2**20:.0f} MiB float32, largest {LARGEST_F32 / 2**20:.0f} MiB, "
          f"export grew RSS by {grown / 2**20:.0f} MiB")
    assert report["rc"] == 0 and grown < 1.5 * LARGEST_F32 < model_f32 / 3
