"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

import re
import signal


class TrtMinitronError(Exception):
    """Base class for errors caused by input, environment or configuration, not by a bug."""

    exit_code = 2


class ConfigError(TrtMinitronError):
    """A config.json / model_config.yaml that is missing, unreadable or unsupported."""


class CheckpointError(TrtMinitronError):
    """Weights that are missing, malformed, or contradict the config."""


class MissingDependencyError(TrtMinitronError):
    """An optional dependency (tensorrt_llm, CUDA, gguf, datasets, ...) is not available."""


class DatasetError(TrtMinitronError):
    """A dataset file that is missing, empty, not JSON/parquet, or lacks article/highlights."""


class OutputError(TrtMinitronError):
    """An output path that is unsafe to write or replace, or that cannot be written (read-only, disk full)."""


class OutputExistsError(OutputError):
    """The output path exists and --overwrite was not given."""


class DiskFullError(TrtMinitronError):
    """Not enough free space for the output or for unpacking an archive."""


class VerificationFailed(TrtMinitronError):
    """verify found logits outside tolerance."""

    exit_code = 1


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: raised from the signal handler so that `finally` blocks clean up.

    A BaseException, like KeyboardInterrupt, so that `except Exception` never swallows it.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; temporary files removed")


def one_line(text: object, limit: int = 600) -> str:
    """A message on one line: newlines and runs of spaces collapsed, very long texts shortened."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def torch_load_reason(e: BaseException) -> str:
    """The useful sentence of a torch.load failure (its weights_only message spans a dozen lines)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"WeightsUnpickler error: (.*?)(?:\. |\.?$|\n)", text)
    return one_line(m.group(1) if m else text, 300)
