"""Write every rank file of an export in one pass over the source, at close to copy speed.

Each output tensor is a Layout (row blocks of source tensors, cast). The rank files are opened
together, their headers written first, and then each source tensor is visited once, in file order,
for all ranks:
- unchanged rows whose source and destination offsets agree modulo the page size go file to file in one
  copy thread per rank file, so the rank files of tp > 1 fill side by side while the main thread gathers and
  converts: through the thread's L2-sized buffer (preadv, check, pwrite: at tp 1 as fast as the kernel's copy
  here) the first time the rows are written, with `copy_file_range` (in the kernel) when another rank's copy
  already checked them;
- everything else goes row block by row block (8 MiB), each block mapped once for every rank that
  needs rows or columns of it: unchanged rows are written straight from the mapping, an unchanged
  column block is gathered from it by `pwritev`, casts and +1 are converted into one reused buffer.
  Memory stays at a block or two whatever the dtype.
Every byte written is checked for NaN/Inf (finite.py: exponent bits, numpy) where it passes: unchanged bytes
in the copy threads' buffers or in the mapped row blocks, each source row once; a cast
or +1 on its output (non-finite there: a NaN/Inf in the source, or a value the target dtype cannot hold); a
tensor in memory (a source without a file, a rule without a layout) when it is read. Any of them is refused,
naming the tensor, before anything is renamed into place.
torch is imported only for the first conversion (a cast, +1, a tensor made in memory, a source without
a file): an export that only moves bytes runs on os calls and numpy's check alone (see tests/test_startup.py).
Tensors are placed in each rank file in source order and the header padded so that most of them
are page-congruent with their source (a mis-congruent `copy_file_range` ran at under half the speed
here: benchmarks/README.md).
"""
from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from ..errors import CheckpointError
from ..tensors.dtypes import as_torch, dtype_name
from ..tensors.finite import CHUNK_BYTES, Checker, NonFinite, refusal, require_finite, scannable, tensor_has_nonfinite
from ..tensors.info import TensorInfo, infos_without_torch
from ..tensors.layout import Block, Layout, block_trailing
from ..tensors.stwriter import PAGE, header_bytes

if TYPE_CHECKING:
    import torch

BLOCK_BYTES = 8 << 20  # source bytes per row block
IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16
MIN_IOV_BYTES = 1024  # narrower column slices: a torch copy (plain slices without torch), not an iovec per row
COPY_BYTES = 256 << 20  # bytes per copy_file_range call: progress and SIGINT latency
# copy_file_range calls in flight at once (they release the GIL), at most one per rank file: tp > 1 fills
# its rank files side by side (tp 2, 2.27 GB: 1.46 -> 0.87 s), while two copies into one file only contend
# (tp 1, 4.37 GB: 1.82 -> 2.07 s). Row blocks that need Python (gathers, casts) go on in the main thread.
COPY_WORKERS = 2
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)

Progress = Callable[[int, int], None]  # (bytes written, tensors completed) since the last call


@dataclass(frozen=True)
class Written:
    bytes: int  # file sizes, headers included
    kernel_bytes: int  # tensor bytes moved file to file by copy_file_range
    copied_bytes: int  # tensor bytes moved file to file by the copy threads through their buffers (and checked)
    buffered_bytes: int  # tensor bytes written by the main thread (row blocks, casts, zero rows, tensors in memory)


@dataclass(frozen=True)
class OutTensor:
    """One tensor of a rank file: its Layout, or for a rule without one a function making it in memory."""

    name: str
    info: TensorInfo
    layout: Layout | None = None
    produce: Callable[[], torch.Tensor] | None = None


@dataclass(frozen=True)
class _Task:
    """One block of one output: where its rows go."""

    out: int  # index of the output tensor (for progress)
    fd: int
    dst: int  # absolute offset of the block's first row in the rank file
    block: Block
    layout: Layout
    row_bytes: int  # bytes of one output row of this block


@dataclass
class _Placement:
    tasks: dict[str, list[_Task]] = field(default_factory=dict)  # source tensor -> blocks read from it
    pads: list[tuple[int, int, int, int]] = field(default_factory=list)  # (out, fd, offset, bytes) of zero rows
    produced: list[tuple[int, int, int, OutTensor]] = field(default_factory=list)  # (out, fd, offset, tensor)
    sizes: dict[Path, int] = field(default_factory=dict)  # planned file sizes
    header_bytes: int = 0


def _direct(block: Block, layout: Layout, src: TensorInfo) -> bool:
    """Whether the block's bytes pass through unchanged (whole rows, same dtype, no +1)."""
    return block.cols is None and _unchanged(layout, src)


def _unchanged(layout: Layout, src: TensorInfo) -> bool:
    """Whether the layout keeps the source's bytes (same dtype, no +1)."""
    return not layout.plus_one and dtype_name(layout.dtype) == dtype_name(src.dtype)


def write_rank_files(source, files: Mapping[Path, list[OutTensor]], on_progress: Progress | None = None,
                     metadata: dict | None = None) -> Written:
    """Write each file of `files` (its tensors in any order; the file orders them) from `source`."""
    transfer = _Transfer(source, on_progress or (lambda _b, _t: None))
    if _torch_loaded():
        transfer.torch()
    try:
        return transfer.run(files, metadata)
    except NonFinite as e:
        raise CheckpointError(transfer.refusal(e.name)) from None
    finally:
        transfer.restore_threads()


class _Transfer:
    def __init__(self, source, on_progress: Progress):
        self.source = source
        self.description = getattr(source, "description", "the source")  # names the source in refusals
        self.infos: Mapping[str, TensorInfo] = infos_without_torch(source)
        self.progress = on_progress
        self.where: dict[str, tuple[Path, int] | None] = {}
        self.left: list[int] = []  # bytes still to write per output tensor
        self._out_fds: dict[Path, int] = {}
        self._src_fds: dict[Path, int] = {}
        self._buffers: dict[str, bytearray] = {}
        self._checkers: dict[str, Checker] = {}
        self.kernel_copy = hasattr(os, "copy_file_range")
        self.kernel_bytes = 0
        self.copied_bytes = 0
        self._lock = threading.Lock()  # progress counters, written from the copy workers too
        self._stop = threading.Event()  # set when the main thread fails: workers stop between calls
        self._writers: dict[int, ThreadPoolExecutor] = {}  # one per rank file: its copies in file order
        self._slots = threading.BoundedSemaphore(COPY_WORKERS)
        self._copies: list[tuple[Future, Path, _Task]] = []
        self._threads: int | None = None  # torch's thread count before this transfer set it to 1

    def torch(self):
        """torch, imported at the first conversion, set to one thread for this transfer (block copies are a
        few MiB: extra threads cost more than they give on a busy machine)."""
        import torch

        if self._threads is None:
            self._threads = torch.get_num_threads()
            torch.set_num_threads(1)
        return torch

    def restore_threads(self) -> None:
        if self._threads is not None:
            sys.modules["torch"].set_num_threads(self._threads)
            self._threads = None

    # --- planning --------------------------------------------------------------------------------
    def locate(self, name: str) -> tuple[Path, int] | None:
        """(file, byte offset) of a source tensor stored as-is in a file, else None."""
        if name not in self.where:
            file_range = getattr(self.source, "file_range", None)
            stream_rows = getattr(self.source, "stream_rows", None)
            if name not in self.infos:
                self.where[name] = None
            elif file_range is not None:  # no RowStream: its dtype would be torch's
                self.where[name] = file_range(name)
            else:
                stream = stream_rows(name) if stream_rows is not None else None
                self.where[name] = stream.file_range if stream is not None else None
        return self.where[name]

    def order(self, tensors: list[OutTensor]) -> list[OutTensor]:
        """Source order (by the first block), so offsets stay page-congruent; the rest keep plan order."""
        def key(i_t: tuple[int, OutTensor]):
            i, t = i_t
            at = self.locate(t.layout.blocks[0].name) if t.layout is not None else None
            return (0, str(at[0]), at[1], i) if at is not None else (1, "", 0, i)

        return [t for _i, t in sorted(enumerate(tensors), key=key)]

    def src_offset(self, b: Block) -> int | None:
        at = self.locate(b.name)
        if at is None:
            return None
        info = self.infos[b.name]
        return at[1] + b.start * _row_bytes(info)

    def header(self, tensors: list[OutTensor], metadata: dict | None) -> bytes:
        """The header, padded so that the data start makes the most unchanged bytes page-congruent."""
        weight: dict[int, int] = {}
        at = 0
        for t in tensors:
            for b, rel, row in self._blocks(t, at):
                s = self.src_offset(b)
                if s is not None and _direct(b, t.layout, self.infos[b.name]):
                    weight[(s - rel) % PAGE] = weight.get((s - rel) % PAGE, 0) + b.rows * row
            at += t.info.nbytes
        entries = [(t.name, t.info) for t in tensors]
        best = max((r for r in weight if r % 8 == 0), key=lambda r: weight[r], default=None)
        return header_bytes(entries, metadata, start_residue=best)

    def _blocks(self, t: OutTensor, at: int):
        """(block, offset of its first row, bytes per output row) of each block of `t` placed at `at`."""
        if t.layout is None:
            return
        for b in t.layout.blocks:
            row = _prod(block_trailing(b, self.infos)) * t.layout.dtype.itemsize
            yield b, at, row
            at += b.rows * row

    # --- writing ---------------------------------------------------------------------------------
    def run(self, files: Mapping[Path, list[OutTensor]], metadata: dict | None) -> Written:
        try:
            plan = self._open_and_place(files, metadata)
            self.progress(0, sum(1 for n in self.left if n == 0))
            try:
                for name in sorted(plan.tasks, key=self._source_key):
                    self._one_source(name, plan.tasks[name])
                refused = [(path, t) for future, path, t in self._copies if not future.result()]
            except BaseException:
                self._stop.set()
                raise
            finally:
                for writer in self._writers.values():
                    writer.shutdown(wait=True, cancel_futures=True)
            for path, t in refused:  # the kernel would not copy (another filesystem...): through the buffer
                self._row_blocks(t.block.name, self.infos[t.block.name], self.locate(t.block.name), [t])
            for out, fd, offset, n in plan.pads:
                _pwrite_all(fd, memoryview(bytes(n)), offset)
                self._done(out, n)
            for out, fd, offset, t in plan.produced:
                self._write_produced(out, fd, offset, t)
            if any(self.left):
                raise RuntimeError(f"{sum(1 for n in self.left if n)} planned tensors were not fully written")
            for path, expect in plan.sizes.items():
                if os.fstat(self._out_fds[path]).st_size != expect:
                    raise RuntimeError(f"{path}: {os.fstat(self._out_fds[path]).st_size} bytes, planned {expect}")
            total = sum(plan.sizes.values())
            moved = self.kernel_bytes + self.copied_bytes
            return Written(total, self.kernel_bytes, self.copied_bytes, total - plan.header_bytes - moved)
        finally:
            for fd in [*self._out_fds.values(), *self._src_fds.values()]:
                os.close(fd)
            self._out_fds.clear()
            self._src_fds.clear()

    def _open_and_place(self, files: Mapping[Path, list[OutTensor]], metadata: dict | None) -> _Placement:
        """Order each file's tensors, write its header, and note where every block of every tensor goes."""
        plan = _Placement()
        for path, tensors in files.items():
            tensors = self.order(tensors)
            head = self.header(tensors, metadata)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._out_fds[path] = fd
            _pwrite_all(fd, memoryview(head), 0)
            plan.header_bytes += len(head)
            at = len(head)
            for t in tensors:
                out = len(self.left)
                self.left.append(t.info.nbytes)
                if t.layout is None:
                    plan.produced.append((out, fd, at, t))
                else:
                    end = at
                    for b, first, row in self._blocks(t, at):
                        plan.tasks.setdefault(b.name, []).append(_Task(out, fd, first, b, t.layout, row))
                        end = first + b.rows * row
                    if t.layout.pad_rows:
                        plan.pads.append((out, fd, end, at + t.info.nbytes - end))
                at += t.info.nbytes
            plan.sizes[path] = at
        return plan

    def _source_key(self, name: str):
        at = self.locate(name)
        return (0, str(at[0]), at[1]) if at is not None else (1, "", 0)

    def _done(self, out: int, n: int) -> None:
        with self._lock:
            self.left[out] -= n
            self.progress(n, 1 if self.left[out] == 0 and n else 0)

    def _one_source(self, name: str, tasks: list[_Task]) -> None:
        """Every block of every rank that comes from source tensor `name`."""
        info = self.infos[name]
        at = self.locate(name)
        copies, buffered = [], []
        for t in tasks:
            direct = at is not None and _direct(t.block, t.layout, info) and self.kernel_copy
            (copies if direct and (self.src_offset(t.block) - t.dst) % PAGE == 0 else buffered).append(t)
        # Each unchanged source row is checked once: in the row blocks read for `buffered`, or by its first copy.
        checked = [(min(t.block.start for t in buffered), max(t.block.stop for t in buffered))] \
            if any(_unchanged(t.layout, info) for t in buffered) else []
        for t in copies:
            check = scannable(info.dtype) and not any(a <= t.block.start and t.block.stop <= b for a, b in checked)
            checked += [(t.block.start, t.block.stop)] if check else []
            writer = self._writers.get(t.fd) or self._writers.setdefault(
                t.fd, ThreadPoolExecutor(1, thread_name_prefix="trt-minitron-copy"))
            copy = self._checked_copy if check else self._kernel_copy
            self._copies.append((writer.submit(copy, at[0], self.src_offset(t.block), t), at[0], t))
        if buffered:
            self._row_blocks(name, info, at, buffered)

    def _kernel_copy(self, path: Path, src: int, t: _Task) -> bool:
        """The block file to file (in a copy worker); False when the kernel refuses before any byte moved."""
        n, done = t.block.rows * t.row_bytes, 0
        fd = self._source_fd(path)
        try:
            while done < n and not self._stop.is_set():
                step = min(COPY_BYTES, n - done)
                with self._slots:
                    got = os.copy_file_range(fd, t.fd, step, src + done, t.dst + done)
                if got == 0:
                    raise CheckpointError(f"{path}: unexpected end of file reading {t.block.name}")
                done += got
                with self._lock:
                    self.kernel_bytes += got
                self._done(t.out, got)
        except OSError as e:
            if e.errno not in _NO_KERNEL_COPY or done:
                raise
            self.kernel_copy = False  # another filesystem or no kernel support: later blocks go buffered
            return False
        return True

    def _checked_copy(self, path: Path, src: int, t: _Task) -> bool:
        """The block file to file through an L2-sized buffer (in a copy worker), each chunk checked for NaN/Inf
        before it is written."""
        info = self.infos[t.block.name]
        check, size = Checker(dtype_name(info.dtype)), info.dtype.itemsize
        buf = bytearray(CHUNK_BYTES - CHUNK_BYTES % size)
        view, fd = memoryview(buf), self._source_fd(path)
        n, done, unreported = t.block.rows * t.row_bytes, 0, 0
        while done < n and not self._stop.is_set():
            got = os.preadv(fd, [view[:min(len(buf), n - done)]], src + done)
            got -= got % size  # a read ending inside an element: its rest comes with the next one
            if got == 0:
                raise CheckpointError(f"{path}: unexpected end of file reading {t.block.name}")
            if check(view[:got]):
                raise NonFinite(t.block.name)
            _pwrite_all(t.fd, view[:got], t.dst + done)
            done += got
            unreported += got
            if unreported >= BLOCK_BYTES or done == n:  # progress per block, not per chunk
                with self._lock:
                    self.copied_bytes += unreported
                self._done(t.out, unreported)
                unreported = 0
        return True

    def _row_blocks(self, name: str, info: TensorInfo, at: tuple[Path, int] | None, tasks: list[_Task]) -> None:
        """Rows [lo:hi) needed by `tasks`, block by block (each block once for all of them); each task writes
        its part of every block: unchanged bytes straight from the block, the rest converted in a buffer."""
        lo, hi = min(t.block.start for t in tasks), max(t.block.stop for t in tasks)
        row = _row_bytes(info)
        if hi <= lo or row == 0:
            return
        whole = None
        if at is None:  # no file to map: one read of the rows, then the same blocks from memory
            self.torch()
            read = self.source.read(name, 0, lo, hi)
            if tensor_has_nonfinite(read):
                raise NonFinite(name)
            whole = _bytes(read)
        check = Checker(dtype_name(info.dtype)) if at is not None and scannable(info.dtype) and any(
            _unchanged(t.layout, info) for t in tasks) else None
        step = max(1, BLOCK_BYTES // row)
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            with self._mapped(at, name, a * row, (b - a) * row) if whole is None else \
                    _nullcontext(whole[(a - lo) * row:(b - lo) * row]) as rows:
                if check is not None and check(rows):  # casts: checked on their output
                    raise NonFinite(name)
                for t in tasks:
                    x, y = max(a, t.block.start), min(b, t.block.stop)
                    if x < y:
                        self._write_part(t, info, rows[(x - a) * row:(y - a) * row], x)

    @contextmanager
    def _mapped(self, at: tuple[Path, int], name: str, offset: int, n: int) -> Iterator[memoryview]:
        """Bytes [offset:offset+n) of a source tensor, mapped (pages already in the page cache are not copied;
        mapped only for this block, so RSS grows by one block at most)."""
        path, start = at
        fd = self._source_fd(path)
        begin = start + offset
        if os.fstat(fd).st_size < begin + n:  # a mapping past the end would be SIGBUS, not an error
            raise CheckpointError(f"{path}: unexpected end of file reading {name}")
        base = begin - begin % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(fd, begin - base + n, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                      prot=mmap.PROT_READ, offset=base)
        view = memoryview(m)
        try:
            yield view[begin - base:]
        finally:
            view.release()
            try:
                m.close()
            except BufferError:  # a view still held (an exception's traceback): unmapped when it goes
                pass

    def _write_part(self, t: _Task, info: TensorInfo, data: memoryview, first_row: int) -> None:
        """Rows from `first_row` of the block's source, as bytes of whole source rows, to the task's file."""
        rows = len(data) // _row_bytes(info)
        dst = t.dst + (first_row - t.block.start) * t.row_bytes
        same = _unchanged(t.layout, info)
        src_row = _row_bytes(info)
        c0 = t.block.cols[0] * (src_row // (info.shape[1] if len(info.shape) > 1 else 1)) if t.block.cols else 0
        if same and t.block.cols is None:
            _pwrite_all(t.fd, data, dst)
        elif same and t.row_bytes >= MIN_IOV_BYTES and hasattr(os, "pwritev"):  # a column block: gathered by the kernel
            parts = [data[i * src_row + c0:i * src_row + c0 + t.row_bytes] for i in range(rows)]
            for k in range(0, rows, IOV_MAX):
                dst += _pwritev_all(t.fd, parts[k:k + IOV_MAX], dst, min(IOV_MAX, rows - k) * t.row_bytes)
            del parts
        elif same and not _torch_loaded():  # narrow columns, and no torch to gather them: plain slices
            out_bytes = self._buffer("out", rows * t.row_bytes)
            _gather_columns(data, rows, src_row, c0, t.row_bytes, out_bytes)
            _pwrite_all(t.fd, out_bytes, dst)
        else:
            torch = self.torch()
            shape = info.shape or (1,)
            with warnings.catch_warnings():  # a read-only mapping: torch warns, but it is only read here
                warnings.simplefilter("ignore", UserWarning)
                part = torch.frombuffer(data, dtype=torch.uint8).view(as_torch(info.dtype)).view(rows, *shape[1:])
            if t.block.cols is not None:
                part = part.narrow(1, t.block.cols[0], t.block.cols[1] - t.block.cols[0])
            out_bytes = self._buffer("out", rows * t.row_bytes)
            out = torch.frombuffer(out_bytes, dtype=torch.uint8).view(as_torch(t.layout.dtype)).view(part.shape)
            out.copy_(part.float() + 1.0 if t.layout.plus_one else part)
            del part, out
            if self._checker(dtype_name(t.layout.dtype))(out_bytes):  # a NaN/Inf in the source, or an overflow
                raise CheckpointError(self.refusal(t.block.name, t.layout.dtype))
            _pwrite_all(t.fd, out_bytes, dst)
        self._done(t.out, rows * t.row_bytes)

    def _checker(self, dtype: str) -> Checker:
        """One Checker per output dtype for the main thread's casts (its scratch array reused)."""
        if dtype not in self._checkers:
            self._checkers[dtype] = Checker(dtype)
        return self._checkers[dtype]

    def refusal(self, name: str, target=None) -> str:
        """Why source tensor `name` cannot be written (its NaN/Inf, or what overflows `target`), read again."""
        self.torch()
        return refusal(self.description, name, self.source, self.infos[name].shape, target)

    def _write_produced(self, out: int, fd: int, offset: int, t: OutTensor) -> None:
        torch = self.torch()
        value = t.produce()
        require_finite(value, self.description, t.name)
        if tuple(value.shape) != t.info.shape or dtype_name(value.dtype) != dtype_name(t.info.dtype):
            raise RuntimeError(f"{t.name}: produced {value.dtype}{list(value.shape)}, planned "
                               f"{t.info.dtype}{list(t.info.shape)}")
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        _pwrite_all(fd, memoryview(data), offset)
        self._done(out, data.nbytes)

    def _buffer(self, role: str, n: int) -> memoryview:
        """A reused scratch buffer of at least `n` bytes (fresh large buffers are slow to first touch)."""
        buf = self._buffers.get(role)
        if buf is None or len(buf) < n:
            buf = self._buffers[role] = bytearray(max(n, 2 * BLOCK_BYTES))  # one size fits most blocks
        return memoryview(buf)[:n]

    def _source_fd(self, path: Path) -> int:
        with self._lock:  # workers and the main thread may open the same file
            if path not in self._src_fds:
                self._src_fds[path] = os.open(path, os.O_RDONLY)
            return self._src_fds[path]


def _row_bytes(info: TensorInfo) -> int:
    shape = info.shape or (1,)
    return _prod(shape[1:]) * info.dtype.itemsize


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def _gather_columns(data: memoryview, rows: int, src_row: int, c0: int, width: int, out: memoryview) -> None:
    """Bytes [c0:c0+width) of each of `rows` rows of `src_row` bytes, packed into `out`: a strided copy per
    output byte column, or a slice per row, whichever makes fewer Python steps."""
    if width <= rows:
        for j in range(width):
            out[j::width] = data[c0 + j:rows * src_row:src_row]
    else:
        for i in range(rows):
            out[i * width:(i + 1) * width] = data[i * src_row + c0:i * src_row + c0 + width]


def _bytes(t: torch.Tensor) -> memoryview:
    import torch

    t = t.contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


@contextmanager
def _nullcontext(value):
    yield value


def _pwritev_all(fd: int, parts: list[memoryview], offset: int, total: int) -> int:
    done = os.pwritev(fd, parts, offset)
    if done < total:  # short write (rare): finish the rest one by one
        flat = b"".join(parts)
        _pwrite_all(fd, memoryview(flat)[done:], offset + done)
    return total


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
