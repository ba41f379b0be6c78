"""The quantized TensorRT-LLM checkpoint: ModelOpt's quantized linears and scales, everything else ours.

ModelOpt's exporter writes a config.json that loses the rotary settings under transformers 5
(rotary_base, llama3 rotary_scaling, Nemotron's rotary_pct) and shards the embedding when tp > 1.
So config.json is our architecture's own (archs/*.py trt_config) with ModelOpt's `quantization`
block, and the embedding, norms and lm_head are what `export` writes; only the quantized linear
layers, their scales and the KV-cache scales come from ModelOpt's files, checked against the
shapes our plan expects and copied one tensor at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..archs.config import load_json
from ..checkpoints.quant_formats import KV_SCALE, WEIGHT, WSF
from ..checkpoints.quantized import K_SCALE, V_SCALE, QuantSpec, RankTensors, linear_prefix
from ..errors import CheckpointError
from ..export.run import PlannedTensor, plan_export
from ..export.transfer import OutTensor, write_rank_files
from ..sources.base import Source, TensorInfo
from ..tensors.dtypes import torch_dtype
from ..tensors.mapping import Mapping

# Tensors ModelOpt writes that ours replace (a sharded or vocab-padded embedding, its lm_head).
REPLACED = ("transformer.vocab_embedding.weight", "lm_head.weight")


def quantized_config(our_config: dict, quantization: dict, where: str) -> dict:
    """Our config.json with ModelOpt's `quantization` block (the only field that differs from `export`'s)."""
    config = {**our_config, "quantization": quantization}
    QuantSpec.from_config(config, where)  # a format we can read back
    return config


def rank_entries(planned: list[PlannedTensor], source: Source, modelopt: RankTensors, spec: QuantSpec,
                 dtype: torch.dtype, where: str) -> list[OutTensor]:
    """One rank file's tensors: our plan's (as export writes them: row blocks of the source, never a whole
    embedding in memory), quantized linears expanded into ModelOpt's tensors."""
    infos = {n: modelopt.info(n) for n in modelopt}
    entries, used = [], set(REPLACED)
    for p in planned:
        prefix = linear_prefix(p.name)
        if prefix is not None and f"{prefix}.{WSF}" in infos:
            out_f, in_f = p.info.shape
            expected = spec.format.linear_tensors(out_f, in_f, dtype)
            have = {n[len(prefix) + 1:]: i for n, i in infos.items() if n.rsplit(".", 1)[0] == prefix}
            if set(have) != set(expected):
                raise CheckpointError(f"{where}: ModelOpt wrote {sorted(have)} for {prefix}, {spec.quant_algo} "
                                      f"needs {sorted(expected)}")
            for suffix in [WEIGHT, *sorted(s for s in expected if s != WEIGHT)]:
                name, info = f"{prefix}.{suffix}", have[suffix]
                if info != expected[suffix]:
                    raise CheckpointError(f"{where}: ModelOpt wrote {name} as {info.dtype}{list(info.shape)}; our "
                                          f"{p.name} {list(p.info.shape)} implies {expected[suffix].dtype}"
                                          f"{list(expected[suffix].shape)} (layout mismatch)")
                entries.append(OutTensor(name, info, produce=lambda n=name: modelopt[n]))
                used.add(name)
            continue
        if p.name in infos and p.name not in REPLACED:
            _check_unchanged(p, source, modelopt, infos[p.name], where)
            used.add(p.name)
        entries.append(OutTensor(p.name, p.info, p.layout, None if p.layout else lambda o=p.out: o.produce(source)))
    for name in modelopt:
        if name.endswith(f".{KV_SCALE}"):
            # One scale per layer, the one TensorRT-LLM uses (it takes max(k, v) when both are stored).
            attention = name.removesuffix(f".{KV_SCALE}")
            spec.kv_quant(modelopt, attention)  # refuses a kv scale that disagrees with max(k, v)
            entries.append(OutTensor(name, infos[name], produce=lambda n=name: modelopt[n]))
            used.update({name, f"{attention}.{K_SCALE}", f"{attention}.{V_SCALE}"})
    unknown = sorted(set(infos) - used)
    if unknown:
        raise CheckpointError(f"{where}: ModelOpt wrote tensors this tool does not place: {unknown[:5]}")
    return entries


def _check_unchanged(p: PlannedTensor, source: Source, modelopt: RankTensors, info: TensorInfo, where: str) -> None:
    """A tensor both write (norms) must be identical: ModelOpt folding a scale into it would change the maths."""
    ours = materialise(p.out.produce(source))
    if info != p.info or not torch.equal(ours, modelopt[p.name]):
        raise CheckpointError(f"{where}: ModelOpt changed {p.name} relative to the source "
                              "(a scale folded into it?); this tool cannot place such a checkpoint")


def materialise(t) -> torch.Tensor:
    """A produced tensor, or the bytes of a pass-through RowStream, as a tensor."""
    if isinstance(t, torch.Tensor):
        return t
    data = bytearray()
    for chunk in t.chunks():  # a RowStream: bytes passed through unchanged
        data += chunk
    return torch.frombuffer(data, dtype=t.dtype).reshape(t.shape)


def assemble_checkpoint(source: Source, modelopt_dir: Path, out_dir: Path, mapping: Mapping, dtype: str,
                        on_bytes: Callable[[int, int], None] = lambda done, total: None) -> tuple[int, int]:
    """Write the quantized checkpoint into the existing folder `out_dir` from ModelOpt's export in `modelopt_dir`.

    Returns (weight bytes `export --dtype` would write, weight bytes written); tokenizer files not included."""
    quantization = load_json(modelopt_dir / "config.json").get("quantization") or {}
    ranks = [RankTensors(modelopt_dir / f"rank{r}.safetensors") for r in range(mapping.world_size)]
    return write_checkpoint(source, quantization, ranks, out_dir, mapping, dtype, str(modelopt_dir / "config.json"),
                            on_bytes)


def write_checkpoint(source: Source, quantization: dict, modelopt: list, out_dir: Path, mapping: Mapping, dtype: str,
                     where: str, on_bytes: Callable[[int, int], None] = lambda done, total: None) -> tuple[int, int]:
    """The quantized checkpoint in `out_dir` from ModelOpt's `quantization` block and, per rank, the tensors its
    exporter wrote (RankTensors' interface: names, `info`, read on `[]`); see assemble_checkpoint."""
    _, our_config, planned = plan_export(source, mapping, dtype)
    config = quantized_config(our_config, quantization, where)
    spec = QuantSpec.from_config(config)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    files = {out_dir / f"rank{r}.safetensors": rank_entries([p for p in planned if p.rank == r], source, modelopt[r],
                                                             spec, torch_dtype(dtype), f"rank{r}")
             for r in range(mapping.world_size)}
    total = sum(t.info.nbytes for entries in files.values() for t in entries)
    done = 0

    def advance(n: int, _tensors: int) -> None:
        nonlocal done
        done += n
        on_bytes(done, total)

    write_rank_files(source, files, on_progress=advance)
    return sum(p.info.nbytes for p in planned), total
