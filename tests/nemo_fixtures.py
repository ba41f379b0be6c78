"""Build `.nemo` checkpoints from tiny Hugging Face models, in every layout NeMo has written.

Follows reference/nemo.md: members under `./`, model_config.yaml, a `<32hex>_nemotron_2_256k.model`
SentencePiece artifact referenced as `nemo:...`, and the weights as
- "zarr":        model_weights/<key>/.zarray + raw C-order chunks, one chunk per layer (rows split in two
                 for column-parallel keys, as fragmentation by TP=2 would), bf16 as dtype "bfloat16";
- "torch_dist":  model_weights/ via torch.distributed.checkpoint.save(no_dist=True), one chunk per layer
                 as Megatron writes, `.metadata` re-pickled as Megatron's MCoreMetadata subclass;
- "ckpt":        a single model_weights.ckpt with per-layer keys;
- "mp_rank":     mp_rank_XX/model_weights.ckpt, TP-local tensors (tp given);
- "tp_pp":       tp_rank_XX_pp_rank_YYY/model_weights.ckpt (tp and pp given).
All stacked/dist layouts carry `_extra_state` entries that a reader must skip.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

SP_NAME = "0123456789abcdef0123456789abcdef_nemotron_2_256k.model"
_SP_CACHE: dict[int, bytes] = {}


# --- tokenizer ---------------------------------------------------------------------------------
def sentencepiece_model(vocab_size: int) -> bytes:
    """A SentencePiece BPE model with exactly `vocab_size` pieces (bos 1, eos 2, unk 0)."""
    if vocab_size not in _SP_CACHE:
        import sentencepiece as spm

        rng = random.Random(vocab_size)
        words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 8))) for _ in range(3000)]
        with tempfile.TemporaryDirectory() as d:
            text = Path(d) / "t.txt"
            text.write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(2000)))
            spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(Path(d) / "sp"), vocab_size=vocab_size,
                                           model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                           minloglevel=2)
            _SP_CACHE[vocab_size] = (Path(d) / "sp.model").read_bytes()
    return _SP_CACHE[vocab_size]


# --- HF -> mcore tensors -----------------------------------------------------------------------
def hf_model(hf_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg = json.loads((hf_dir / "config.json").read_text())
    return cfg, load_file(hf_dir / "model.safetensors")


def _dims(cfg: dict) -> tuple[int, int, int, int]:
    return cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["hidden_size"]


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: dict) -> torch.Tensor:
    """HF q/k/v -> Megatron's group-interleaved linear_qkv (reference/nemo.md §3 step 4)."""
    H, G, d, h = _dims(cfg)
    hpg = H // G
    q, k, v = q.reshape(H, d, h), k.reshape(G, d, h), v.reshape(G, d, h)
    return torch.cat([torch.cat([q[g * hpg:(g + 1) * hpg], k[g:g + 1], v[g:g + 1]]) for g in range(G)]).reshape(-1, h)


def padded_vocab(vocab: int, divisible_by: int, tp: int) -> int:
    m = divisible_by * tp
    return -(-vocab // m) * m


def mcore_layers(cfg: dict, sd: dict[str, torch.Tensor], te: bool = True) -> list[dict[str, torch.Tensor]]:
    """Per layer: mcore suffix (under decoder.layers.) -> tensor."""
    gated = "llama" in cfg["model_type"]
    out = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        ln_in, ln_mlp = ("self_attention.linear_qkv.layer_norm_", "mlp.linear_fc1.layer_norm_") if te else \
                        ("input_layernorm.", "pre_mlp_layernorm.")
        layer = {
            ln_in + "weight": sd[p + "input_layernorm.weight"],
            "self_attention.linear_qkv.weight": merge_qkv(sd[p + "self_attn.q_proj.weight"],
                                                          sd[p + "self_attn.k_proj.weight"],
                                                          sd[p + "self_attn.v_proj.weight"], cfg),
            "self_attention.linear_proj.weight": sd[p + "self_attn.o_proj.weight"],
            ln_mlp + "weight": sd[p + "post_attention_layernorm.weight"],
            "mlp.linear_fc1.weight": (torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
                                      if gated else sd[p + "mlp.up_proj.weight"]),
            "mlp.linear_fc2.weight": sd[p + "mlp.down_proj.weight"],
        }
        if not gated:
            layer[ln_in + "bias"] = sd[p + "input_layernorm.bias"]
            layer[ln_mlp + "bias"] = sd[p + "post_attention_layernorm.bias"]
        out.append(layer)
    return out


def mcore_top(cfg: dict, sd: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Non-layer tensors; embedding/output padded to `rows` with random rows (they must be trimmed)."""
    gen = torch.Generator().manual_seed(123)

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = torch.randn((rows - t.shape[0], t.shape[1]), generator=gen).to(t.dtype)
        return torch.cat([t, extra])

    top = {"embedding.word_embeddings.weight": pad(sd["model.embed_tokens.weight"]),
           "decoder.final_layernorm.weight": sd["model.norm.weight"]}
    if "model.norm.bias" in sd:
        top["decoder.final_layernorm.bias"] = sd["model.norm.bias"]
    if not cfg.get("tie_word_embeddings", False):
        top["output_layer.weight"] = pad(sd["lm_head.weight"])
    return top


# --- model_config.yaml -------------------------------------------------------------------------
def model_config(cfg: dict, tp: int = 1, pp: int = 1, divisible_by: int = 128) -> dict:
    llama = "llama" in cfg["model_type"]
    y = {
        "mcore_gpt": True, "transformer_engine": True, "precision": "bf16", "megatron_amp_O2": True,
        "num_layers": cfg["num_hidden_layers"], "hidden_size": cfg["hidden_size"],
        "ffn_hidden_size": cfg["intermediate_size"], "num_attention_heads": cfg["num_attention_heads"],
        "num_query_groups": cfg["num_key_value_heads"], "kv_channels": cfg["head_dim"],
        "encoder_seq_length": cfg["max_position_embeddings"], "max_position_embeddings": cfg["max_position_embeddings"],
        "activation": "fast-swiglu" if llama else "squared-relu",
        "normalization": "rmsnorm" if llama else "layernorm1p",
        "layernorm_epsilon": float(cfg.get("rms_norm_eps", cfg.get("norm_eps", 1e-5))),
        "bias": False, "position_embedding_type": "rope",
        "rotary_percentage": float(cfg.get("partial_rotary_factor", 1.0)),
        "share_embeddings_and_output_weights": bool(cfg.get("tie_word_embeddings", False)),
        "make_vocab_size_divisible_by": divisible_by,
        "tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
        "tokenizer": {"library": "sentencepiece", "type": None, "model": f"nemo:{SP_NAME}", "vocab_file": None,
                      "merge_file": None, "delimiter": None, "sentencepiece_legacy": False},
    }
    rope = cfg.get("rope_parameters") or {}
    y["rotary_base"] = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    if not llama:
        y["rotary_percentage"] = float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.5)))
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        y.update(scale_positional_embedding=True, scale_factor=scaling["factor"],
                 low_freq_factor=scaling["low_freq_factor"], high_freq_factor=scaling["high_freq_factor"],
                 old_context_len=scaling["original_max_position_embeddings"])
    return y


# --- weight layouts ----------------------------------------------------------------------------
def _stacked(layers: list[dict]) -> dict[str, torch.Tensor]:
    return {f"decoder.layers.{k}": torch.stack([lay[k] for lay in layers]) for k in layers[0]}


_ZARR_DTYPE = {torch.bfloat16: "bfloat16", torch.float16: "<f2", torch.float32: "<f4"}
_COLUMN = ("linear_qkv.weight", "linear_fc1.weight", "word_embeddings.weight", "output_layer.weight")


def write_zarr(root: Path, tensors: dict[str, torch.Tensor], num_layers: int) -> None:
    for key, t in tensors.items():
        stacked = key.startswith("model.decoder.layers.")
        chunks = list(t.shape)
        if stacked:
            chunks[0] = 1
        if key.endswith(_COLUMN) and t.shape[-2] % 2 == 0:
            chunks[-2] //= 2  # as if saved with TP=2: two chunks along the rows
        d = root / key
        d.mkdir(parents=True)
        (d / ".zarray").write_text(json.dumps({
            "chunks": chunks, "compressor": None, "dtype": _ZARR_DTYPE[t.dtype], "fill_value": None,
            "filters": None, "order": "C", "shape": list(t.shape), "zarr_format": 2}, indent=4))
        grid = [range(s // c) for s, c in zip(t.shape, chunks)]
        import itertools

        for coord in itertools.product(*grid):
            sl = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coord, chunks))
            (d / ".".join(map(str, coord))).write_bytes(
                t[sl].contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16
                else t[sl].contiguous().view(torch.int16).numpy().tobytes())
    for i in range(num_layers):  # TE extra states, as the common strategy saves ShardedObjects
        d = root / "model.decoder.layers.self_attention.linear_qkv._extra_state"
        d.mkdir(exist_ok=True)
        torch.save(io.BytesIO(b"fp8 meta"), d / f"shard_{i}_{num_layers}.pt")


class _PerLayerChunks(torch.Tensor):
    """Saved by DCP as one chunk per layer (offset (i, 0, ...)), like Megatron's per-layer ShardedTensors."""

    def __create_write_items__(self, fqn, obj):
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
        from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType

        items = []
        for i in range(self.shape[0]):
            off = torch.Size([i] + [0] * (self.dim() - 1))
            items.append(WriteItem(index=MetadataIndex(fqn, off), type=WriteItemType.SHARD,
                                   tensor_data=TensorWriteData(
                                       chunk=ChunkStorageMetadata(offsets=off, sizes=torch.Size([1, *self.shape[1:]])),
                                       properties=TensorProperties.create_from_tensor(self), size=self.size())))
        return items

    def __get_tensor_shard__(self, index):
        i = index.offset[0]
        return self.as_subclass(torch.Tensor)[i:i + 1].clone()


def write_torch_dist(root: Path, tensors: dict[str, torch.Tensor], num_layers: int,
                     megatron_metadata: bool = True) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import Metadata

    state: dict = {}
    for key, t in tensors.items():
        state[key] = t.as_subclass(_PerLayerChunks) if key.startswith("model.decoder.layers.") else t
    for i in range(num_layers):
        state[f"model.decoder.layers.self_attention.linear_qkv._extra_state/shard_{i}_{num_layers}"] = \
            io.BytesIO(b"fp8 meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(root)), no_dist=True)
    if megatron_metadata:
        # Re-pickle as Megatron's subclass from a module that will not exist when the test reads it.
        md = dcp.FileSystemReader(str(root)).read_metadata()
        names = ["megatron", "megatron.core", "megatron.core.dist_checkpointing",
                 "megatron.core.dist_checkpointing.strategies", "megatron.core.dist_checkpointing.strategies.torch"]
        mods = {n: types.ModuleType(n) for n in names}
        cls = type("MCoreMetadata", (Metadata,), {"__module__": names[-1]})
        mods[names[-1]].MCoreMetadata = cls
        saved = {n: sys.modules.get(n) for n in names}
        sys.modules.update(mods)
        try:
            new = cls(**{f: getattr(md, f) for f in md.__dataclass_fields__})
            new.mcore_data = {"singleton_local_shards": False}
            (root / ".metadata").write_bytes(__import__("pickle").dumps(new))
        finally:
            for n, m in saved.items():
                if m is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = m
    torch.save({}, root / "common.pt")


def _tp_split(key: str, t: torch.Tensor, tp: int, gated: bool) -> list[torch.Tensor]:
    if tp == 1:
        return [t]
    if gated and key.endswith("linear_fc1.weight"):
        gate, up = t.chunk(2)
        return [torch.cat([g, u]) for g, u in zip(gate.chunk(tp), up.chunk(tp))]
    if key.endswith(_COLUMN):
        return list(t.chunk(tp, dim=0))
    if key.endswith(("linear_proj.weight", "linear_fc2.weight")):
        return list(t.chunk(tp, dim=1))
    return [t] * tp


def write_legacy(root: Path, layers: list[dict], top: dict[str, torch.Tensor], tp: int, pp: int,
                 gated: bool, layout: str) -> None:
    L = len(layers)
    per = L // pp
    for r in range(tp):
        for s in range(pp):
            sd: dict = {}
            for j in range(per):
                for k, t in layers[s * per + j].items():
                    sd[f"model.decoder.layers.{j}.{k}"] = _tp_split(k, t, tp, gated)[r].clone()
                sd[f"model.decoder.layers.{j}.self_attention.linear_qkv._extra_state"] = io.BytesIO(b"fp8")
            for k, t in top.items():
                if k.startswith("embedding.") and s != 0:
                    continue
                if not k.startswith("embedding.") and s != pp - 1:
                    continue
                sd["model." + k] = _tp_split(k, t, tp, gated)[r].clone()
            name = ("model_weights.ckpt" if layout == "ckpt" else
                    f"mp_rank_{r:02d}/model_weights.ckpt" if layout == "mp_rank" else
                    f"tp_rank_{r:02d}_pp_rank_{s:03d}/model_weights.ckpt")
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            torch.save(sd, root / name)


# --- whole .nemo -------------------------------------------------------------------------------
def build_nemo(hf_dir: Path, dst: Path, layout: str, tp: int = 1, pp: int = 1, archive: str = "tar",
               dtype: torch.dtype | None = None, te: bool = True, divisible_by: int = 128,
               yaml_overrides: dict | None = None) -> Path:
    """`hf_dir` (tiny HF model) -> `.nemo` at `dst` in `layout`; archive "tar", "tar.gz" or "folder"."""
    cfg, sd = hf_model(hf_dir)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    gated = "llama" in cfg["model_type"]
    rows = padded_vocab(cfg["vocab_size"], divisible_by, tp)
    layers, top = mcore_layers(cfg, sd, te=te), mcore_top(cfg, sd, rows)
    folder = dst if archive == "folder" else Path(tempfile.mkdtemp(dir=dst.parent, prefix=dst.name + "."))
    folder.mkdir(parents=True, exist_ok=True)
    y = model_config(cfg, tp=tp if layout in ("mp_rank", "tp_pp") else 1, pp=pp, divisible_by=divisible_by)
    y.update(yaml_overrides or {})
    (folder / "model_config.yaml").write_text(yaml.safe_dump(y, sort_keys=False))
    (folder / SP_NAME).write_bytes(sentencepiece_model(cfg["vocab_size"]))
    if layout in ("zarr", "torch_dist"):
        mw = folder / "model_weights"
        mw.mkdir()
        tensors = {"model." + k: v for k, v in {**_stacked(layers), **top}.items()}
        (mw / "metadata.json").write_text(json.dumps({"sharded_backend": layout, "sharded_backend_version": 1,
                                                      "common_backend": "torch", "common_backend_version": 1}))
        if layout == "zarr":
            write_zarr(mw, tensors, len(layers))
            torch.save({}, mw / "common.pt")
        else:
            write_torch_dist(mw, tensors, len(layers))
    elif layout in ("ckpt", "mp_rank", "tp_pp"):
        write_legacy(folder, layers, top, tp if layout != "ckpt" else 1, pp if layout == "tp_pp" else 1,
                     gated, layout)
    else:
        raise ValueError(layout)
    if archive == "folder":
        return dst
    tar_folder(folder, dst, gz=archive == "tar.gz")
    import shutil

    shutil.rmtree(folder)
    return dst


def tar_folder(folder: Path, dst: Path, gz: bool = False) -> Path:
    """As NeMo: `tar.add(folder, arcname=".")`, so members are named `./model_config.yaml` etc."""
    with tarfile.open(dst, "w:gz" if gz else "w:") as tf:
        tf.add(folder, arcname=".")
    return dst


def add_member(dst: Path, src_tar: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    """Copy `src_tar` to `dst` with one extra member (for malicious-archive tests)."""
    with tarfile.open(src_tar, "r:") as src, tarfile.open(dst, "w:") as out:
        for m in src:
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        out.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return dst


def cast_hf(hf_dir: Path, dst: Path, dtype: torch.dtype) -> Path:
    """A copy of an HF folder with every tensor cast to `dtype` (same-dtype comparisons must be bit-exact)."""
    from safetensors.torch import save_file

    dst.mkdir(parents=True)
    cfg, sd = hf_model(hf_dir)
    cfg["torch_dtype"] = cfg["dtype"] = str(dtype).removeprefix("torch.")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, dst / "model.safetensors", metadata={"format": "pt"})
    return dst
