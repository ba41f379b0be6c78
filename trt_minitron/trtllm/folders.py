"""What a model folder is to TensorRT-LLM: an engine folder (`build`'s output, the engine path) or a Hugging Face /
ModelOpt unified folder (the LLM API of the PyTorch backend). Asked by `serve` and by the trtllm backend."""

from __future__ import annotations

from pathlib import Path

from ..archs.config import load_json
from ..errors import ConfigError

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def model_kind(path: Path) -> str:
    """'engine' (config.json + rank*.engine) or 'hf' (config.json + weights); anything else is one clear error."""
    if path.is_file() and path.suffix == ".gguf":
        raise ConfigError(f"{path} is a GGUF file; transformers serve cannot load a .gguf path and trtllm-serve "
                          f"needs a folder: export it first, trt-minitron export {path} --format hf -o DIR")
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; serve takes an engine folder (from `trt-minitron build`) or a "
                          "Hugging Face folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{path} has no config.json: neither an engine folder nor a Hugging Face folder")
    if list(path.glob("rank*.engine")):
        return "engine"
    cfg = load_json(cfg_path)
    if list(path.glob("rank*.safetensors")) or "architecture" in cfg:
        raise ConfigError(f"{path} is a TensorRT-LLM checkpoint, not an engine: build it (trt-minitron build "
                          f"{path} -o engines/NAME), or export the source with --format hf to serve it with PyTorch")
    if not any((path / w).is_file() for w in HF_WEIGHTS):
        raise ConfigError(f"{path} has a config.json but no weights ({', '.join(HF_WEIGHTS)}) and no rank*.engine")
    return "hf"
