"""The parameter tree of the tensorrt_llm.layers modules GPT and LLaMA use: names and per-rank shapes, no math.

Written from NVIDIA/TensorRT-LLM sources (index file ids; the code index names no commit for id reads):
  layers/attention.py (id 1178835378): Attention.qkv = ColumnLinear(hidden, tp*heads_local*head_size
      + 2*tp*kv_local*head_size, bias) with kv_local = ceil(kv_heads / tp); Attention.dense =
      RowLinear(tp*heads_local*head_size, hidden, bias=dense_bias if given else bias); inner_layernorm =
      LayerNorm(hidden) only when asked. RoPE tables are constants registered on the model (already
      initialised, so never required from a checkpoint).
  layers/mlp.py (id 601018076): MLP.fc = ColumnLinear(hidden, 2*ffn if act in (swiglu, gegelu) else ffn, bias),
      MLP.proj = RowLinear(ffn, hidden, bias), inner_layernorm = LayerNorm(ffn) when asked;
      GatedMLP = MLP + gate = ColumnLinear(hidden, ffn, bias).
  Linear / Embedding / LayerNorm / RmsNorm shapes as in reference/trtllm.md sections 1.6 and 2.3 (not re-read):
      Linear weight is (out, in); ColumnLinear divides out by tp, RowLinear divides in by tp and keeps a
      whole bias; LayerNorm has weight and (by default) bias; RmsNorm has weight only.
"""

from __future__ import annotations

from typing import Iterator


class Module:
    """Ordered parameters (name -> shape, and a dtype where it is not the model's) and child modules, named as
    tensorrt_llm.Module names them."""

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_dtypes", {})
        object.__setattr__(self, "_children", {})

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def param(self, name: str, shape: tuple[int, ...], dtype: str | None = None) -> None:
        """dtype None: the model's (config.dtype); else a tensorrt_llm dtype name ("float32", "int8", "fp8")."""
        self._params[name] = tuple(int(s) for s in shape)
        self._dtypes[name] = dtype

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, tuple[int, ...]]]:
        for name, shape in self._params.items():
            yield prefix + name, shape
        for name, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_parameter_dtypes(self, prefix: str = "") -> Iterator[tuple[str, str | None]]:
        for name, dtype in self._dtypes.items():
            yield prefix + name, dtype
        for name, child in self._children.items():
            yield from child.named_parameter_dtypes(f"{prefix}{name}.")

    def named_modules_with_parent(self, prefix: str = "", parent: Module | None = None):
        """(name, module, parent) for this module and every descendant, as tensorrt_llm.Module yields them."""
        yield prefix, self, parent
        for name, child in list(self._children.items()):
            yield from child.named_modules_with_parent(f"{prefix}.{name}" if prefix else name, self)

    def replace_child(self, name: str, module: Module) -> None:
        self._children[name] = module
        object.__setattr__(self, name, module)


class ModuleList(Module):
    """Children named 0..n-1 in list order (tensorrt_llm.module.ModuleList)."""

    def __init__(self, modules: list[Module]) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)


class Linear(Module):
    """What every Linear keeps for quantize_layers to rebuild it: the unsplit sizes, bias and tp size."""

    def __init__(self, in_features: int, out_features: int, bias: bool, tp_size: int):
        super().__init__()
        self.in_features, self.out_features, self.bias, self.tp_size = in_features, out_features, bias, tp_size


class ColumnLinear(Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, tp_size: int = 1):
        super().__init__(in_features, out_features, bias, tp_size)
        self.param("weight", (out_features // tp_size, in_features))
        if bias:
            self.param("bias", (out_features // tp_size,))


class RowLinear(Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, tp_size: int = 1):
        super().__init__(in_features, out_features, bias, tp_size)
        self.param("weight", (out_features, in_features // tp_size))
        if bias:
            self.param("bias", (out_features,))


class Embedding(Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, tp_size: int = 1, sharding_dim: int = 0):
        super().__init__()
        if tp_size > 1 and sharding_dim == 0:
            self.param("weight", (-(-num_embeddings // tp_size), embedding_dim))
        elif tp_size > 1:
            self.param("weight", (num_embeddings, embedding_dim // tp_size))
        else:
            self.param("weight", (num_embeddings, embedding_dim))


class LayerNorm(Module):
    def __init__(self, normalized_shape: int, bias: bool = True):
        super().__init__()
        self.param("weight", (normalized_shape,))
        if bias:
            self.param("bias", (normalized_shape,))


class RmsNorm(Module):
    def __init__(self, normalized_shape: int):
        super().__init__()
        self.param("weight", (normalized_shape,))


class Attention(Module):
    def __init__(self, *, hidden_size: int, num_attention_heads: int, num_kv_heads: int | None,
                 attention_head_size: int | None, bias: bool, tp_size: int, dense_bias: bool | None = None,
                 qk_layernorm: bool = False, inner_layernorm: bool = False):
        super().__init__()
        if num_attention_heads % tp_size:
            raise AssertionError("num_attention_heads must be divisible by tp_size")
        if qk_layernorm:
            raise NotImplementedError("fake Attention: qk_layernorm is not modelled")
        head = attention_head_size or hidden_size // num_attention_heads
        heads_local = num_attention_heads // tp_size
        kv_local = (num_kv_heads + tp_size - 1) // tp_size if num_kv_heads is not None else heads_local
        self.qkv = ColumnLinear(hidden_size, tp_size * heads_local * head + 2 * tp_size * kv_local * head,
                                bias=bias, tp_size=tp_size)
        self.dense = RowLinear(tp_size * heads_local * head, hidden_size,
                               bias=bias if dense_bias is None else dense_bias, tp_size=tp_size)
        if inner_layernorm:
            self.inner_layernorm = LayerNorm(hidden_size)


GATED_ACTIVATIONS = ("swiglu", "gegelu")  # the names mlp.py doubles fc for


def is_gated_activation(act: str) -> bool:
    return act in GATED_ACTIVATIONS


class MLP(Module):
    def __init__(self, hidden_size: int, ffn_hidden_size: int, hidden_act: str, bias: bool = True, tp_size: int = 1,
                 inner_layernorm: bool = False):
        super().__init__()
        fc_out = 2 * ffn_hidden_size if hidden_act in GATED_ACTIVATIONS else ffn_hidden_size
        if inner_layernorm:
            self.inner_layernorm = LayerNorm(ffn_hidden_size)
        self.fc = ColumnLinear(hidden_size, fc_out, bias=bias, tp_size=tp_size)
        self.proj = RowLinear(ffn_hidden_size, hidden_size, bias=bias, tp_size=tp_size)


class GatedMLP(MLP):
    def __init__(self, hidden_size: int, ffn_hidden_size: int, hidden_act: str, bias: bool = True, tp_size: int = 1,
                 inner_layernorm: bool = False):
        super().__init__(hidden_size, ffn_hidden_size, hidden_act, bias, tp_size, inner_layernorm)
        self.gate = ColumnLinear(hidden_size, ffn_hidden_size, bias=bias, tp_size=tp_size)


def pad_vocab_size(vocab_size: int, tp_size: int) -> int:
    """tensorrt_llm._utils.pad_vocab_size: round up to a multiple of tp."""
    return -(-vocab_size // tp_size) * tp_size
