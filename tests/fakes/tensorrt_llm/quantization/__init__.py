"""tensorrt_llm.quantization as far as loading ModelOpt's quantized checkpoints goes: the quantized linear layers'
parameter trees (layers.py), quantize() swapping them into a model (quantize.py), the QuantAlgo names (mode.py)."""

from .mode import QuantAlgo  # noqa: F401
