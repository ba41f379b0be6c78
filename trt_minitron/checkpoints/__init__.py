"""Reading back what trt-minitron writes: a TensorRT-LLM checkpoint folder (trtllm.py: config.json, the tensors
every rank file must hold, ranks merged), the quantized-checkpoint format (quant_formats.py: one class per
quant_algo, exact dequantization; quantized.py: QuantSpec from config.json, rank tensors, the pre-quant-scale
sidecar) and the reference model that computes what TensorRT-LLM computes (reference.py)."""
