"""The unified Hugging Face checkpoint of a layer-by-layer `quantize --format hf`, written from per-layer exports.

Each decoder layer's tensors are what ModelOpt's unified exporter wrote for it (hf_quant_config.json names:
`q_proj.weight`, `.weight_scale`, `.input_scale`, `.pre_quant_scale`, AWQ-folded norms ...); the embedding,
final norm and lm_head are the source's, in --dtype. As for the whole-model path, config.json is ours (rope
fields from our ModelConfig) with ModelOpt's `quantization_config`, and tensors ModelOpt leaves in the
calibration dtype (float32 weights, biases, pre-quant scales) are stored in --dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..archs import get_arch
from ..errors import CheckpointError
from ..export.hf_writer import MAX_SHARD_BYTES
from ..sources.base import Source, TensorInfo
from ..tensors.stwriter import write_safetensors

UNQUANTIZED = (".weight", ".bias", "pre_quant_scale")  # float32 tensors of these names are stored in --dtype


def stored_dtype(name: str, dtype: torch.dtype, checkpoint_dtype: torch.dtype) -> torch.dtype:
    """What a tensor ModelOpt exported as `dtype` is stored as: float32 weights, biases and pre-quant scales
    in the checkpoint dtype (ModelOpt leaves them in the calibration dtype); quantization scales as they are."""
    return checkpoint_dtype if dtype == torch.float32 and name.endswith(UNQUANTIZED) else dtype


def write_hf_quantized(source: Source, layers: list[Callable[[], dict[str, torch.Tensor]]], layer_infos: list[dict],
                       quantization_config: dict, hf_quant_config: dict, out_dir: Path, dtype: torch.dtype,
                       max_shard_bytes: int = MAX_SHARD_BYTES) -> tuple[int, int]:
    """Write the checkpoint into the existing folder `out_dir`.

    `layers[i]()` reads layer i's exported tensors (names under `model.layers.{i}.`), `layer_infos[i]` their
    shapes and dtypes. Returns (bytes `export --format hf --dtype` would write, tensor bytes written)."""
    cfg = source.config
    arch = get_arch(cfg.architecture)
    have = source.tensors()
    plain = arch.hf_tensors(cfg)
    entries = []

    def from_source(name: str) -> None:
        entries.append((name, TensorInfo(have[name].shape, dtype), lambda n=name: source.read(n).to(dtype)))

    from_source(arch.embedding)
    cache: dict[int, dict[str, torch.Tensor]] = {}

    def layer_tensor(i: int, name: str) -> torch.Tensor:
        if i not in cache:  # one layer in memory at a time, read when its first tensor is written
            cache.clear()
            cache[i] = layers[i]()
        t = cache[i][name]
        return t.to(stored_dtype(name, t.dtype, dtype))

    for i, infos in enumerate(layer_infos):
        for name in sorted(infos):
            info = infos[name]
            entries.append((name, TensorInfo(info.shape, stored_dtype(name, info.dtype, dtype)),
                            lambda i=i, n=name: layer_tensor(i, n)))
    for name in plain:
        if not name.startswith("model.layers.") and name != arch.embedding:
            from_source(name)
    unknown = sorted(n for n, _, _ in entries if n not in plain and not n.startswith("model.layers."))
    if unknown:
        raise CheckpointError(f"unexpected tensors in the quantized checkpoint: {unknown[:5]}")

    shards: list[list] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e[1].nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e[1].nbytes
    files = (["model.safetensors"] if len(shards) == 1
             else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for f, shard in zip(files, shards):
        write_safetensors(out_dir / f, shard)
    if len(files) > 1:
        weight_map = {e[0]: f for f, shard in zip(files, shards) for e in shard}
        index = {"metadata": {"total_size": sum(e[1].nbytes for e in entries)}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    name = str(dtype).removeprefix("torch.")
    config = {**cfg.to_hf(), "torch_dtype": name, "quantization_config": quantization_config}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "hf_quant_config.json").write_text(json.dumps(hf_quant_config, indent=4) + "\n")
    gen = {"_from_model_config": True, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    before = sum(TensorInfo(s, dtype).nbytes for s in plain.values())
    return before, sum(e[1].nbytes for e in entries)
