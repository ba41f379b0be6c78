"""`trt-minitron` entry point: one Typer app, one module per command under trt_minitron.commands.

The single error path: a TrtMinitronError (bad input or environment) is one line on stderr and exit 2;
exit 1 is left to verify/accuracy failures; SIGINT/SIGTERM are one line and 130/143 after cleanup;
anything else is a bug: one "internal error" line, exit 70, and the traceback only with --debug or
TRT_MINITRON_DEBUG=1.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback

import typer

try:  # typer >= 0.22 ships its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from .errors import Interrupted, TrtMinitronError, one_line
from .interrupts import signals_raise

COMMANDS = ("export", "verify", "build", "generate", "summarize", "serve", "bench", "quantize")
PROG = "trt-minitron"
INTERNAL_ERROR_EXIT = 70  # sysexits EX_SOFTWARE: distinct from 1 (verify failed) and 2 (user error)
# OSErrors that describe the machine or the user's paths, not a bug.
_ENVIRONMENT_ERRNOS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                       errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EFBIG, errno.ELOOP, errno.EMFILE)

app = typer.Typer(
    name=PROG,
    help="Minitron-family checkpoints (.nemo, Hugging Face, GGUF) -> verified TensorRT-LLM checkpoints, "
    "engines and CNN/DailyMail benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the traceback of internal errors "
                                                            "(also TRT_MINITRON_DEBUG=1).")) -> None:
    """Keep `trt-minitron <command>` a command group even while one command is registered."""
    _state["debug"] = _state["debug"] or debug


for _name in COMMANDS:
    importlib.import_module(f"{__package__}.commands.{_name}").register(app)


def _error(message: object) -> None:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (see the module docstring for the codes)."""
    _state["debug"] = os.environ.get("TRT_MINITRON_DEBUG", "").lower() in ("1", "true", "yes", "on")
    try:
        with signals_raise():
            rv = app(args=argv, prog_name=PROG, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except click_exceptions.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else str(e), file=sys.stderr)
        return 2
    except click_exceptions.ClickException as e:  # usage errors: bad flag, missing argument, bad value
        hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
        _error(e.format_message() + hint)
        return e.exit_code
    except (getattr(click_exceptions, "Abort", typer.Abort), typer.Abort):
        print(f"{PROG}: aborted", file=sys.stderr)
        return 1
    except TrtMinitronError as e:
        _error(e)
        return e.exit_code
    except Interrupted as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # raised where our handler was not installed (another thread)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(e)
        where = f": {e.filename}" if e.filename is not None else ""
        _error(f"{e.strerror or e}{where}")
        return 2
    except Exception as e:
        return _internal_error(e)


def _internal_error(e: BaseException) -> int:
    if _state["debug"]:
        traceback.print_exception(e)
    hint = "" if _state["debug"] else " (rerun with --debug or TRT_MINITRON_DEBUG=1 for the traceback)"
    print(f"{PROG}: internal error, please report it: {type(e).__name__}: {one_line(e, 300)}{hint}",
          file=sys.stderr)
    return INTERNAL_ERROR_EXIT


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
