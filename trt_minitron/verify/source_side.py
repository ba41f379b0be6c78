"""The source side of `verify`: the source's tensors, rounded as export rounds them (or as stored), run in
float32 through transformers' own modules for the architecture, never through trt-minitron's model.

The transformers config is built from trt-minitron's ModelConfig (`to_hf`), so head_dim comes from
what the source states (`head_dim` or `kv_channels`), never from transformers' hidden/heads guess.
"""

from __future__ import annotations

import torch

from ..archs import get_arch
from ..archs.config import ModelConfig
from ..errors import CheckpointError
from ..sources.base import Source
from ..tensors.finite import require_finite, require_finite_source_tensor, tensor_has_nonfinite


def round_like_export(t: torch.Tensor, dtype: torch.dtype, offset: float = 0.0) -> torch.Tensor:
    """float32 values the checkpoint holds for `t`: (t + offset) cast to `dtype`, minus the offset again."""
    if offset:
        return (t.float() + offset).to(dtype).float() - offset
    return t.to(dtype).float()


def transformers_config(cfg: ModelConfig):
    """A transformers config (eager attention) for `cfg`, from trt-minitron's own reading of the source."""
    hf = cfg.to_hf()
    hf.pop("architectures")
    hf.pop("model_type")
    config = get_arch(cfg.architecture).transformers_modules().config(**hf)
    config._attn_implementation = "eager"
    return config


def causal_additive_mask(num_tokens: int) -> torch.Tensor:
    """[1, 1, T, T] float mask, 0 where a query may attend and the float32 minimum above the diagonal."""
    upper = torch.ones(num_tokens, num_tokens, dtype=torch.bool).triu(1)
    return torch.zeros(num_tokens, num_tokens).masked_fill(upper, torch.finfo(torch.float32).min)[None, None]


class SourceSide:
    """One source checkpoint read lazily: one decoder layer, some embedding rows or a block of lm_head rows
    at a time, each either rounded to `dtype` the way export rounds it or as stored (both as float32)."""

    def __init__(self, source: Source, dtype: torch.dtype):
        self.source, self.cfg, self.dtype = source, source.config, dtype
        self.arch = get_arch(self.cfg.architecture)
        self.modules = self.arch.transformers_modules()
        self.config = transformers_config(self.cfg)
        self.head_name = self.arch.embedding if self.cfg.tie_word_embeddings else "lm_head.weight"
        self._infos = source.tensors()
        # Every other source tensor is checked for NaN/Inf as it is read; the embedding only in the prompt's rows.
        require_finite_source_tensor(source, self.arch.embedding)

    def read(self, name: str, rounded: bool, offset_key: str | None = None) -> torch.Tensor:
        """Tensor `name` in float32, as stored or rounded (offset looked up under `offset_key`, default `name`)."""
        if name not in self._infos:
            raise CheckpointError(f"{self.source.description} has no tensor {name!r}")
        t = self.source.read(name)
        require_finite(t, self.source.description, name)
        if not rounded:
            return t.float()
        return round_like_export(t, self.dtype, self.arch.rounding_offsets.get(offset_key or name, 0.0))

    def exact(self, name: str, offset_key: str | None = None) -> bool:
        """Whether rounding `name` to the checkpoint dtype leaves it unchanged (then one run serves both)."""
        if self.arch.rounding_offsets.get(offset_key or name, 0.0):
            return False
        stored = self._infos[name].dtype
        return stored == self.dtype or (self.dtype == torch.float32 and stored in (torch.float16, torch.bfloat16))

    def rotary(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) from transformers' rotary embedding for this architecture and config."""
        rot = self.modules.rotary(config=self.config)
        return rot(torch.zeros(1, dtype=torch.float32), position_ids)

    def decoder_layer(self, layer: int) -> tuple[torch.nn.Module, bool]:
        """transformers' decoder layer `layer` holding only that layer's source weights as stored (float32),
        and whether rounding them is exact; `round_layer_` rounds them in place."""
        with torch.device("meta"):
            module = self.modules.decoder_layer(self.config, layer)
        pre = f"model.layers.{layer}."
        names = list(module.state_dict())
        weights = {n: self.read(pre + n, False) for n in names}
        module.load_state_dict(weights, assign=True, strict=True)
        return module.eval(), all(self.exact(pre + n, n) for n in names)

    def round_layer_(self, module: torch.nn.Module) -> None:
        """Round a decoder layer loaded as stored to the checkpoint dtype, in place (no second read)."""
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(round_like_export(p, self.dtype, self.arch.rounding_offsets.get(name, 0.0)))

    def final_norm(self, rounded: bool) -> tuple[torch.nn.Module, bool]:
        """transformers' final norm with the source's weights, and whether rounding them is exact."""
        norm = self.modules.norm(self.cfg.hidden_size, eps=self.cfg.norm_eps)
        names = self.arch.final_norm_tensors()
        weights = {n.rsplit(".", 1)[1]: self.read(n, rounded) for n in names}
        norm.load_state_dict(weights, strict=True)
        return norm.eval(), all(self.exact(n) for n in names)

    def embedding_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rounded, as stored) float32 rows `ids` (1-D) of the embedding, read once."""
        rows = {i: self.source.read(self.arch.embedding, 0, i, i + 1)[0] for i in set(ids.tolist())}
        raw = torch.stack([rows[i] for i in ids.tolist()])
        rounded = round_like_export(raw, self.dtype)
        return rounded, rounded if self.exact(self.arch.embedding) else raw.float()

    def head_rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rounded, as stored) float32 lm_head rows [start, stop) (the embedding's when tied), read once."""
        raw = self.source.read(self.head_name, 0, start, stop)
        if tensor_has_nonfinite(raw):
            require_finite_source_tensor(self.source, self.head_name)
        rounded = round_like_export(raw, self.dtype)
        return rounded, rounded if self.exact(self.head_name) else raw.float()

    def causal_lm(self, rounded: bool) -> torch.nn.Module:
        """The whole source model (transformers' XForCausalLM) in float32: memory = the model."""
        with torch.device("meta"):
            model = self.modules.causal_lm(self.config)
        weights = {}
        for name in model.state_dict():
            src = self.head_name if name == "lm_head.weight" else name
            layer_rel = name.split(".", 3)[3] if name.startswith("model.layers.") else name
            weights[name] = self.read(src, rounded, offset_key=layer_rel)
        model.load_state_dict(weights, assign=True, strict=True)
        for parent in list(model.modules()):  # rotary buffers are not weights: build them for real
            for child_name, child in list(parent.named_children()):
                if isinstance(child, self.modules.rotary):
                    setattr(parent, child_name, self.modules.rotary(config=self.config))
        return model.eval()
