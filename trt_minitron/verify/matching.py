"""Whether the reference is the model the checkpoint was made from: the shapes both must share, and the vocabulary
they are compared over (a reference padded by NeMo is trimmed)."""

from __future__ import annotations

from types import SimpleNamespace

from ..archs.config import ModelConfig
from ..errors import ConfigError

SHAPE_FIELDS = ("architecture", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim")
# A Hugging Face folder's own config.json may misstate the rest (a dropped head_dim): its tensors' shapes and the
# numbers judge those, so only what makes the two models comparable at all is matched.
HF_SHAPE_FIELDS = ("architecture", "hidden_size", "num_hidden_layers")


def match_reference(ckpt: ModelConfig, ref: ModelConfig, where: str,
                    fields: tuple[str, ...] = SHAPE_FIELDS) -> tuple[int, list[str]]:
    """The vocabulary both sides share, and notes; a reference of another shape is a ConfigError.

    Only shapes are matched here: settings that change the maths without changing a shape (rope, rotary
    fraction, norm epsilon) are for the numbers to judge. `ckpt`: anything with the `fields` as attributes.
    """
    for name in fields:
        a, b = getattr(ckpt, name), getattr(ref, name)
        if a != b:
            raise ConfigError(f"the reference {where} does not match the checkpoint: {name} {b} (reference) vs "
                              f"{a} (checkpoint)")
    if ref.vocab_size == ckpt.vocab_size:
        return ckpt.vocab_size, []
    # A larger reference vocabulary is padding (NeMo make_vocab_size_divisible_by, times tp) when it is the
    # checkpoint's rounded up to a multiple of the reference's own largest power-of-two divisor.
    pow2 = ref.vocab_size & -ref.vocab_size
    if ref.vocab_size > ckpt.vocab_size and -(-ckpt.vocab_size // pow2) * pow2 == ref.vocab_size:
        return ckpt.vocab_size, [f"compared over the shared vocabulary of {ckpt.vocab_size}: the reference's "
                                 f"{ref.vocab_size - ckpt.vocab_size} extra rows (to {ref.vocab_size}) are "
                                 "vocabulary padding the checkpoint trimmed"]
    raise ConfigError(f"the reference {where} has a different vocabulary: vocab_size {ref.vocab_size} (reference) vs "
                      f"{ckpt.vocab_size} (checkpoint)")


def match_hf_reference(ckpt, ref: ModelConfig, where: str) -> tuple[int, list[str]]:
    """match_reference for a Hugging Face folder (checkpoints.hf.HFCheckpoint): its config as transformers parsed it,
    on HF_SHAPE_FIELDS only."""
    cfg = ckpt.config
    stated = SimpleNamespace(architecture=ckpt.arch.hf_architecture, hidden_size=cfg.hidden_size,
                             num_hidden_layers=cfg.num_hidden_layers, vocab_size=cfg.vocab_size)
    return match_reference(stated, ref, where, HF_SHAPE_FIELDS)
