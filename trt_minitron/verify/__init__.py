"""`verify`: the TensorRT-LLM checkpoint (trt-minitron's reference model) vs the source (transformers),
judged against the source rounded as export rounds it; layer by layer (default) or whole models."""

from .criterion import Check, LogitReport, VerifyResult
from .run import DEFAULT_PROMPT, match_reference, prompt_ids, run_verify

__all__ = ["Check", "DEFAULT_PROMPT", "LogitReport", "VerifyResult", "match_reference", "prompt_ids", "run_verify"]
