"""`trt-minitron` entry point: one Typer app, one module per command under trt_minitron.commands."""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import TrtMinitronError

COMMANDS = ("export", "verify", "build", "generate", "summarize", "quantize")

app = typer.Typer(
    name="trt-minitron",
    help="Minitron-family checkpoints (.nemo, Hugging Face, GGUF) -> verified TensorRT-LLM checkpoints, "
    "engines and CNN/DailyMail benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Keep `trt-minitron <command>` a command group even while one command is registered."""


for _name in COMMANDS:
    importlib.import_module(f"{__package__}.commands.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and a non-zero exit code."""
    # Standalone mode lets click/typer report usage errors itself (exit 2) and end with SystemExit.
    try:
        app(args=argv, prog_name="trt-minitron", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except TrtMinitronError as e:
        print(f"trt-minitron: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("trt-minitron: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
