"""`trt-minitron quantize` (NVIDIA ModelOpt). The format it writes, read back without ModelOpt, is
checkpoints/quant_formats.py and checkpoints/quantized.py.

Modules (ModelOpt needed by modelopt_run.py, recompute.py and teacher.py's callers):
  calib.py        CNN/DailyMail calibration articles -> padding-free token batches
  modelopt_run.py load with transformers, mtq.quantize, ModelOpt's TensorRT-LLM / unified HF exporters
  teacher.py      per-layer, teacher-forced conversion check against ModelOpt's fake-quant model
  recompute.py    ModelOpt's fake quantization of one linear rebuilt from source weights and a checkpoint's
                  scales (verify's teacher)
  assemble.py     the output checkpoint: our config.json and shared tensors + ModelOpt's quantized linears
  run.py          the command: options, validation, atomic output, report sidecar, closing line
"""
