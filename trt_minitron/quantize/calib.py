"""Calibration batches: CNN/DailyMail articles tokenized, truncated and grouped without padding.

Padding tokens would still pass through every linear layer and widen the calibrated ranges, so
articles are sorted by length and each batch is cut to its shortest member instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..eval.data import HUB_DATASET, DatasetError, load_hub_split, read_dataset_file
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
    return calibration_plan(tokenizer, articles, max_len, batch_size)[0]


def calibration_plan(tokenizer, articles: list[str], max_len: int, batch_size: int,
                     ) -> tuple[list[torch.Tensor], list[list[int]]]:
    """calibration_batches, and for each batch the indices (into `articles`) of the articles its rows hold."""
    ids = [(i, tokenizer(a, truncation=True, max_length=max_len)["input_ids"]) for i, a in enumerate(articles)
           if a.strip()]
    ids = sorted((x for x in ids if x[1]), key=lambda x: len(x[1]), reverse=True)  # stable: ties keep file order
    if not ids:
        raise DatasetError("no calibration article produced any tokens")
    batches, rows = [], []
    for i in range(0, len(ids), batch_size):
        group = ids[i: i + batch_size]
        n = min(len(x) for _, x in group)
        batches.append(torch.tensor([x[:n] for _, x in group], dtype=torch.long))
        rows.append([j for j, _ in group])
    return batches, rows


def dataset_record(settings: CalibSettings, articles: list[str]) -> dict:
    """Which data the calibration read: the hub dataset (name, config, split) or the file and its sha256, and
    the sha256 of the articles used (what a hub revision or another file holding the same articles must match)."""
    if settings.dataset == HUB_NAME:
        name, config = HUB_DATASET
        where = {"hub": name, "config": config, "split": "train", "revision": "main at the time of the run (not pinned)"}
    else:
        path = Path(settings.dataset)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        where = {"file": str(path.resolve()), "sha256": digest.hexdigest()}
    return {**where, "records": f"first {settings.size}", "articles_sha256": articles_digest(articles)}


def articles_digest(articles: list[str]) -> str:
    """sha256 of the calibration articles in order (each length-prefixed, UTF-8)."""
    digest = hashlib.sha256()
    for a in articles:
        data = a.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def recorded_batches(calibration: dict, tokenizer, cache_dir: str | None = None) -> list[torch.Tensor]:
    """The calibration batches a quantize run used, rebuilt from the `calibration` block of its
    trt_minitron_quantize.json and the same tokenizer: the same articles (by content), sample ids and tokens,
    or DatasetError naming the first thing that differs."""
    data = calibration["dataset"]
    dataset = data["file"] if "file" in data else HUB_NAME
    settings = CalibSettings(dataset=dataset, size=calibration["size"], max_len=calibration["max_len"],
                             batch_size=calibration["batch_size"])
    articles = load_articles(settings, cache_dir)
    where = data.get("file") or f"{data['hub']} {data['split']}"
    if articles_digest(articles) != data["articles_sha256"]:
        raise DatasetError(f"the calibration articles in {where} are not the ones the checkpoint was calibrated on "
                           f"(articles sha256 {articles_digest(articles)[:12]}, recorded {data['articles_sha256'][:12]})")
    batches, rows = calibration_plan(tokenizer, articles, settings.max_len, settings.batch_size)
    if rows != calibration["sample_ids"] or tokens_digest(batches) != calibration["tokens_sha256"]:
        raise DatasetError(f"the calibration articles of {where} tokenize differently from the recorded run (another "
                           "tokenizer?): its sample ids or token digest differ")
    return batches


def tokens_digest(batches: list[torch.Tensor]) -> str:
    """sha256 of the token batches in order: the calibration input, whatever tokenizer and data made it."""
    digest = hashlib.sha256()
    for b in batches:
        digest.update(str(tuple(b.shape)).encode())
        digest.update(b.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()
