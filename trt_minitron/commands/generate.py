"""`trt-minitron generate` (placeholder until its module lands; see the issue tracker)."""

import typer


def register(app: typer.Typer) -> None:
    pass
