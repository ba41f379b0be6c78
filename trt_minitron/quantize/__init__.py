"""`trt-minitron quantize` (NVIDIA ModelOpt). The format it writes, read back without ModelOpt, is
checkpoints/quant_formats.py and checkpoints/quantized.py.

Modules (ModelOpt needed by modelopt_run.py, layerwise.py, layer_export.py, recompute.py and teacher.py's callers):
  calib.py         CNN/DailyMail calibration articles -> padding-free token batches (+ which rows, a digest)
  modelopt_run.py  mtq.quantize, ModelOpt's TensorRT-LLM / unified HF exporters, pre-quant scales
  hf_model.py      transformers models from our ModelConfig and any Source: the whole model, a one-layer shell
  layerwise.py     layer-by-layer calibration: ModelOpt on one layer at a time, fed captured activations
                   (the reusable library: a source and a recipe -> each layer calibrated, its quantizer state)
  layer_export.py  one calibrated layer through ModelOpt's exporters (TensorRT-LLM, unified HF)
  layer_store.py   finished layers on disk until the checkpoint is written; --resume's state
  by_layer.py      quantize's default path: calibrate, export, check and store each layer, then assemble
  progress.py      per-layer progress (a bar on a terminal, a line per layer otherwise)
  teacher.py       per-layer, teacher-forced conversion check against ModelOpt's fake-quant model
  recompute.py     ModelOpt's fake quantization of one linear rebuilt from source weights and a checkpoint's
                   scales (verify's teacher)
  assemble.py      the output checkpoint: our config.json and shared tensors + ModelOpt's quantized linears
  hf_checkpoint.py the unified HF output of a layer-by-layer run
  run.py           the command: options, validation, tokenizer, atomic output, report sidecar, closing line
"""
