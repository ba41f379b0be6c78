"""`trt-minitron verify` (run.py: run_verify): a checkpoint against its source, judged by criterion.py against the
source rounded as export rounds it, layer by layer (layerwise.py) or whole (full.py). The checkpoint side: a
TensorRT-LLM checkpoint through trt-minitron's reference model (layerwise.TrtSide), a Hugging Face folder through
transformers' modules built from its own config.json (hf_side.py); quantized ones of both formats against ModelOpt's
fake quantization (quantized.py, hf_quantized.py, divergence.py). Whether the reference fits the checkpoint:
matching.py; the source through transformers' own modules: source_side.py."""
