"""Quantized checkpoints: `trt-minitron quantize` (NVIDIA ModelOpt) and reading them back without ModelOpt.

Modules (reading a quantized checkpoint back -- formats, checkpoint -- needs no ModelOpt; quantize does):
  formats.py      one class per quant_algo: tensors of a quantized linear, exact dequantization -> QuantLinear;
                  KVQuant for the FP8 KV cache; cat_rows / cat_cols merge tensor-parallel ranks
  checkpoint.py   QuantSpec.from_config(config.json) -> .linear(rank_tensors, prefix), .kv_quant(...);
                  RankTensors (a rank file read lazily)
  calib.py        CNN/DailyMail calibration articles -> padding-free token batches (+ which rows, a digest)
  modelopt_run.py mtq.quantize, ModelOpt's TensorRT-LLM / unified HF exporters, pre-quant scales
  hf_model.py     transformers models from our ModelConfig and any Source: the whole model, a one-layer shell
  layerwise.py    layer-by-layer calibration: ModelOpt on one layer at a time, fed captured activations
                  (the reusable library: a source and a recipe -> each layer calibrated, its quantizer state)
  layer_export.py one calibrated layer through ModelOpt's exporters (TensorRT-LLM, unified HF)
  layer_store.py  finished layers on disk until the checkpoint is written; --resume's state
  by_layer.py     quantize's default path: calibrate, export, check and store each layer, then assemble
  progress.py     per-layer progress (a bar on a terminal, a line per layer otherwise)
  teacher.py      per-layer, teacher-forced conversion check against ModelOpt's fake-quant model
  assemble.py     the output checkpoint: our config.json and shared tensors + ModelOpt's quantized linears
  hf_checkpoint.py the unified HF output of a layer-by-layer run
  quantize.py     the command: options, validation, tokenizer, atomic output, report, closing line
"""
