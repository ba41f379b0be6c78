"""trt-minitron: Minitron-family checkpoints to verified TensorRT-LLM checkpoints and engines."""

__version__ = "0.1.0"
