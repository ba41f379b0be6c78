"""Architecture registry: each module in this package registers one Arch (base.py), which states every
per-architecture fact. Everything else asks here: by HF architecture name, by the TensorRT-LLM name a
checkpoint carries, by GGUF architecture or by .nemo activation. Adding a module adds an architecture
(besides base.py, the contract, and config.py, ModelConfig: what every architecture's config holds)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Arch

_BY_HF: dict[str, type[Arch]] = {}
_BY_TRT: dict[str, type[Arch]] = {}
_BY_GGUF: dict[str, type[Arch]] = {}
_BY_NEMO: dict[str, type[Arch]] = {}
_loaded = False


def register(cls: type[Arch]) -> type[Arch]:
    """Class decorator: check the class states every fact (TypeError at import otherwise), then index it."""
    from .base import check_arch_class

    check_arch_class(cls)
    claims = [(_BY_HF, cls.hf_architecture, "HF architecture"),
              *((_BY_TRT, n, "TensorRT-LLM architecture") for n in (cls.trt_architecture, *cls.trt_aliases)),
              *((_BY_GGUF, n, "GGUF architecture") for n in (cls.gguf_architecture,) if n),
              *((_BY_NEMO, n, ".nemo activation") for n in cls.nemo_activations)]
    for table, key, what in claims:
        other = table.get(key)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"architecture {cls.__name__} claims the {what} {key!r}, already {other.__name__}'s; "
                            "state another (or None / () for a format it is not read from)")
    for table, key, _ in claims:
        table[key] = cls
    return cls


def unregister(cls: type[Arch]) -> None:
    """Drop every name `register` indexed for `cls` (a test that declares an architecture of its own)."""
    for table in (_BY_HF, _BY_TRT, _BY_GGUF, _BY_NEMO):
        for key in [k for k, v in table.items() if v is cls]:
            del table[key]


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base", "config"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def get_arch(hf_architecture: str) -> Arch:
    """The Arch for an HF architecture name (e.g. "NemotronForCausalLM")."""
    _load_all()
    try:
        return _BY_HF[hf_architecture]()
    except KeyError:
        raise ConfigError(f"unsupported architecture {hf_architecture!r}; supported: "
                          f"{', '.join(sorted(_BY_HF))}") from None


def find_arch(hf_architectures: list) -> Arch | None:
    """The Arch of the first supported entry of a config.json `architectures` list, or None."""
    _load_all()
    hit = next((a for a in hf_architectures if isinstance(a, str) and a in _BY_HF), None)
    return _BY_HF[hit]() if hit else None


def arch_for_trt(trt_architecture: object, where: str) -> Arch:
    """The Arch whose export writes (or reads back) this TensorRT-LLM config.json `architecture`."""
    _load_all()
    if not isinstance(trt_architecture, str) or trt_architecture not in _BY_TRT:
        raise ConfigError(f"unsupported architecture {trt_architecture!r} in {where}; supported: "
                          f"{', '.join(sorted(_BY_TRT))}")
    return _BY_TRT[trt_architecture]()


def arch_for_gguf(gguf_architecture: str) -> Arch | None:
    _load_all()
    cls = _BY_GGUF.get(gguf_architecture)
    return cls() if cls else None


def arch_for_nemo(activation: str) -> Arch | None:
    _load_all()
    cls = _BY_NEMO.get(activation)
    return cls() if cls else None


def supported(kind: str = "hf") -> list[str]:
    """The names one can give: "hf" architectures, "trt" architectures, "gguf" architectures, "nemo" activations."""
    _load_all()
    return sorted({"hf": _BY_HF, "trt": _BY_TRT, "gguf": _BY_GGUF, "nemo": _BY_NEMO}[kind])


def registered() -> list[Arch]:
    """Every registered architecture, by HF name (tests parametrize over this)."""
    _load_all()
    return [_BY_HF[n]() for n in sorted(_BY_HF)]


def hf_tensor_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Every HF tensor `cfg`'s architecture reads, with its shape (what the .nemo reader is given to look for)."""
    return get_arch(cfg.architecture).hf_tensors(cfg)
