"""Quantized checkpoints: `trt-minitron quantize` (NVIDIA ModelOpt) and reading them back without ModelOpt.

Modules (only modelopt_run.py and teacher.py's callers need ModelOpt installed):
  formats.py      one class per quant_algo: tensors of a quantized linear, exact dequantization -> QuantLinear;
                  KVQuant for the FP8 KV cache; cat_rows / cat_cols merge tensor-parallel ranks
  checkpoint.py   QuantSpec.from_config(config.json) -> .linear(rank_tensors, prefix), .kv_quant(...);
                  RankTensors (a rank file read lazily)
  calib.py        CNN/DailyMail calibration articles -> padding-free token batches
  modelopt_run.py load with transformers, mtq.quantize, ModelOpt's TensorRT-LLM / unified HF exporters
  teacher.py      per-layer, teacher-forced conversion check against ModelOpt's fake-quant model
  assemble.py     the output checkpoint: our config.json and shared tensors + ModelOpt's quantized linears
  quantize.py     the command: options, validation, atomic output, report sidecar, closing line
"""
