"""Progress of a layer-by-layer `quantize` on stderr: a bar on a terminal, one line per layer otherwise.

The bar shows layer i/N, the calibration batches run through the current layer (AWQ runs several passes),
elapsed time and the time left, estimated from the layers this run has finished. Without a terminal (a log,
CI) each finished layer prints one line with the same facts.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LayerProgress:
    """Call `start_layer(i)`, `batch()` per calibration batch, `finish_layer(i)`; `phase(text)` for later steps."""

    def __init__(self, num_layers: int, first: int, batches: int, stream=None):
        self.num_layers, self.first, self.batches = num_layers, first, batches
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.layer_t0 = self.t0
        self.runs = 0  # calibration batches through the current layer
        self._bar = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[batches]}"),
                                 TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), transient=True,
                                 console=Console(file=self.stream))
            self._task = self._bar.add_task("", total=num_layers, completed=first, batches="", eta="?")
            self._bar.start()

    def eta(self, done: int) -> float | None:
        """Seconds left after `done` layers, from this run's average; None before its first layer."""
        finished = done - self.first
        if finished <= 0:
            return None
        return (time.perf_counter() - self.t0) / finished * (self.num_layers - done)

    def start_layer(self, index: int) -> None:
        self.layer_t0, self.runs = time.perf_counter(), 0
        self._update(index, f"layer {index + 1}/{self.num_layers}: calibrating")

    def batch(self) -> None:
        self.runs += 1
        if self._bar is not None:
            passes, n = divmod(self.runs - 1, self.batches)
            self._bar.update(self._task, batches=f"batch {n + 1}/{self.batches}" + (f" (pass {passes + 1})" if passes
                                                                                     else ""))

    def phase(self, text: str, index: int | None = None) -> None:
        """What happens now (`index`: the layer it concerns)."""
        self._update(index, text if index is None else f"layer {index + 1}/{self.num_layers}: {text}")

    def finish_layer(self, index: int) -> None:
        done = index + 1
        eta = self.eta(done)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, eta=_clock(eta) if eta is not None else "?")
            return
        passes = -(-self.runs // self.batches) if self.batches else 0
        print(f"layer {done}/{self.num_layers}: {self.runs} calibration batches ({passes} pass"
              f"{'es' if passes != 1 else ''}) in {time.perf_counter() - self.layer_t0:.1f} s, elapsed "
              f"{_clock(time.perf_counter() - self.t0)}, ETA {_clock(eta) if eta is not None else '?'}",
              file=self.stream, flush=True)

    def _update(self, index: int | None, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text, batches="")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
