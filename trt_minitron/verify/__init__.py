"""`trt-minitron verify` (run.py: run_verify): the checkpoint against its source, layer by layer (layerwise.py)
or whole (full.py), judged by criterion.py; quantized checkpoints against ModelOpt's fake quantization
(quantized.py, divergence.py). source_side.py runs the source through transformers' own modules."""
