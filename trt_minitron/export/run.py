"""`export`: any supported checkpoint -> TensorRT-LLM checkpoint (config.json + rank{r}.safetensors).

Plan -> dry run on meta tensors (shapes, dtypes, every source tensor accounted for) -> header-first
streaming write of each rank file into a temporary folder -> rename into place.

An export that only moves bytes (same dtype as the source, row and column blocks, zero rows) from an HF
safetensors folder never imports torch: it plans on the headers' dtypes.DType and transfer.py imports
torch at the first tensor that needs converting.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..archs import get_arch
from ..archs.base import Arch, Out, RankContext, Recipe
from ..archs.config import ModelConfig
from ..errors import CheckpointError, ConfigError
from ..options import EXPORT_FORMATS as FORMATS
from ..options import ExportOptions
from ..outputs import atomic_output_dir, check_output, write_marker
from ..sources import MetaReader, Source, TensorInfo, open_source, source_paths
from ..sources.checks import check_source
from ..tensors.dtypes import BY_NAME, CHECKPOINT_DTYPES, dtype_name, torch_dtype
from ..tensors.info import infos_without_torch
from ..tensors.layout import Layout
from ..tensors.mapping import Mapping
from .transfer import OutTensor, write_rank_files

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PlannedTensor:
    rank: int
    name: str
    info: TensorInfo
    out: Out
    layout: Layout | None = None  # None: a rule without a Layout, made in memory by out.produce


@dataclass(frozen=True)
class ExportResult:
    output: Path
    tensors: int
    bytes_written: int
    seconds: float
    peak_rss_bytes: int


class _CheckingReader(MetaReader):
    def read(self, name, dim=None, start=0, stop=None):
        if name not in self.infos:
            raise CheckpointError(f"missing tensor {name!r} in the source checkpoint")
        return super().read(name, dim, start, stop)


def plan_export(source: Source, mapping: Mapping, dtype: str,
                without_torch: bool = False) -> tuple[Arch, dict, list[PlannedTensor]]:
    """Every output tensor of every rank with its shape and dtype, computed from shapes alone
    (a rule without a Layout is dry-run on meta tensors instead). Dtypes are torch's, or with
    `without_torch` dtypes.DType where a Layout says them (torch only for a rule without a Layout)."""
    cfg: ModelConfig = source.config
    arch = get_arch(cfg.architecture)
    arch.validate(cfg, mapping)
    check_source(arch, source)
    infos = infos_without_torch(source) if without_torch else source.tensors()
    planned = []
    for rank in range(mapping.world_size):
        ctx = RankContext(cfg, mapping, rank, BY_NAME[dtype] if without_torch else torch_dtype(dtype))
        for out in arch.rank_plan(ctx):
            if isinstance(out.produce, Recipe):
                layout = out.produce.layout(infos)
                planned.append(PlannedTensor(rank, out.name, layout.info(infos), out, layout))
            else:  # a plain function makes a tensor: its rule in torch's dtype, dry-run on meta tensors
                if without_torch:
                    out = arch.torch_out(ctx, out.name)  # noqa: PLW2901
                t = out.produce(_CheckingReader(source.tensors()))
                planned.append(PlannedTensor(rank, out.name, TensorInfo(tuple(t.shape), t.dtype), out))
    return arch, arch.trt_config(cfg, dtype, mapping), planned


def run_export(opts: ExportOptions) -> ExportResult | None:
    """Entry point of `trt-minitron export`. Returns None for --dry-run.

    Raises:
        TrtMinitronError: bad input (unsupported config, missing tensors, unsafe or existing output, ...).
    """
    if opts.dtype not in CHECKPOINT_DTYPES:
        raise ConfigError(f"unsupported --dtype {opts.dtype!r}; choose one of {', '.join(CHECKPOINT_DTYPES)}")
    if opts.format not in FORMATS:
        raise ConfigError(f"unsupported --format {opts.format!r}; choose one of {', '.join(FORMATS)}")
    local = Path(opts.src)
    protect = [local] if local.exists() else []
    if not opts.dry_run:  # fail before the (possibly long) source opening
        check_output(opts.output, overwrite=opts.overwrite, protect=protect)
    start = time.perf_counter()
    source = open_source(opts.src)
    try:
        protect += source_paths(source)
        mapping = Mapping(opts.tp, opts.pp)
        if opts.format == "hf":
            if mapping.world_size != 1:
                raise ConfigError("--format hf writes one unsharded checkpoint; drop --tp/--pp")
            check_source(get_arch(source.config.architecture), source)
            if opts.dry_run:
                _print_hf_plan(source)
                return None
            need = sum(TensorInfo(i.shape, BY_NAME[opts.dtype]).nbytes for i in source.tensors().values())
            with atomic_output_dir(opts.output, overwrite=opts.overwrite, protect=protect, need_bytes=need) as tmp:
                counts = _write_hf(source, tmp, torch_dtype(opts.dtype))
                write_marker(tmp, format="hf", source=str(opts.src), dtype=opts.dtype)
        else:
            _, trt_config, planned = plan_export(source, mapping, opts.dtype, without_torch=True)
            if opts.dry_run:
                _print_plan(source, trt_config, planned)
                return None
            need = sum(p.info.nbytes for p in planned)
            with atomic_output_dir(opts.output, overwrite=opts.overwrite, protect=protect, need_bytes=need) as tmp:
                counts = _write_trtllm(source, trt_config, planned, mapping, tmp)
                write_marker(tmp, format="trtllm", source=str(opts.src), dtype=opts.dtype, tp=opts.tp, pp=opts.pp)
    finally:
        source.close()
    return _report(Path(opts.output), counts, start)


def _write_trtllm(source: Source, trt_config: dict, planned: list[PlannedTensor], mapping: Mapping,
                  tmp: Path) -> tuple[int, int]:
    (tmp / "config.json").write_text(json.dumps(trt_config, indent=2) + "\n")
    files: dict[Path, list[OutTensor]] = {tmp / f"rank{rank}.safetensors": [] for rank in range(mapping.world_size)}
    for p in planned:
        made = None if p.layout is not None else (lambda o=p.out: o.produce(source))
        files[tmp / f"rank{p.rank}.safetensors"].append(OutTensor(p.name, p.info, p.layout, made))
    with _progress(sum(p.info.nbytes for p in planned), len(planned)) as advance:
        written = write_rank_files(source, files, on_progress=advance).bytes
    source.write_tokenizer(tmp)
    return len(planned), written


def _write_hf(source: Source, tmp: Path, dtype: torch.dtype) -> tuple[int, int]:
    from .hf_writer import write_hf_checkpoint

    write_hf_checkpoint(source, tmp, dtype)
    files = [p for p in tmp.iterdir() if p.suffix == ".safetensors"]
    return len(source.tensors()), sum(p.stat().st_size for p in files)


def _report(output: Path, counts: tuple[int, int], start: float) -> ExportResult:
    n_tensors, n_bytes = counts
    seconds = time.perf_counter() - start
    result = ExportResult(output, n_tensors, n_bytes, seconds, peak_rss_bytes())
    print(f"exported {result.tensors} tensors, {n_bytes / 1e9:.3f} GB in {seconds:.1f} s "
          f"({n_bytes / 1e9 / max(seconds, 1e-9):.2f} GB/s), peak RSS {result.peak_rss_bytes / 2**30:.2f} GiB "
          f"-> {output}", file=sys.stderr)
    return result


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve,
    so a process started from a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux, bytes on macOS


@contextmanager
def _progress(total_bytes: int, total_tensors: int, console=None) -> Iterator[Callable[[int, int], None]]:
    """advance(bytes, tensors) for a bar on stderr (bytes, tensors, rate, ETA), drawn only on a terminal;
    it is removed at the end, leaving the closing line."""
    if console is None and not sys.stderr.isatty():  # no terminal: no bar, and no rich import (~0.1 s)
        yield lambda _nbytes, _tensors: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = console or Console(stderr=True)
    with Progress(TextColumn("export"), BarColumn(), DownloadColumn(),
                  TextColumn("{task.fields[tensors]}/" + str(total_tensors) + " tensors"),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("export", total=total_bytes, tensors=0)
        done = [0]

        def advance(nbytes: int, tensors: int) -> None:
            done[0] += tensors
            progress.update(task, advance=nbytes, tensors=done[0])

        yield advance


def _print_plan(source: Source, trt_config: dict, planned: list[PlannedTensor]) -> None:
    print(f"# source: {source.description}")
    print("# config.json")
    print(json.dumps(trt_config, indent=2))
    total = 0
    for p in planned:
        dtype = dtype_name(p.info.dtype)
        print(f"rank{p.rank}  {p.name:<55} {dtype:<9} {list(p.info.shape)}")
        total += p.info.nbytes
    world = trt_config["mapping"]["world_size"]
    print(f"# {len(planned)} tensors, {total / 1e9:.3f} GB over {world} rank file(s); nothing written (--dry-run)")


def _print_hf_plan(source: Source) -> None:
    print(f"# source: {source.description}")
    print(json.dumps(source.config.to_hf(), indent=2))
    for name, info in source.tensors().items():
        print(f"{name:<55} {list(info.shape)}")
