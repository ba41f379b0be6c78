"""Write any Source as a Hugging Face checkpoint: config.json, generation_config.json, sharded
safetensors (+ index) and the tokenizer, one tensor in memory at a time.

Used by `export --format hf`, so a `.nemo` can also go to vLLM or TensorRT-LLM's PyTorch backend.
Tensors keep their HF names and values (layernorm1p gammas stay zero-centred, as HF Nemotron
expects); only the dtype changes, row block by row block (transfer.py), so memory stays a few buffers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..archs import get_arch
from ..sources.base import Source, TensorInfo
from ..tensors.layout import Block, Layout
from .transfer import OutTensor, write_rank_files

MAX_SHARD_BYTES = 4 << 30


def write_hf_checkpoint(source: Source, out_dir: Path, dtype: torch.dtype,
                        max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Write `source` into the existing folder `out_dir` as an HF checkpoint in `dtype`."""
    out_dir = Path(out_dir)
    cfg = source.config
    have = source.tensors()
    # The arch's tensor list (HF order, no lm_head when tied) is what transformers will load.
    names = list(get_arch(cfg.architecture).hf_tensors(cfg))
    infos = {n: TensorInfo(have[n].shape, dtype) for n in names}

    shards: list[list[str]] = [[]]
    size = 0
    for n in names:
        if shards[-1] and size + infos[n].nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += infos[n].nbytes

    files = (["model.safetensors"] if len(shards) == 1
             else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    plan = {}
    for fname, shard in zip(files, shards):
        # Whole tensors, cast row block by row block (or moved file to file when the dtype is kept).
        plan[out_dir / fname] = [OutTensor(n, infos[n], Layout((Block(n, 0, (have[n].shape or (1,))[0]),), dtype))
                                 for n in shard]
        for n in shard:
            weight_map[n] = fname
            total += infos[n].nbytes
    write_rank_files(source, plan)
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    dtype_name = str(dtype).removeprefix("torch.")
    hf_cfg = {**cfg.to_hf(), "torch_dtype": dtype_name}
    (out_dir / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    gen = {"_from_model_config": True, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    source.write_tokenizer(out_dir)
