"""`trt-minitron quantize`."""

from pathlib import Path

import typer

from ..options import CalibSettings, QuantizeOptions

_C, _D = CalibSettings, QuantizeOptions  # defaults live on the options dataclasses only


def register(app: typer.Typer) -> None:
    @app.command("quantize", help=(
        "Quantize with NVIDIA ModelOpt, calibrated on CNN/DailyMail, and check every layer against ModelOpt.\n\n"
        "Layer by layer (default): each decoder layer is read from the source when its turn comes, calibrated by "
        "ModelOpt on the activations entering it, exported and checked, and written before the next is read. Peak "
        "memory ~ one layer x 2 (float32 on CPU, bfloat16 on CUDA, plus its exported copy) + calibration "
        "activations x 2 (--calib-size x --calib-max-len x hidden x 4 bytes each) + 64 MB of embedding rows, "
        "whatever the depth: measured 2.5-2.7 GiB over the 0.6 GiB of libraries for Minitron-8B at 2 to 32 layers "
        "with 8 x 128 tokens (the default 512 x 512: up to 8.6 GB of activations). --whole-model holds the whole "
        "model instead (float32 on CPU: 4 bytes x parameters). INT4-AWQ calibration runs each layer many times "
        "(about 20x a forward pass on CPU). Needs the quant extra: pip install 'trt-minitron\\[quant]'."))
    def quantize(
        src: str = typer.Argument(..., help="HF folder, .gguf file, .nemo file or folder, or hub id org/name"),
        output: Path = typer.Option(..., "--output", "-o", help="folder to create"),
        qformat: str = typer.Option(..., "--qformat", help="fp8 | int8_sq | int4_awq | w4a8_awq | nvfp4 (CUDA only)"),
        group_size: int = typer.Option(_D.group_size, "--group-size", help="int4_awq / w4a8_awq: input channels per INT4 "
                                       "scale, 128 (default) or 64 (for widths like SmolLM2's 576)"),
        kv_cache_dtype: str = typer.Option(_D.kv_cache_dtype, "--kv-cache-dtype", help="fp8: also quantize the KV cache"),
        calib_dataset: str = typer.Option(_C.dataset, "--calib-dataset", help="cnn_dailymail (the hub's train "
                                          "split) or a .jsonl/.json/.parquet file as summarize's --dataset-file "
                                          "(records with article and highlights)"),
        calib_size: int = typer.Option(_C.size, "--calib-size", help="calibration articles"),
        calib_max_len: int = typer.Option(_C.max_len, "--calib-max-len", help="tokens kept per article"),
        batch_size: int = typer.Option(_C.batch_size, "--batch-size", help="articles per calibration forward"),
        tp: int = typer.Option(_D.tp, "--tp", help="tensor-parallel size of the written checkpoint"),
        pp: int = typer.Option(_D.pp, "--pp", help="pipeline-parallel size of the written checkpoint"),
        format: str = typer.Option(_D.format, "--format", help="trtllm (TensorRT-LLM checkpoint) | hf (ModelOpt's "
                                   "unified HF checkpoint, for TensorRT-LLM's PyTorch backend and vLLM)"),
        dtype: str = typer.Option(_D.dtype, "--dtype", help="bfloat16 | float16: unquantized tensors and "
                                  "pre-quant scales"),
        device: str = typer.Option(_D.device, "--device", help="auto | cpu | cuda: where calibration runs"),
        overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="replace an existing output folder"),
        tokenizer: Path = typer.Option(_D.tokenizer, "--tokenizer", help="folder with the model's tokenizer files, "
                                       "for sources that carry none (calibration needs text); also copied to the "
                                       "output"),
        resume: bool = typer.Option(_D.resume, "--resume", help="keep finished layers in .OUTPUT.quantize-resume "
                                    "beside the output if the run stops, and continue from them when rerun with "
                                    "the same source and options (a mismatch is refused)"),
        whole_model: bool = typer.Option(_D.whole_model, "--whole-model", help="calibrate the whole model at once "
                                         "(the earlier path, kept for comparison; memory: the whole model)"),
    ) -> None:
        """`trt-minitron quantize` (help text above)."""
        from ..quantize.run import run_quantize

        run_quantize(QuantizeOptions(
            src=src, output=output, qformat=qformat, group_size=group_size, kv_cache_dtype=kv_cache_dtype,
            calib=CalibSettings(dataset=calib_dataset, size=calib_size, max_len=calib_max_len, batch_size=batch_size),
            tp=tp, pp=pp, format=format, dtype=dtype, device=device, overwrite=overwrite, tokenizer=tokenizer,
            resume=resume, whole_model=whole_model))
