"""The tokenizer a GGUF file describes, built from metadata already parsed, by transformers' own conversion.

`AutoTokenizer.from_pretrained(folder, gguf_file=...)` parses the file again, twice (gguf's GGUFReader
for the config, its own reader for the vocabulary): ~10 s of the ~12 s it takes for SmolLM2. Here the
metadata format.py read is grouped as transformers' `get_gguf_tokenizer` groups it and handed to
its `convert_gguf_tokenizer`; the files saved are byte-identical to that route's (tests/test_gguf*.py).
A transformers without `integrations.gguf` (before 5.x) takes the whole-file route.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import CheckpointError

# tokenizer_config name -> tokenizer.ggml.* id key, as get_gguf_tokenizer resolves them to token strings
_SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                   "pad_token": "padding_token_id"}
_ERRORS = (ValueError, OSError, KeyError, TypeError, IndexError)


def save_tokenizer(meta: dict, path: Path, dst: Path) -> list[str]:
    """Save the tokenizer of the GGUF file at `path` (metadata `meta`) into `dst`; returns the files written."""
    tokenizer = from_metadata(meta, str(path))
    if tokenizer is None:
        tokenizer = _from_file(path)
    before = {p.name for p in dst.iterdir()}
    tokenizer.save_pretrained(dst)
    return sorted({p.name for p in dst.iterdir()} - before)


def from_metadata(meta: dict, where: str):
    """A transformers tokenizer from parsed GGUF metadata, or None when transformers lacks the conversion."""
    conversion = _conversion()
    if conversion is None:
        return None
    mapping, convert_gguf_tokenizer, backend_class = conversion
    groups = {group: {name: _plain(meta[f"tokenizer.{key}"]) for key, name in renames.items() if f"tokenizer.{key}" in meta}
              for group, renames in mapping.items()}
    tokenizer_dict, config = groups["tokenizer"], groups["tokenizer_config"]
    tokens = tokenizer_dict.get("tokens")
    if not isinstance(tokens, list):
        raise CheckpointError(f"{where}: tokenizer.ggml.model is set but tokenizer.ggml.tokens is not a list of strings")
    kind = tokenizer_dict.get("tokenizer_type")
    if kind == "llama":  # as get_gguf_tokenizer: llama.cpp adds BOS to a sentencepiece vocabulary unless told not to
        config.setdefault("add_bos_token", True)
    elif kind == "gemma4":
        config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and not (type(token_id) is int and 0 <= token_id < len(tokens)):
            raise CheckpointError(f"{where}: tokenizer.ggml.{key} = {token_id!r} is not a token id "
                                  f"(the vocabulary has {len(tokens)})")
        config[name] = tokens[token_id] if token_id is not None else None
    try:
        backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
        # AutoTokenizer picks TokenizersBackend for llama and nemotron configs; is_local and local_files_only
        # are what its from_pretrained records for a local folder, kept so the saved files equal that route's
        return backend_class(tokenizer_object=backend, **config, **extra, is_local=True, local_files_only=False)
    except Exception as e:  # noqa: BLE001 - `tokenizers` reports a bad vocabulary or merge as a plain Exception
        raise CheckpointError(f"{where}: transformers cannot build the tokenizer from this GGUF ({e})") from None


def _conversion():
    """transformers' (key table, convert_gguf_tokenizer, TokenizersBackend), or None before transformers 5."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    return GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer, TokenizersBackend


def _plain(value):
    """Metadata as transformers' reader returns it: number arrays as lists of Python numbers."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def _from_file(path: Path):
    from transformers import AutoTokenizer

    try:  # the whole-file route: transformers parses the metadata again
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except _ERRORS as e:
        raise CheckpointError(f"{path}: transformers cannot build the tokenizer from this GGUF ({e})") from None
