"""KVCacheType as tensorrt_llm/llmapi/kv_cache_type.py @188362024c defines it (added by PR #8330 for the pydantic
BuildConfig): a str Enum with values continuous/paged/disabled, matched case-insensitively."""

from enum import Enum


class KVCacheType(str, Enum):
    CONTINUOUS = "continuous"
    PAGED = "paged"
    DISABLED = "disabled"

    @classmethod
    def _missing_(cls, value):
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None
