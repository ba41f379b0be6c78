"""The checkpoint side of `verify` for a Hugging Face folder: transformers' own modules for its architecture, built
from its config.json as transformers parses it (checkpoints/hf.py) and holding its tensors as stored, in float32, one
decoder layer at a time. So what a loader makes of the folder is what is judged: a config field it misreads moves
the numbers exactly as it would in vLLM or TensorRT-LLM's PyTorch backend, which read config.json the same way.
"""

from __future__ import annotations

import torch

from ..checkpoints.hf import HFCheckpoint
from .source_side import causal_additive_mask


def load_module(module: torch.nn.Module, ckpt: HFCheckpoint, prefix: str) -> torch.nn.Module:
    """`module` (built on the meta device) holding the checkpoint's tensors under `prefix`, as float32."""
    weights = {n: ckpt.read(prefix + n).float() for n in module.state_dict()}
    module.load_state_dict(weights, assign=True, strict=True)
    return module.eval()


def layer_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x decoder layers return a tuple


class HFSide:
    def __init__(self, ckpt: HFCheckpoint):
        self.ckpt, self.modules = ckpt, ckpt.modules
        self.hidden_size = ckpt.config.hidden_size
        self._meta = ckpt.meta_model()  # for the final norm as transformers builds it (its eps field, its class)

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        name = self.ckpt.arch.embedding
        rows = {i: self.ckpt.read(name, 0, i, i + 1)[0] for i in set(ids.tolist())}
        return torch.stack([rows[i] for i in ids.tolist()]).float()

    def rotary(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._own = self.modules.rotary(config=self.ckpt.config)(torch.zeros(1, dtype=torch.float32), pos)
        return self._own[0][0], self._own[1][0]

    def start(self, num_tokens: int, source_rope: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        forced = self._own if source_rope is None else source_rope
        self._rope = torch.cat([forced[0], self._own[0]]), torch.cat([forced[1], self._own[1]])
        self._mask = causal_additive_mask(num_tokens)
        self._pos = torch.arange(num_tokens)[None].expand(2, -1)

    def decoder_layer(self, i: int) -> torch.nn.Module:
        with torch.device("meta"):
            module = self.modules.decoder_layer(self.ckpt.config, i)
        return load_module(module, self.ckpt, f"model.layers.{i}.")

    def layer(self, i: int, x_in: torch.Tensor, attn_src: torch.Tensor,
              free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attention on x_in, MLP on attn_src, the whole layer on `free`): the layer runs on [x_in, free] (transformers'
        own forward), its attention residual read at the post-attention norm; the MLP half on the source's attention
        residual is the layer's second half, residual + mlp(post_attention_layernorm(residual))."""
        module = self.decoder_layer(i)
        captured = []
        hook = module.post_attention_layernorm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        out = layer_output(module(torch.cat([x_in, free]), attention_mask=self._mask, position_ids=self._pos,
                                  position_embeddings=self._rope))
        hook.remove()
        mlp = attn_src + module.mlp(module.post_attention_layernorm(attn_src))
        return captured[0][:1], mlp, out[1:]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        module = load_module(self._meta.get_submodule("model.norm"), self.ckpt, "model.norm.")
        return module(x)

    def lm_head_rows(self, start: int, stop: int) -> torch.Tensor:
        return self.ckpt.read(self.ckpt.head, 0, start, stop).float()
