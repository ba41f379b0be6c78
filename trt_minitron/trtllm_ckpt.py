"""Reading a TensorRT-LLM checkpoint folder back: config.json -> ModelConfig + Mapping, and the tensors
every rank file must hold (derived by dry-running the same arch rules that export uses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .archs import get_arch
from .archs.base import RankContext
from .config import ModelConfig, RopeScaling, load_json
from .errors import CheckpointError, ConfigError
from .mapping import Mapping
from .sources.base import MetaReader, TensorInfo

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# TensorRT-LLM architecture names -> the HF architecture whose rules produced them.
TRT_TO_HF = {"LlamaForCausalLM": "LlamaForCausalLM", "GPTForCausalLM": "NemotronForCausalLM",
             "NemotronForCausalLM": "NemotronForCausalLM"}


@dataclass(frozen=True)
class TrtCheckpoint:
    path: Path
    raw: dict  # config.json as written
    model: ModelConfig
    mapping: Mapping
    dtype: str

    def rank_file(self, rank: int) -> Path:
        return self.path / f"rank{rank}.safetensors"

    def expected_tensors(self, rank: int) -> dict[str, TensorInfo]:
        """Name -> shape/dtype that rank{rank}.safetensors must contain."""
        arch = get_arch(self.model.architecture)
        infos = {n: TensorInfo(s, torch.float32) for n, s in arch.hf_tensors(self.model).items()}
        ctx = RankContext(self.model, self.mapping, rank, DTYPES[self.dtype])
        reader = MetaReader(infos)
        out = {}
        for o in arch.rank_plan(ctx):
            t = o.produce(reader)
            out[o.name] = TensorInfo(tuple(t.shape), t.dtype)
        return out


def read_checkpoint(path: str | Path) -> TrtCheckpoint:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{path} is not a TensorRT-LLM checkpoint: no config.json")
    raw = load_json(cfg_path)
    return TrtCheckpoint(path, raw, *model_config_from_trt(raw, str(cfg_path)))


def model_config_from_trt(d: dict, where: str = "config.json") -> tuple[ModelConfig, Mapping, str]:
    """Inverse of Arch.trt_config for the architectures trt-minitron writes."""
    arch = d.get("architecture")
    if arch not in TRT_TO_HF:
        raise ConfigError(f"unsupported architecture {arch!r} in {where}; supported: {', '.join(TRT_TO_HF)}")
    dtype = d.get("dtype")
    if dtype not in DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r} in {where}; supported: {', '.join(DTYPES)}")
    if (d.get("quantization") or {}).get("quant_algo"):
        raise ConfigError(f"quantized checkpoints are not supported here ({where})")
    try:
        heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        rs = d.get("rotary_scaling")
        scaling = None
        if rs:
            kind = rs.get("type", rs.get("rope_type"))
            scaling = RopeScaling(rope_type=kind, factor=float(rs.get("factor", 1.0)),
                                  low_freq_factor=float(rs.get("low_freq_factor", 1.0)),
                                  high_freq_factor=float(rs.get("high_freq_factor", 4.0)),
                                  original_max_position_embeddings=int(
                                      rs.get("original_max_position_embeddings", 8192)))
        hf_arch = TRT_TO_HF[arch]
        model = ModelConfig(
            architecture=hf_arch,
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(d.get("intermediate_size") or 4 * hidden),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_size") or hidden // heads),
            hidden_act="silu" if hf_arch == "LlamaForCausalLM" else "relu2",
            norm_eps=float(d.get("norm_epsilon", 1e-5)),
            max_position_embeddings=int(d.get("max_position_embeddings") or 2048),
            rope_theta=float(d.get("rotary_base", 10000.0)),
            partial_rotary_factor=float(d.get("rotary_pct", 1.0)),
            rope_scaling=scaling,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        )
        m = d.get("mapping") or {}
        mapping = Mapping(tp_size=int(m.get("tp_size", 1)), pp_size=int(m.get("pp_size", 1)))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: missing or malformed field {e}") from None
    if int(m.get("world_size", mapping.world_size)) != mapping.world_size:
        raise ConfigError(f"{where}: mapping.world_size={m.get('world_size')} != tp_size*pp_size="
                          f"{mapping.world_size}")
    return model, mapping, dtype


def check_rank_files(ckpt: TrtCheckpoint) -> None:
    """Every rank file present, holding exactly the expected names with the expected shapes and dtype."""
    from safetensors import safe_open

    missing = [ckpt.rank_file(r).name for r in range(ckpt.mapping.world_size) if not ckpt.rank_file(r).is_file()]
    if missing:
        raise CheckpointError(f"{ckpt.path}: missing rank files {missing}")
    for rank in range(ckpt.mapping.world_size):
        f = ckpt.rank_file(rank)
        expected = ckpt.expected_tensors(rank)
        try:
            with safe_open(f, "pt") as st:
                names = set(st.keys())
                lacking = sorted(set(expected) - names)
                if lacking:
                    raise CheckpointError(f"{f}: missing tensors {lacking[:5]}{' ...' if len(lacking) > 5 else ''}")
                for name, info in expected.items():
                    sl = st.get_slice(name)
                    shape, dt = tuple(sl.get_shape()), sl.get_dtype()
                    want_dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[info.dtype]
                    if shape != info.shape or dt != want_dt:
                        raise CheckpointError(f"{f}: tensor {name} is {dt}{list(shape)}, expected "
                                              f"{want_dt}{list(info.shape)}")
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{f}: unreadable safetensors file ({e})") from None
