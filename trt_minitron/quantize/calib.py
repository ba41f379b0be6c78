"""Calibration batches: CNN/DailyMail articles tokenized, truncated and grouped without padding.

Padding tokens would still pass through every linear layer and widen the calibrated ranges, so
articles are sorted by length and each batch is cut to its shortest member instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..eval.data import DatasetError, load_hub_split, read_dataset_file
from ..options import HUB_CALIBRATION_NAME as HUB_NAME
from ..options import CalibSettings


def load_articles(settings: CalibSettings, cache_dir: str | None = None) -> list[str]:
    """The first `size` articles of the calibration set (the hub's train split, as ModelOpt's llm_ptq calibrates)."""
    if settings.dataset != HUB_NAME:
        records = read_dataset_file(Path(settings.dataset))
        return [r.article for r in records[: settings.size]]
    rows = load_hub_split("train", settings.size, cache_dir, "pass --calib-dataset FILE.jsonl")
    return [r["article"] for r in rows]


def calibration_batches(tokenizer, articles: list[str], max_len: int, batch_size: int) -> list[torch.Tensor]:
    """Token id batches [B, T], no padding: length-sorted, each batch cut to its shortest article."""
    ids = [tokenizer(a, truncation=True, max_length=max_len)["input_ids"] for a in articles if a.strip()]
    ids = sorted((x for x in ids if x), key=len, reverse=True)
    if not ids:
        raise DatasetError("no calibration article produced any tokens")
    batches = []
    for i in range(0, len(ids), batch_size):
        group = ids[i: i + batch_size]
        n = min(len(x) for x in group)
        batches.append(torch.tensor([x[:n] for x in group], dtype=torch.long))
    return batches
