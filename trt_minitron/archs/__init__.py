"""Architecture registry: each module in this package registers one Arch by its HF architecture name."""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    _REGISTRY[cls.hf_architecture] = cls
    return cls


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


def get_arch(hf_architecture: str):
    """The Arch instance for an HF architecture name (e.g. "NemotronForCausalLM")."""
    _load_all()
    try:
        return _REGISTRY[hf_architecture]()
    except KeyError:
        raise ConfigError(f"unsupported architecture {hf_architecture!r}; supported: "
                          f"{', '.join(sorted(_REGISTRY))}") from None


def all_archs() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)
