"""Reading a Hugging Face checkpoint folder back for `verify`, the way its consumers load it.

config.json is parsed by transformers (the architecture's own config class), never by trt-minitron's reader, so a
field a loader would misread (a dropped head_dim, a changed rope field) reaches the numbers. The tensors it must
hold are the state dict of transformers' own model built from that config on the meta device (plus a unified
quantized checkpoint's scales, unified.py); a missing or extra tensor, a shape or dtype other than config.json
implies is a failure that names it. Tensors are read one at a time (or a row block of one) with plain reads.

`checkpoint_kind` says what a folder given to verify is, and refuses anything else in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..archs import find_arch, supported
from ..archs.config import ModelConfig, load_json
from ..errors import CheckpointError, ConfigError
from ..tensors.dtypes import dtype_name
from ..tensors.info import TensorInfo
from ..tensors.shards import weight_files
from .quantized import PlainRankFile
from .trtllm import folder_kind
from .unified_label import HF_QUANT_CONFIG

TRTLLM, HF, UNIFIED = "TensorRT-LLM checkpoint", "Hugging Face folder", "ModelOpt unified Hugging Face checkpoint"
TAKES = ("verify takes a TensorRT-LLM checkpoint (trt-minitron export), a Hugging Face folder (export --format hf, "
         "or transformers' save_pretrained) or a ModelOpt unified checkpoint (quantize --format hf)")


def checkpoint_kind(path: Path) -> str:
    """TRTLLM, HF or UNIFIED for a folder verify can judge; a ConfigError saying what it is otherwise."""
    if path.is_file():
        what = {".gguf": "a GGUF file", ".nemo": "a .nemo file"}.get(path.suffix, "a file")
        raise ConfigError(f"{path} is {what}, not a checkpoint folder: {TAKES}; give a source as --reference")
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder")
    if not (path / "config.json").is_file():
        what = "a .nemo folder (a source)" if (path / "model_config.yaml").is_file() else "not a checkpoint"
        raise ConfigError(f"{path} has no config.json: it is {what}; {TAKES}")
    raw = load_json(path / "config.json")
    other = folder_kind(raw)
    if other is None:
        return TRTLLM
    if "engine" in other:
        raise ConfigError(f"{path} is {other}; {TAKES} (verify the checkpoint the engine was built from)")
    inline = raw.get("quantization_config")
    if (path / HF_QUANT_CONFIG).is_file():
        return UNIFIED
    if inline is not None:
        method = inline.get("quant_method") if isinstance(inline, dict) else inline
        if str(method).lower() != "modelopt":
            raise ConfigError(f"{path} is quantized with {method!r}; verify proves ModelOpt unified checkpoints "
                              "(quant_method 'modelopt'), not other quantizers' formats")
        return UNIFIED
    return HF


def config_dtype(config) -> torch.dtype | None:
    """The dtype a transformers config states (`dtype` in 5.x, `torch_dtype` in 4.x), or None."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


@dataclass
class HFCheckpoint:
    """A Hugging Face folder: its config as transformers parses it, and its safetensors read lazily."""

    path: Path
    raw: dict = field(init=False)
    config: object = field(init=False)  # the architecture's transformers config class, eager attention
    notes: list[str] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.raw = load_json(self.path / "config.json")
        arch = find_arch(self.raw.get("architectures") or [])
        if arch is None:
            raise ConfigError(f"unsupported architecture {self.raw.get('architectures')!r} in {self.path}/config.json; "
                              f"supported: {', '.join(supported())}")
        self.arch, self.modules = arch, arch.transformers_modules()
        try:
            self.config = self.modules.config.from_pretrained(str(self.path))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise ConfigError(f"transformers cannot read {self.path}/config.json: {e}") from None
        self.config._attn_implementation = "eager"
        self._open_files()
        stated = config_dtype(self.config)
        if stated is None:
            stated = self.infos[self.arch.embedding].dtype if self.arch.embedding in self.infos else torch.float32
            self.notes.append(f"config.json states no dtype: judged as {dtype_name(stated)}, the embedding's")
        self.dtype: torch.dtype = stated

    def _open_files(self) -> None:
        files, _ = weight_files(self.path, self.path, "model.safetensors", "model.safetensors.index.json",
                                 ".safetensors")
        if not files:
            raise CheckpointError(f"{self.path} holds no safetensors weights (verify reads model.safetensors, sharded "
                                  "or not)")
        self._file: dict[str, PlainRankFile] = {}
        self.infos: dict[str, TensorInfo] = {}
        for f in files:
            handle = PlainRankFile(f)
            for name, info in handle.infos.items():
                if name in self._file:
                    raise CheckpointError(f"{self.path}: tensor {name!r} is stored in both "
                                          f"{self._file[name].path.name} and {f.name}")
                self._file[name], self.infos[name] = handle, info

    @property
    def tied(self) -> bool:
        return bool(getattr(self.config, "tie_word_embeddings", False))

    @property
    def head(self) -> str:
        """The tensor the logits come from: lm_head.weight, or the embedding when config.json ties them."""
        return self.arch.embedding if self.tied else "lm_head.weight"

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self._file[name].read(name, dim, start, stop)

    def meta_model(self) -> torch.nn.Module:
        """transformers' whole model for this config on the meta device: its names, shapes and modules, no memory."""
        with torch.device("meta"):
            return self.modules.causal_lm(self.config)

    def expected(self) -> dict[str, TensorInfo]:
        """Every tensor transformers reads for this config, in config.json's dtype (the tied head left out)."""
        state = self.meta_model().state_dict()
        if self.tied:
            state.pop("lm_head.weight", None)
        return {n: TensorInfo(tuple(t.shape), self.dtype) for n, t in state.items()}

    def config_problems(self) -> list[str]:
        """What config.json states that loaders read differently: trt-minitron's own reader refuses it (a partial
        rotary on an architecture transformers rotates whole but vLLM's model reads the field for, a sliding window
        one mask honours and another does not). Failures of the checkpoint, not bad input."""
        try:
            ModelConfig.from_hf(self.raw, "config.json")
        except ConfigError as e:
            return [f"config.json states what loaders do not compute alike: {e}"]
        return []

    def tensor_problems(self, expected: dict[str, TensorInfo], optional: set[str] = frozenset()) -> list[str]:
        """What the stored tensors contradict: a name missing (unless `optional`), one nobody reads, a shape or
        dtype other than `expected` says."""
        problems = [f"missing tensor {n}" for n in expected if n not in self.infos and n not in optional]
        for name, info in self.infos.items():
            want = expected.get(name)
            if want is None:
                if not name.endswith(self.arch.ignore_suffixes):
                    why = ("config.json ties it to the embedding, so loaders ignore it" if name == "lm_head.weight"
                           and self.tied else "transformers reads no such tensor")
                    problems.append(f"unexpected tensor {name} ({why})")
            elif (info.shape, info.dtype) != (want.shape, want.dtype):
                problems.append(f"{name} is {dtype_name(info.dtype)}{list(info.shape)}, config.json implies "
                                f"{dtype_name(want.dtype)}{list(want.shape)}")
        return problems

    def describe(self) -> str:
        return f"{self.arch.hf_architecture}, {dtype_name(self.dtype)}"
