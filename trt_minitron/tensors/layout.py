"""Output tensors described by where their bytes come from: row blocks of source tensors stacked on
dim 0, then zero rows, cast to the output dtype.

Shapes follow by arithmetic, so planning runs no tensor op (a meta-tensor `cat` imports torch._dynamo,
seconds at start-up), and the writer can move unchanged bytes file to file and convert the rest row
block by row block. `materialize` is the plain route (read, concatenate, cast) for callers that want
the tensor itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .dtypes import as_torch
from .info import TensorInfo

if TYPE_CHECKING:
    import torch

    from .dtypes import DType


@dataclass(frozen=True)
class Block:
    """Rows [start:stop] of source tensor `name`; with `cols`, only columns [cols[0]:cols[1]] of them."""

    name: str
    start: int
    stop: int
    cols: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """`blocks` stacked on dim 0, then `pad_rows` rows of zeros, in `dtype`. `plus_one`: add 1 in float32
    before the cast (a zero-centred layernorm1p gamma folded into a plain LayerNorm weight)."""

    blocks: tuple[Block, ...]
    dtype: torch.dtype | DType  # a dtypes.DType when planned without torch
    pad_rows: int = 0
    plus_one: bool = False

    def info(self, sources: Mapping[str, TensorInfo]) -> TensorInfo:
        """Shape and dtype of the result; a block outside its source or disagreeing columns is a rule bug."""
        trailing = None
        rows = self.pad_rows
        for b in self.blocks:
            trail = block_trailing(b, sources)
            if trailing is not None and trail != trailing:
                raise RuntimeError(f"layout stacks blocks of different widths: {trailing} and {trail} ({b.name})")
            trailing = trail
            rows += b.rows
        if trailing is None:
            raise RuntimeError("a layout needs at least one block")
        return TensorInfo((rows, *trailing), self.dtype)


def block_trailing(b: Block, sources: Mapping[str, TensorInfo]) -> tuple[int, ...]:
    """The shape of one row of block `b`, after checking it lies inside its source tensor."""
    if b.name not in sources:
        from ..errors import CheckpointError

        raise CheckpointError(f"missing tensor {b.name!r} in the source checkpoint")
    shape = sources[b.name].shape or (1,)
    if not 0 <= b.start <= b.stop <= shape[0]:
        raise RuntimeError(f"{b.name}: rows [{b.start}:{b.stop}] outside its {shape[0]} rows")
    if b.cols is None:
        return tuple(shape[1:])
    c0, c1 = b.cols
    if len(shape) < 2 or not 0 <= c0 <= c1 <= shape[1]:
        raise RuntimeError(f"{b.name}: columns [{c0}:{c1}] outside its shape {list(shape)}")
    return (c1 - c0, *shape[2:])


def convert(t: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Elementwise part of a layout: (+1 in float32), cast. Elementwise, so block by block gives the same bits."""
    if layout.plus_one:
        t = t.float() + 1.0
    return t.to(as_torch(layout.dtype))


def materialize(layout: Layout, reader) -> torch.Tensor:
    """The whole output tensor in memory: read each block, cast it, concatenate, pad."""
    import torch

    parts = []
    for b in layout.blocks:
        t = reader.read(b.name, 0, b.start, b.stop)
        if b.cols is not None:
            t = t.narrow(1, b.cols[0], b.cols[1] - b.cols[0])
        parts.append(convert(t, layout))
    if layout.pad_rows:
        parts.append(torch.zeros((layout.pad_rows, *parts[0].shape[1:]), dtype=as_torch(layout.dtype)))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return out.contiguous()
