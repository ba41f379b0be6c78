"""`trt-minitron export`."""

from pathlib import Path

import typer

from ..options import ExportOptions

_D = ExportOptions  # defaults live on the options dataclass only


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        src: str = typer.Argument(..., help="HF folder, .gguf file, .nemo file or folder, or hub id org/name"),
        output: Path = typer.Option(..., "--output", "-o", help="folder to create"),
        dtype: str = typer.Option(_D.dtype, help="bfloat16 | float16 | float32"),
        tp: int = typer.Option(_D.tp, "--tp", help="tensor-parallel size"),
        pp: int = typer.Option(_D.pp, "--pp", help="pipeline-parallel size"),
        format: str = typer.Option(_D.format, "--format", help="trtllm (TensorRT-LLM checkpoint) | hf"),
        overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="replace an existing output folder"),
        dry_run: bool = typer.Option(_D.dry_run, "--dry-run", help="print config.json and every tensor; write nothing"),
    ) -> None:
        """Convert a checkpoint to a TensorRT-LLM checkpoint (config.json + rank*.safetensors), streaming."""
        from ..export.run import run_export

        run_export(ExportOptions(src=src, output=output, dtype=dtype, tp=tp, pp=pp, overwrite=overwrite,
                                 dry_run=dry_run, format=format))
