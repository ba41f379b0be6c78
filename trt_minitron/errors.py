"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class TrtMinitronError(Exception):
    """Base class for errors caused by input, environment or configuration, not by a bug."""

    exit_code = 2


class ConfigError(TrtMinitronError):
    """A config.json / model_config.yaml that is missing, unreadable or unsupported."""


class CheckpointError(TrtMinitronError):
    """Weights that are missing, malformed, or contradict the config."""


class MissingDependencyError(TrtMinitronError):
    """An optional dependency (tensorrt_llm, CUDA, gguf, datasets, ...) is not available."""


class OutputExistsError(TrtMinitronError):
    """The output path exists and --overwrite was not given."""


class VerificationFailed(TrtMinitronError):
    """verify found logits outside tolerance."""

    exit_code = 1
