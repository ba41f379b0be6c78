"""A config's layer count against the layers its tensors hold, compared by counting tensor names.

Everything that plans, exports or verifies loops over the layers a config states, so the count is held to the
files before anything else: a config.json, model_config.yaml or GGUF header that says 1,000,000,000 layers is
refused at once, in time proportional to the tensors present, never to the size claimed.
"""

from __future__ import annotations

import re
from typing import Iterable

from ..errors import CheckpointError


def layer_indices(names: Iterable[str], pattern: str) -> set[int]:
    """The layer numbers in `names`, from the first group of the regular expression `pattern` (matched at the start)."""
    compiled = re.compile(pattern)
    return {int(m.group(1)) for n in names if (m := compiled.match(n))}


def check_layer_count(claim: str, claimed: int, found: set[int], holder: str, first: str) -> None:
    """Refuse unless `found` is exactly 0 .. claimed-1, checked without building that range. `claim` says who
    states the count ("/m/config.json says num_hidden_layers"), `holder` what holds the tensors ("the weights"),
    `first` how a layer's tensors are named ("model.layers.{}")."""
    if len(found) == claimed and (not found or (min(found), max(found)) == (0, claimed - 1)):
        return
    raise CheckpointError(f"{claim}={claimed}, but {holder} hold {describe_layers(found, first)}")


def describe_layers(found: set[int], first: str) -> str:
    if not found:
        return "no layers"
    lo, hi = min(found), max(found)
    holes = [i for i in range(lo, hi + 1) if i not in found][:3]  # a range bounded by the tensors present
    gaps = f", without {', '.join(first.format(i) for i in holes)}" if holes else ""
    return f"{len(found)} layer{'s' * (len(found) != 1)} ({first.format(lo)} to {first.format(hi)}{gaps})"
