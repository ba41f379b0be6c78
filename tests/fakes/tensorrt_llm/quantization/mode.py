"""QuantAlgo names and the QuantMode facts the loader needs, from tensorrt_llm/quantization/mode.py (index file id
472971060): from_quant_algo maps W4A16_AWQ and W4A8_AWQ to int4 weight-only per-group modes, W8A8_SQ_PER_CHANNEL to
SmoothQuant per channel (not in W8A8_SQ_PLUGIN_LIST, so the out-of-the-box Int8SmoothQuant layers), FP8 to FP8 QDQ;
kv_cache_quant_algo FP8 sets the FP8 KV cache."""


class QuantAlgo:
    FP8 = "FP8"
    W8A8_SQ_PER_CHANNEL = "W8A8_SQ_PER_CHANNEL"
    W4A16_AWQ = "W4A16_AWQ"
    W4A8_AWQ = "W4A8_AWQ"
    NVFP4 = "NVFP4"


MODELED = (QuantAlgo.FP8, QuantAlgo.W8A8_SQ_PER_CHANNEL, QuantAlgo.W4A16_AWQ, QuantAlgo.W4A8_AWQ)
KV_CACHE_QUANT_ALGO_LIST = (QuantAlgo.FP8, "INT8", QuantAlgo.NVFP4)
