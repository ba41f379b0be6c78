"""sources/gguf/tokenizer.py: the tokenizer built from our parsed metadata equals transformers' whole-file route
(`AutoTokenizer.from_pretrained(folder, gguf_file=...)`) file for file, byte for byte, for a byte-level BPE
and a sentencepiece vocabulary, in llama and nemotron files."""

import itertools

import pytest
from test_gguf_tiny import TOKENIZER, write_gguf
from tiny import make_tiny_llama, make_tiny_nemotron

from trt_minitron.sources.gguf import tokenizer as gguf_tokenizer
from trt_minitron.sources.gguf.source import GGUFSource

# sentencepiece ("llama" in GGUF): control tokens, byte fallback, scored pieces, no merges (derived from the scores)
_PIECES = ["▁", *"etaoinshrdlu", *(a + b for a, b in itertools.product("etaoinshrdlu", repeat=2)), "▁the", "▁heat"]
SENTENCEPIECE = {
    "add_tokenizer_model": "llama",
    "add_token_list": ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *_PIECES],
    "add_token_scores": [0.0, 0.0, 0.0, *([0.0] * 256), *(-float(i) for i in range(len(_PIECES)))],
    "add_token_types": [2, 3, 3, *([6] * 256), *([1] * len(_PIECES))],
    "add_unk_token_id": 0,
    "add_add_eos_token": False,
    "add_chat_template": "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}",
}
TEXT = "the heat is on the rise, 42 times"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"llama": make_tiny_llama(root / "llama", seed=1, tie_word_embeddings=True, rope_scaling=None),
            "nemotron": make_tiny_nemotron(root / "nemotron", head_dim=16)}


def _both_routes(path, tmp_path):
    from transformers import AutoTokenizer

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    written = GGUFSource(path).write_tokenizer(ours)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(theirs)
    return written, ours, theirs


@pytest.mark.parametrize("arch", ["llama", "nemotron"])
@pytest.mark.parametrize("vocab", ["bpe", "sentencepiece"])
def test_tokenizer_files_equal_the_whole_file_route(hf, tmp_path, arch, vocab):
    from transformers import AutoTokenizer

    extra = TOKENIZER if vocab == "bpe" else SENTENCEPIECE
    path = write_gguf(hf[arch], tmp_path / "m.gguf", arch=arch, extra=extra)
    written, ours, theirs = _both_routes(path, tmp_path)
    assert written == sorted(p.name for p in theirs.iterdir()) and "tokenizer.json" in written
    for name in written:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    ids = AutoTokenizer.from_pretrained(ours)(TEXT)["input_ids"]
    assert ids == AutoTokenizer.from_pretrained(theirs)(TEXT)["input_ids"] and len(ids) > 5
    if vocab == "sentencepiece":
        assert "chat_template.jinja" in written and ids[0] == 1  # llama.cpp's BOS default for sentencepiece


def test_without_transformers_gguf_conversion_the_whole_file_route_is_taken(hf, tmp_path, monkeypatch):
    """An older transformers (no integrations.gguf): the tokenizer still comes out, the slow way."""
    monkeypatch.setattr(gguf_tokenizer, "_conversion", lambda: None)
    path = write_gguf(hf["llama"], tmp_path / "m.gguf", extra=TOKENIZER)
    assert gguf_tokenizer.from_metadata(GGUFSource(path).meta, str(path)) is None
    written, ours, theirs = _both_routes(path, tmp_path)
    assert written and all((ours / n).read_bytes() == (theirs / n).read_bytes() for n in written)
