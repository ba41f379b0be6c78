"""`verify`: a checkpoint vs the source (transformers), judged against the source rounded as export rounds it,
layer by layer (default) or whole models. The checkpoint side: a TensorRT-LLM checkpoint through trt-minitron's
reference model (layerwise.TrtSide), a Hugging Face folder through transformers' modules built from its own
config.json (hf_side.py); quantized ones of both formats against ModelOpt (quantized.py, hf_quantized.py)."""

from .criterion import Check, LogitReport, VerifyResult
from .run import DEFAULT_PROMPT, match_reference, prompt_ids, run_verify

__all__ = ["Check", "DEFAULT_PROMPT", "LogitReport", "VerifyResult", "match_reference", "prompt_ids", "run_verify"]
