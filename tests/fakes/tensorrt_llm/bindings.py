"""KVCacheType, a C++ enum in the real package (tensorrt_llm.bindings)."""

import enum


class KVCacheType(enum.Enum):
    CONTINUOUS = 0
    PAGED = 1
    DISABLED = 2

    @staticmethod
    def from_string(s: str) -> "KVCacheType":
        try:
            return KVCacheType[s]
        except KeyError:
            raise ValueError(f"Unsupported KVCacheType: {s}") from None
