"""Tensor/pipeline parallel layout, numbered as TensorRT-LLM's Mapping numbers ranks."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Mapping:
    tp_size: int = 1
    pp_size: int = 1

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    def tp_rank(self, rank: int) -> int:
        return rank % self.tp_size

    def pp_rank(self, rank: int) -> int:
        return rank // self.tp_size

    def layers(self, rank: int, num_layers: int) -> range:
        """Global layer indices held by `rank` (TensorRT-LLM `Mapping.pp_layers`)."""
        per_stage = num_layers // self.pp_size
        start = self.pp_rank(rank) * per_stage
        return range(start, start + per_stage)

    def is_first_stage(self, rank: int) -> bool:
        return self.pp_rank(rank) == 0

    def is_last_stage(self, rank: int) -> bool:
        return self.pp_rank(rank) == self.pp_size - 1

    def to_dict(self) -> dict:
        # Mapping(**d) rejects unknown keys in older TensorRT-LLM releases: keep it minimal.
        return {"world_size": self.world_size, "tp_size": self.tp_size, "pp_size": self.pp_size}

    def validate(self, num_layers: int) -> None:
        if self.tp_size < 1 or self.pp_size < 1:
            raise ConfigError(f"tp={self.tp_size} and pp={self.pp_size} must be >= 1")
        # Older pp_layers floors, newer ones tensor_split: only an even split means the same in both.
        if num_layers % self.pp_size:
            raise ConfigError(f"num_hidden_layers={num_layers} is not divisible by pp_size={self.pp_size}")
