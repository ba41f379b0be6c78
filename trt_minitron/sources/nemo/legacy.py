"""Legacy `.nemo` weights: `model_weights.ckpt`, or one per rank in `mp_rank_XX/` (pp=1) or
`tp_rank_XX_pp_rank_YYY/`, each a `torch.save`d state dict of TP-local tensors.

Files are opened with `torch.load(weights_only=True, mmap=True)` (inside a tar they are first
copied to a private temp folder, since mmap needs a real file), so a tensor is paged in only when
it is merged. TP merge (Megatron layout): column-parallel weights concatenate on dim 0,
row-parallel on dim 1, norms are replicated; a gated fc1 holds [gate_r; up_r] per rank, so gates
and ups are merged separately. PP stages number their layers locally: global = stage*L/pp + local.
"""

from __future__ import annotations

import io
import re

import torch

from ...errors import CheckpointError, torch_load_reason
from ..base import TensorInfo
from .archive import Container

CKPT = "model_weights.ckpt"
_RANK_DIR = re.compile(r"^(?:mp_rank_(\d+)|tp_rank_(\d+)_pp_rank_(\d+))$")
_LAYER = re.compile(r"^(.*?decoder\.layers\.)(\d+)(\..*)$")
_COLUMN = ("linear_qkv.weight", "linear_qkv.bias", "linear_fc1.weight", "linear_fc1.bias",
           "word_embeddings.weight", "output_layer.weight")
_ROW = ("linear_proj.weight", "linear_fc2.weight")


def find_legacy(c: Container, prefix: str) -> dict[tuple[int, int], str] | None:
    """{(tp_rank, pp_rank): member} for the legacy weights under `prefix`, or None if there are none."""
    if c.has(prefix + CKPT):
        return {(0, 0): prefix + CKPT}
    ranks: dict[tuple[int, int], str] = {}
    for name in c.names():
        if not name.startswith(prefix) or not name.endswith("/" + CKPT):
            continue
        m = _RANK_DIR.match(name[len(prefix):-len(CKPT) - 1])
        if m:
            tp = int(m.group(1) if m.group(1) is not None else m.group(2))
            ranks[(tp, int(m.group(3) or 0))] = name
    return ranks or None


class LegacyStore:
    def __init__(self, c: Container, files: dict[tuple[int, int], str], num_layers: int, gated: bool):
        self.c, self.gated = c, gated
        self.tp = max(t for t, _ in files) + 1
        self.pp = max(p for _, p in files) + 1
        missing = [f"tp{t}/pp{p}" for t in range(self.tp) for p in range(self.pp) if (t, p) not in files]
        if missing:
            raise CheckpointError(f"legacy checkpoint in {c.path} lacks rank files for {', '.join(missing)}")
        if num_layers % self.pp:
            raise CheckpointError(f"num_layers={num_layers} is not divisible by the {self.pp} pipeline stages "
                                  f"of {c.path}")
        per_stage = num_layers // self.pp
        # key -> [tensor of tp rank 0, 1, ...], keys with global layer numbers
        self.parts: dict[str, list[torch.Tensor | None]] = {}
        for (tp, pp), member in sorted(files.items()):
            sd = self._load(member)
            for key, t in sd.items():
                if "_extra_state" in key or not isinstance(t, torch.Tensor):
                    continue
                m = _LAYER.match(key)
                if m:
                    key = f"{m.group(1)}{int(m.group(2)) + pp * per_stage}{m.group(3)}"
                slot = self.parts.setdefault(key, [None] * self.tp)
                if slot[tp] is not None and pp > 0:
                    continue  # tied embedding copy on the last stage: the first stage's is kept
                slot[tp] = t
        for key, slot in self.parts.items():
            if any(t is None for t in slot):
                raise CheckpointError(f"legacy tensor {key} in {c.path} is missing on some tensor-parallel ranks")

    def _load(self, member: str) -> dict:
        path = self.c.local_path(member)
        try:
            with torch.serialization.safe_globals([io.BytesIO]):  # TE _extra_state is a pickled BytesIO
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"cannot load {member} from {self.c.path} with weights_only=True: "
                                  f"{torch_load_reason(e)}") from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise CheckpointError(f"{member} in {self.c.path} is not a state dict")
        return sd

    def _kind(self, key: str) -> str:
        if self.tp == 1:
            return "one"
        if key.endswith(_ROW):
            return "row"
        if key.endswith(_COLUMN):
            return "gated" if self.gated and ".linear_fc1." in key else "column"
        return "replicated"

    def infos(self) -> dict[str, TensorInfo]:
        out = {}
        for key, parts in self.parts.items():
            shape = list(parts[0].shape)
            kind = self._kind(key)
            if kind in ("column", "gated"):
                shape[0] = sum(p.shape[0] for p in parts)
            elif kind == "row":
                shape[1] = sum(p.shape[1] for p in parts)
            out[key] = TensorInfo(tuple(shape), parts[0].dtype)
        return out

    def read_rows(self, key: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        parts, kind = self.parts[key], self._kind(key)
        if kind == "one":
            t = parts[0]
        elif kind == "replicated":
            t = parts[0]
        elif kind == "column":
            t = torch.cat(parts, dim=0)
        elif kind == "row":
            t = torch.cat(parts, dim=1)
        else:  # gated fc1: [gate_0; up_0], [gate_1; up_1] -> [gate_0; gate_1; up_0; up_1]
            halves = [p.chunk(2, dim=0) for p in parts]
            t = torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
        stop = t.shape[0] if stop is None else stop
        return t[start:stop].clone()

    def close(self) -> None:
        self.parts.clear()
