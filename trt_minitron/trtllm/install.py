"""Which TensorRT-LLM generation is installed, read from its files without importing it.

Two generations take different artefacts (docs/versions.md):
- the engine path (`trtllm-build`, `tensorrt_llm.builder`, the ModelRunner runtimes) exists up to the 1.2 line;
  PR #15918 ("BREAKING: Remove python modules ... for legacy TensorRT backend") deleted `builder.py` together
  with `runtime/model_runner{,_cpp}.py` and `commands/build.py`, so `builder.py` marks the engine path;
- the LLM API of the PyTorch backend (`tensorrt_llm/llmapi/llm.py`, `tensorrt_llm.LLM`) loads Hugging Face and
  ModelOpt unified folders; the PyTorch backend is the default of `LLM` from 1.0 (docs/source/release-notes.md
  @001eaec, "TensorRT-LLM Release 1.0"), so an older `LLM` would build an engine instead.
Importing tensorrt_llm initialises CUDA and takes seconds; a refusal must be immediate, so this module only looks
at the package's files (importlib finds the package without executing it).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDependencyError

ENGINE_IMAGE = "docker/Dockerfile (nvcr.io/nvidia/tensorrt-llm/release:1.2.1)"
HF_IMAGE = "docker/Dockerfile.hf"
NOT_INSTALLED = ("tensorrt_llm is not importable here; run inside a TensorRT-LLM container (see docker/: "
                 f"{ENGINE_IMAGE} for engines, {HF_IMAGE} for Hugging Face folders) or pip install tensorrt-llm "
                 "on a CUDA machine")


@dataclass(frozen=True)
class TrtllmInstall:
    """What the importable tensorrt_llm package can run."""

    version: str
    location: Path
    engine_path: bool  # tensorrt_llm/builder.py: trtllm-build, engines, ModelRunner(Cpp)
    llm_api: bool  # tensorrt_llm/llmapi/llm.py on a version whose LLM defaults to the PyTorch backend (>= 1.0)

    def engine_refusal(self, what: str) -> str:
        """The one line for an engine request on a TensorRT-LLM without the engine path."""
        return (f"{what} needs the TensorRT engine path, which tensorrt_llm {self.version} does not have (removed "
                f"after 1.2.x: no trtllm-build, no engine runtime); engines run on 1.2.x, the image {ENGINE_IMAGE}; "
                f"with this version use the Hugging Face route instead: `trt-minitron export SRC --format hf -o DIR` "
                f"(or `quantize ... --format hf`), then `serve DIR` / `--backend trtllm DIR` (docs/versions.md)")

    def hf_refusal(self, what: str) -> str:
        """The one line for a Hugging Face folder on a TensorRT-LLM without the PyTorch LLM API."""
        return (f"{what} needs the LLM API of the PyTorch backend (tensorrt_llm >= 1.0), which tensorrt_llm "
                f"{self.version} does not have; run it in {HF_IMAGE}, or build an engine for this version: "
                f"`trt-minitron export SRC -o CKPT` then `trt-minitron build CKPT -o ENGINE` (docs/versions.md)")


def _submodule(paths: list[str], dotted: str) -> bool:
    """Whether `dotted` (e.g. "llmapi.llm") exists under the package paths, found without importing anything."""
    head, _, rest = dotted.partition(".")
    spec = importlib.machinery.PathFinder.find_spec(head, paths)
    if spec is None:
        return False
    if not rest:
        return True
    return bool(spec.submodule_search_locations) and _submodule(list(spec.submodule_search_locations), rest)


def _version(paths: list[str]) -> str:
    for p in paths:
        f = Path(p) / "version.py"
        if f.is_file():
            m = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", f.read_text(errors="replace"))
            if m:
                return m.group(1)
    return "unknown"


def version_at_least(version: str, major: int, minor: int = 0) -> bool:
    """`version`'s leading major.minor is >= (major, minor); an unreadable version counts as new."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return m is None or (int(m.group(1)), int(m.group(2))) >= (major, minor)


def detect() -> TrtllmInstall | None:
    """The importable tensorrt_llm's version and generation, or None when there is none."""
    try:
        spec = importlib.util.find_spec("tensorrt_llm")
    except (ImportError, ValueError):  # a None entry in sys.modules (tests) or a broken package
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    paths = list(spec.submodule_search_locations)
    version = _version(paths)
    return TrtllmInstall(version=version, location=Path(paths[0]), engine_path=_submodule(paths, "builder"),
                         llm_api=_submodule(paths, "llmapi.llm") and version_at_least(version, 1))


def require(what: str, *, engine: bool) -> TrtllmInstall:
    """The installed TensorRT-LLM if it can run `what` (an engine when `engine`, else a Hugging Face folder),
    else MissingDependencyError with the one line naming the version and the way out."""
    found = detect()
    if found is None:
        raise MissingDependencyError(NOT_INSTALLED)
    if engine and not found.engine_path:
        raise MissingDependencyError(found.engine_refusal(what))
    if not engine and not found.llm_api:
        raise MissingDependencyError(found.hf_refusal(what))
    return found
