"""NemoSource: a `.nemo` presented with Hugging Face names, like the HF source.

mcore -> HF (reference/nemo.md §8): linear_qkv is de-interleaved per query group ([q heads of the
group, its k, its v] -> q_proj/k_proj/v_proj); a gated linear_fc1 is [gate; up]; layer-stacked
keys are un-stacked; zero-centred layernorm1p gammas are passed through unchanged (the arch adds
+1); vocab padding rows (make_vocab_size_divisible_by) are trimmed to the tokenizer's vocab, since
no token id can reach them.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

from ...archs.config import ModelConfig
from ...errors import CheckpointError, ConfigError, one_line
from ...tensors.claims import check_layer_count, layer_indices
from ..base import TensorInfo
from .archive import open_container
from .config import NemoModel, build_config, parse_model_config
from .legacy import LegacyStore, find_legacy
from .torch_dist import TorchDistStore
from .zarr import ZarrStore

BACKENDS = {"zarr": ZarrStore, "torch_dist": TorchDistStore}
_IGNORED = ("_extra_state", "rotary_pos_emb.inv_freq", "rotary_emb.inv_freq")

# HF per-layer name -> candidate mcore suffixes under decoder.layers. (TE fused spec, then local spec)
_LAYER_MAP = {
    "input_layernorm.weight": ("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"),
    "input_layernorm.bias": ("self_attention.linear_qkv.layer_norm_bias", "input_layernorm.bias"),
    "self_attn.o_proj.weight": ("self_attention.linear_proj.weight",),
    "post_attention_layernorm.weight": ("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"),
    "post_attention_layernorm.bias": ("mlp.linear_fc1.layer_norm_bias", "pre_mlp_layernorm.bias"),
    "mlp.down_proj.weight": ("mlp.linear_fc2.weight",),
}
_QKV = "self_attention.linear_qkv.weight"
_FC1 = "mlp.linear_fc1.weight"
_TOP_MAP = {
    "model.embed_tokens.weight": "embedding.word_embeddings.weight",
    "model.norm.weight": "decoder.final_layernorm.weight",
    "model.norm.bias": "decoder.final_layernorm.bias",
    "lm_head.weight": "output_layer.weight",
}


@dataclass(frozen=True)
class _Entry:
    key: str  # store key
    layer: int | None  # index into a layer-stacked key, None for a plain key
    part: str  # "all", "q", "k", "v", "gate", "up", "vocab"


ExpectedTensors = Callable[[ModelConfig], "dict[str, tuple[int, ...]]"]  # HF name -> shape, for a config


class NemoSource:
    """A `.nemo` file or folder (zarr, torch_dist or legacy weights) with HF tensor names.

    `expected`: the HF tensors (and shapes) the model's architecture reads (archs.hf_tensor_shapes): the
    reader maps mcore keys to exactly those and refuses any key left over."""

    def __init__(self, path: Path, expected: ExpectedTensors):
        self.path = Path(path)
        self._expected_for = expected
        self._c = open_container(self.path)
        self._cache: tuple | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening -------------------------------------------------------------------------------
    def _open(self) -> None:
        c = self._c
        names = c.names()
        yamls = sorted((n for n in names if posixpath.basename(n) == "model_config.yaml"), key=lambda n: n.count("/"))
        if not yamls:
            if any(n.startswith("context/") for n in names) and any(n.startswith("weights/") for n in names):
                raise ConfigError(f"{self.path} is a NeMo 2.0 checkpoint (context/ + weights/); only NeMo 1.x .nemo "
                                  "files (model_config.yaml) are supported")
            raise ConfigError(f"no model_config.yaml in {self.path}: not a .nemo checkpoint (or an incomplete one)")
        self._prefix = posixpath.dirname(yamls[0]) + "/" if "/" in yamls[0] else ""
        where = f"{self.path}:{yamls[0]}"
        try:
            raw = yaml.safe_load(c.read_bytes(yamls[0]))
        except yaml.YAMLError as e:
            raise ConfigError(f"{where} is not valid YAML: {one_line(e)}") from None
        self.model: NemoModel = parse_model_config(raw, where)
        self._store, self.layout = self._open_store()
        self._sp_member, sp = self._find_sentencepiece()
        self._infos = self._store.infos()

        emb = self._resolve_top("embedding.word_embeddings.weight")
        if emb is None:
            raise CheckpointError(f"{self.path}: no embedding.word_embeddings.weight among the {self.layout} weights")
        rows, emb_dtype = self._infos[emb].shape[0], self._infos[emb].dtype
        vocab, bos, eos = rows, None, None
        if sp is not None:
            vocab, bos, eos = sp.get_piece_size(), _id(sp.bos_id()), _id(sp.eos_id())
            if rows < vocab:
                raise CheckpointError(f"{emb} in {self.path} has {rows} rows, fewer than the {vocab} tokenizer pieces")
        self.config = build_config(self.model, vocab, str(emb_dtype).removeprefix("torch."), bos, eos, where)
        self.description = f".nemo {self.path} ({self.layout}, {self._c.kind})"
        self._entries = self._map(emb)

    def _open_store(self):
        c, p, m = self._c, self._prefix, self.model
        meta = p + "model_weights/metadata.json"
        if c.has(meta):
            try:
                backend = json.loads(c.read_bytes(meta)).get("sharded_backend")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise CheckpointError(f"{self.path}:{meta} is not valid JSON: {e}") from None
            if backend not in BACKENDS:
                raise CheckpointError(f"unknown sharded_backend {backend!r} in {self.path}:{meta}; supported: "
                                      f"{', '.join(BACKENDS)}")
            return BACKENDS[backend](c, p + "model_weights"), backend
        files = find_legacy(c, p)
        if files:
            layout = "model_weights.ckpt" if len(files) == 1 else f"legacy tp={max(t for t, _ in files) + 1} " \
                     f"pp={max(q for _, q in files) + 1}"
            return LegacyStore(c, files, m.fields["num_hidden_layers"], m.gated), layout
        if any(n.startswith(p + "model_weights/") for n in c.names()):
            raise CheckpointError(f"{self.path}: model_weights/ has no metadata.json naming its sharded_backend")
        raise CheckpointError(f"no weights in {self.path}: expected model_weights/ (dist checkpoint), "
                              "model_weights.ckpt or mp_rank_XX/model_weights.ckpt")

    def _find_sentencepiece(self):
        """The SentencePiece model named by the config (tokenizer.model / tokenizer.tokenizer_model), or None."""
        tok, c = self.model.tokenizer, self._c
        if str(tok.get("library", "sentencepiece")) not in ("sentencepiece", "megatron"):
            return None, None
        member = None
        for field in ("model", "tokenizer_model"):
            ref = tok.get(field)
            if isinstance(ref, str) and ref:
                base = posixpath.basename(ref.removeprefix("nemo:"))
                hits = [n for n in c.names() if posixpath.basename(n) == base or n.endswith("_" + base)]
                if hits:
                    member = min(hits, key=lambda n: n.count("/"))
                    break
        if member is None:  # NeMo export's own fallback: any *.model artifact next to the config
            hits = [n for n in c.names() if n.startswith(self._prefix) and n.endswith(".model")
                    and "/" not in n[len(self._prefix):]]
            member = hits[0] if len(hits) == 1 else None
        if member is None:
            return None, None
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(c.read_bytes(member))
        except Exception as e:
            raise CheckpointError(f"tokenizer {member} in {self.path} is not a SentencePiece model: {e}") from None
        return member, sp

    def _resolve_top(self, suffix: str) -> str | None:
        for pre in ("model.", "module.", ""):
            if pre + suffix in self._infos:
                return pre + suffix
        return None

    def _resolve_layer(self, suffix: str, layer: int) -> tuple[str, int | None] | None:
        for pre in ("model.", "module.", ""):
            stacked = f"{pre}decoder.layers.{suffix}"
            if stacked in self._infos:
                return stacked, layer
            per = f"{pre}decoder.layers.{layer}.{suffix}"
            if per in self._infos:
                return per, None
        return None

    def _layers_held(self) -> set[int]:
        """The layers the weights hold: numbered keys (decoder.layers.3....), or the rows of a layer-stacked QKV."""
        numbered = layer_indices(self._infos, r"(?:model\.|module\.)?decoder\.layers\.(\d+)\.")
        stacked = next((k for k in self._infos if k.endswith("decoder.layers." + _QKV)), None)
        return numbered or (set(range(self._infos[stacked].shape[0])) if stacked and self._infos[stacked].shape else set())

    def _map(self, emb: str) -> dict[str, _Entry]:
        cfg, where = self.config, f"{self.path} ({self.layout})"
        check_layer_count(f"{self.path}: model_config.yaml says num_layers", cfg.num_hidden_layers,
                          self._layers_held(), f"its {self.layout} weights", "layer {}")  # before any loop over it
        L, h, d, F = cfg.num_hidden_layers, cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
        H, G = cfg.num_attention_heads, cfg.num_key_value_heads
        used: set[str] = set()

        def check(key: str, layer: int | None, expected: tuple[int, ...]) -> None:
            found = self._infos[key].shape
            exp = (L, *expected) if layer is not None else expected
            if found != exp:
                raise CheckpointError(f"tensor {key} in {where} has shape {list(found)}, but model_config.yaml "
                                      f"implies {list(exp)}")
            used.add(key)

        out: dict[str, _Entry] = {"model.embed_tokens.weight": _Entry(emb, None, "vocab")}
        if self._infos[emb].shape[1:] != (h,):
            raise CheckpointError(f"tensor {emb} in {where} has shape {list(self._infos[emb].shape)}, but "
                                  f"model_config.yaml implies [>={cfg.vocab_size}, {h}]")
        used.add(emb)
        head = self._resolve_top("output_layer.weight")
        if cfg.tie_word_embeddings:
            if head is not None:
                raise CheckpointError(f"{where} has {head} but share_embeddings_and_output_weights is true")
        else:
            if head is None:
                raise CheckpointError(f"{where} lacks output_layer.weight (share_embeddings_and_output_weights is false)")
            check(head, None, self._infos[emb].shape)
            out["lm_head.weight"] = _Entry(head, None, "vocab")
        expected = self._expected_for(cfg)
        for hf, mc in _TOP_MAP.items():
            if hf in expected and hf not in out:
                key = self._resolve_top(mc)
                if key is None:
                    raise CheckpointError(f"{where} lacks {mc} (for {hf})")
                check(key, None, expected[hf])
                out[hf] = _Entry(key, None, "all")
        for i in range(L):
            p = f"model.layers.{i}."
            for hf, cands in _LAYER_MAP.items():
                if p + hf not in expected:
                    continue
                hit = next((r for r in (self._resolve_layer(s, i) for s in cands) if r), None)
                if hit is None:
                    raise CheckpointError(f"{where} lacks {' or '.join(cands)} for layer {i} ({p + hf})")
                check(hit[0], hit[1], expected[p + hf])
                out[p + hf] = _Entry(hit[0], hit[1], "all")
            qkv = self._resolve_layer(_QKV, i)
            if qkv is None:
                raise CheckpointError(f"{where} lacks {_QKV} for layer {i}")
            check(qkv[0], qkv[1], ((H + 2 * G) * d, h))
            for part in "qkv":
                out[f"{p}self_attn.{part}_proj.weight"] = _Entry(qkv[0], qkv[1], part)
            fc1 = self._resolve_layer(_FC1, i)
            split = cfg.is_gated and fc1 is None and self._resolve_layer(_FC1 + "_w", i)
            if split:  # newer Megatron per-layer format: swiglu fc1 saved as weight_w (gate) / weight_v (up)
                up = self._resolve_layer(_FC1 + "_v", i)
                if up is None:
                    raise CheckpointError(f"{where} has {_FC1}_w but no {_FC1}_v for layer {i}")
                check(split[0], split[1], (F, h))
                check(up[0], up[1], (F, h))
                out[p + "mlp.gate_proj.weight"] = _Entry(split[0], split[1], "all")
                out[p + "mlp.up_proj.weight"] = _Entry(up[0], up[1], "all")
            else:
                if fc1 is None:
                    raise CheckpointError(f"{where} lacks {_FC1} for layer {i}")
                check(fc1[0], fc1[1], ((2 * F if cfg.is_gated else F), h))
                if cfg.is_gated:
                    out[p + "mlp.gate_proj.weight"] = _Entry(fc1[0], fc1[1], "gate")
                    out[p + "mlp.up_proj.weight"] = _Entry(fc1[0], fc1[1], "up")
                else:
                    out[p + "mlp.up_proj.weight"] = _Entry(fc1[0], fc1[1], "all")
        extra = sorted(k for k in self._infos if k not in used and not any(s in k for s in _IGNORED))
        if extra:
            raise CheckpointError(f"{where} has tensors a {cfg.architecture} does not use (biases or an unsupported "
                                  f"variant?): {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        missing = sorted(set(expected) - set(out))
        if missing:
            raise CheckpointError(f"{where}: no source for {', '.join(missing[:5])}")
        self._expected = expected
        return out

    # --- Source protocol -----------------------------------------------------------------------
    def tensors(self) -> dict[str, TensorInfo]:
        return {n: TensorInfo(tuple(shape), self._infos[self._entries[n].key].dtype)
                for n, shape in self._expected.items()}

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        try:
            e = self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self.description} has no tensor {name!r}") from None
        if e.part == "vocab":
            v = self.config.vocab_size
            if dim == 0:  # read only the wanted rows (embedding/lm_head are the largest tensors)
                stop = v if stop is None else min(stop, v)
                return self._store.read_rows(e.key, start, stop)
            t = self._store.read_rows(e.key, 0, v)
        elif e.part in ("q", "k", "v"):
            t = self._qkv(e)[e.part]
        elif e.part in ("gate", "up"):
            t = self._layer(e).chunk(2, dim=0)[0 if e.part == "gate" else 1]
        else:
            t = self._layer(e)
        if dim is not None:
            stop = t.shape[dim] if stop is None else stop
            t = t.narrow(dim, start, stop - start)
        return t.contiguous()

    def _layer(self, e: _Entry) -> torch.Tensor:
        """One layer of a stacked key (or a plain key); the last one read is kept for its siblings."""
        if self._cache is not None and self._cache[0] == (e.key, e.layer, "raw"):
            return self._cache[1]
        self._cache = None
        if e.layer is None:
            t = self._store.read_rows(e.key)
        else:
            t = self._store.read_rows(e.key, e.layer, e.layer + 1)[0]
        if e.key.endswith((_FC1, _QKV)):
            self._cache = ((e.key, e.layer, "raw"), t)
        return t

    def _qkv(self, e: _Entry) -> dict[str, torch.Tensor]:
        if self._cache is not None and self._cache[0] == (e.key, e.layer, "qkv"):
            return self._cache[1]
        w = self._layer(e)
        self._cache = None
        parts = split_qkv(w, self.config.num_attention_heads, self.config.num_key_value_heads, self.config.head_dim)
        self._cache = ((e.key, e.layer, "qkv"), parts)
        return parts

    def write_tokenizer(self, dst: Path) -> list[str]:
        """tokenizer.model (the SentencePiece artifact) + tokenizer_config.json for transformers."""
        if self._sp_member is None:
            return []
        dst = Path(dst)
        (dst / "tokenizer.model").write_bytes(self._c.read_bytes(self._sp_member))
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(dst / "tokenizer.model"))

        def piece(i: int) -> str | None:
            return sp.id_to_piece(i) if i >= 0 else None

        tok_cfg = {
            "tokenizer_class": "LlamaTokenizer",  # SentencePiece BPE with byte fallback, as NeMo's HF export
            "bos_token": piece(sp.bos_id()), "eos_token": piece(sp.eos_id()), "unk_token": piece(sp.unk_id()),
            "pad_token": piece(sp.pad_id()), "add_bos_token": True, "add_eos_token": False, "legacy": False,
            "clean_up_tokenization_spaces": False, "model_max_length": self.config.max_position_embeddings,
        }
        (dst / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
        return ["tokenizer.model", "tokenizer_config.json"]

    def close(self) -> None:
        self._cache = None
        store = getattr(self, "_store", None)
        if store is not None and hasattr(store, "close"):
            store.close()
        self._c.close()


def split_qkv(w: torch.Tensor, heads: int, groups: int, head_dim: int) -> dict[str, torch.Tensor]:
    """Megatron's fused QKV rows [g0: q.., k, v | g1: q.., k, v | ...] -> HF q, k, v projections."""
    hpg = heads // groups
    g = w.reshape(groups, hpg + 2, head_dim, *w.shape[1:])
    rest = w.shape[1:]
    return {"q": g[:, :hpg].reshape(heads * head_dim, *rest), "k": g[:, hpg].reshape(groups * head_dim, *rest),
            "v": g[:, hpg + 1].reshape(groups * head_dim, *rest)}


def _id(i: int) -> int | None:
    return i if i >= 0 else None
