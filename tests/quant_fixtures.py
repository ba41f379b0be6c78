"""Tiny models that ModelOpt can quantize in every format, with a tokenizer, for tests/test_quant*.py.

INT4 groups of 128 input channels split over tp=2 need hidden, heads*head_dim and intermediate to
be multiples of 256; head_dim 128 != hidden/heads (64) keeps the Minitron-8B trap, GQA (4 heads,
2 KV heads), llama3 rope and partial rotary / layernorm1p come from tests/tiny.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_mistral import make_tiny_mistral
from tiny import make_tiny_llama, make_tiny_nemotron

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnn_dailymail_sample.jsonl"
QUANT_DIMS = dict(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=128)
MAKERS = {"llama": make_tiny_llama, "nemotron": make_tiny_nemotron, "mistral": make_tiny_mistral}


def articles(n: int = 100) -> list[str]:
    return [json.loads(line)["article"] for line in SHARED.read_text().splitlines()[:n]]


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A BPE tokenizer with exactly `vocab_size` ids, trained on the shared CNN/DailyMail articles."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=80,
                                  show_progress=False)
    tok.train_from_iterator(articles(), trainer)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)


def make_quant_model(kind: str, path: Path, **overrides) -> Path:
    """A tiny HF checkpoint (`kind` llama, nemotron or mistral) with quantizable shapes and its tokenizer."""
    dims = {**QUANT_DIMS, **overrides}
    MAKERS[kind](path, **dims)
    write_tokenizer(path, dims["vocab_size"])
    return path


# Every CPU format ModelOpt quantizes, on both tiny models, at tp 1 and 2: "+kv" adds an FP8 KV cache (on FP8 and on a
# weight-only format, whose plugin settings differ).
FORMATS = ("fp8", "fp8+kv", "int8_sq", "int4_awq+kv", "w4a8_awq")


def tiny_quant_models(root: Path) -> dict[str, Path]:
    """The tiny Llama and Nemotron of make_quant_model, by kind."""
    return {kind: make_quant_model(kind, root / kind) for kind in ("llama", "nemotron")}


def qformat_of(variant: str) -> str:
    return variant.removesuffix("+kv")


def has_fp8_kv(variant: str) -> bool:
    return variant.endswith("+kv")
CALIB = ["--calib-dataset", str(SHARED), "--calib-size", "8", "--calib-max-len", "48", "--batch-size", "4"]


def write_quantized_checkpoints(root: Path) -> dict:
    """{(kind, variant, tp): checkpoint} plus {(kind, "bf16", tp): export} and {kind: source}, written under `root`
    by the real CLI (`quantize`, `export`); conftest's session fixture `quant_ckpts` calls it once and removes root."""
    import torch

    from trt_minitron.cli import main

    ckpts: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: two threads spin against each other
    try:
        for kind in ("llama", "nemotron"):
            src = ckpts[kind] = make_quant_model(kind, root / kind)
            for tp in (1, 2):
                out = ckpts[(kind, "bf16", tp)] = root / f"{kind}_bf16_tp{tp}"
                assert main(["export", str(src), "-o", str(out), "--tp", str(tp)]) == 0
                for variant in FORMATS:
                    out = ckpts[(kind, variant, tp)] = root / f"{kind}_{variant.replace('+', '_')}_tp{tp}"
                    extra = ["--kv-cache-dtype", "fp8"] if has_fp8_kv(variant) else []
                    assert main(["quantize", str(src), "-o", str(out), "--qformat", qformat_of(variant), "--tp", str(tp),
                                 *CALIB, *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    return ckpts
