"""A source held to its config before anything reads it: what export, quantize, verify and serve all check.

The layer count first, by counting names (the expected tensors are one loop over the layers the config states),
then nothing missing, no shape contradicting the config, every weight floating point, nothing unknown.
"""

from __future__ import annotations

from pathlib import Path

from ..archs import get_arch
from ..archs.base import Arch
from ..errors import CheckpointError
from ..tensors.claims import check_layer_count, layer_indices
from ..tensors.dtypes import dtype_name
from ..tensors.finite import require_finite_source
from ..tensors.info import infos_without_torch
from . import open_source
from .base import Source


def check_source(arch: Arch, source: Source) -> None:
    """Source tensors match what the config implies (see the module docstring); CheckpointError names the first
    contradiction."""
    have = infos_without_torch(source)
    check_layer_count(f"{source.description}: the config says num_hidden_layers", source.config.num_hidden_layers,
                      layer_indices(have, r"model\.layers\.(\d+)\."), "the weights", "model.layers.{}")
    expected = arch.hf_tensors(source.config)
    missing = sorted(n for n in expected if n not in have)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"{source.description}: missing tensors {missing[:5]}{more}")
    for name, shape in expected.items():
        if have[name].shape != shape:
            raise CheckpointError(f"{source.description}: tensor {name} has shape {list(have[name].shape)}, "
                                  f"but the config implies {list(shape)}")
        if not have[name].dtype.is_floating_point:
            raise CheckpointError(f"{source.description}: tensor {name} is stored as {dtype_name(have[name].dtype)}, "
                                  "but a weight must be floating point; refusing to cast integers to weights")
    extra = sorted(n for n in have if n not in expected and not n.endswith(arch.ignore_suffixes)
                   and not (n == "lm_head.weight" and source.config.tie_word_embeddings))
    biases = [n for n in extra if n.endswith(".bias")]  # the arch's rules list every bias it has
    if biases:
        raise CheckpointError(f"{source.description}: biases a {arch.hf_architecture} does not have: "
                              f"{biases[:5]}{' ...' if len(biases) > 5 else ''}")
    if extra:
        raise CheckpointError(f"{source.description}: tensors this converter does not know how to map: "
                              f"{extra[:5]}{' ...' if len(extra) > 5 else ''}")


def check_model_folder(folder: Path, *, scan_weights: bool) -> None:
    """A Hugging Face folder another program will load (serve): export's checks on it and, with `scan_weights`, every
    weight free of NaN/Inf (export checks those as it copies; here nothing is copied)."""
    source = open_source(folder)
    try:
        check_source(get_arch(source.config.architecture), source)
        if scan_weights:
            require_finite_source(source)
    finally:
        source.close()
