"""Mapping with the constructor of tensorrt_llm/mapping.py @05ebebb2 (parallel groups left out) and the
rank/stage helpers the models use (pp_layers splits layers as torch.tensor_split does in 1.x)."""


class Mapping:
    def __init__(self, world_size=1, rank=0, gpus_per_node=8, *, cp_size=1, cp_config=None, tp_size=1, pp_size=1,
                 moe_cluster_size=-1, moe_tp_size=-1, moe_ep_size=-1, attn_tp_size=-1, attn_cp_size=-1,
                 auto_parallel=False, enable_attention_dp=False):
        if tp_size * pp_size * cp_size != world_size:
            raise ValueError(f"world_size must equal to tp_size * pp_size * cp_size, but got {world_size} != "
                             f"{tp_size} * {pp_size} * {cp_size}.")
        self.world_size, self.rank, self.gpus_per_node = world_size, rank, gpus_per_node
        self.tp_size, self.pp_size, self.cp_size = tp_size, pp_size, cp_size
        self.auto_parallel = auto_parallel

    @property
    def tp_rank(self):
        return self.rank % self.tp_size

    @property
    def pp_rank(self):
        return self.rank // (self.tp_size * self.cp_size)

    def is_first_pp_rank(self):
        return self.pp_rank == 0

    def is_last_pp_rank(self):
        return self.pp_rank == self.pp_size - 1

    def pp_layers(self, num_layers: int) -> list[int]:
        base, extra = divmod(num_layers, self.pp_size)
        start = self.pp_rank * base + min(self.pp_rank, extra)
        return list(range(start, start + base + (1 if self.pp_rank < extra else 0)))

    @classmethod
    def from_dict(cls, mapping: dict):
        return cls(**mapping)

    def to_dict(self):
        return {"world_size": self.world_size, "rank": self.rank, "gpus_per_node": self.gpus_per_node,
                "cp_size": self.cp_size, "tp_size": self.tp_size, "pp_size": self.pp_size,
                "auto_parallel": self.auto_parallel}
