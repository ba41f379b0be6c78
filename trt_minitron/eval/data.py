"""CNN/DailyMail records (hub or a local jsonl/json/parquet file) and prompt token ids.

Prompt rules follow TensorRT-LLM's examples/summarize.py: `article + " TL;DR: "`, then `.strip()`
and `.replace(" n't", "n't")`; tokenised with the tokenizer's default special tokens (unless
--no-add-special-tokens) and truncated from the left to max_input_len. When a template puts text
before the article (chat templates), only the article is cut, so the instruction survives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, MissingDependencyError
from ..options import DEFAULT_TEMPLATE

HUB_DATASET = ("abisee/cnn_dailymail", "3.0.0")  # name, config; summarize reads "test", calibration "train"
CHAT = "chat"
CHAT_INSTRUCTION = "Summarize the following news article in a few sentences.\n\n{article}"
_SENTINEL = "\uE000ARTICLE\uE000"  # private-use code points: never in real text


@dataclass(frozen=True)
class Record:
    id: str
    article: str
    highlights: str


def _check(rows: list, where: str) -> list[Record]:
    if not rows:
        raise DatasetError(f"{where} holds no records")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DatasetError(f"{where}: record {i} is a {type(r).__name__}, expected an object with "
                               "'article' and 'highlights'")
        missing = [k for k in ("article", "highlights") if not isinstance(r.get(k), str)]
        if missing:
            raise DatasetError(f"{where}: record {i} lacks string field(s) {missing} "
                               f"(found keys {sorted(r)}); each record needs 'article' and 'highlights'")
        out.append(Record(str(r.get("id", i)), r["article"], r["highlights"]))
    return out


def read_dataset_file(path: str | Path) -> list[Record]:
    """Records from a .jsonl, .json (list of objects, or {column: [values]}) or .parquet file."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependencyError("reading .parquet needs pyarrow: pip install pyarrow") from None
        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise DatasetError(f"{p} is not a readable parquet file: {e}") from None
        return _check(rows, str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{p} is not UTF-8 text: {e}") from None
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{p} line {n} is not JSON: {e.msg}") from None
        return _check(rows, str(p))
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p} is not JSON: {e.msg} at line {e.lineno}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
            cols = list(data)
            data = [dict(zip(cols, vals)) for vals in zip(*data.values())]
        if not isinstance(data, list):
            raise DatasetError(f"{p} holds a JSON {type(data).__name__}; expected a list of records")
        return _check(data, str(p))
    raise DatasetError(f"unsupported dataset file type {p.suffix!r} for {p}; use .jsonl, .json or .parquet")


def load_records(dataset_file: str | Path | None, num_samples: int, cache_dir: str | None = None) -> list[Record]:
    """The first num_samples records of a local file, or of the hub CNN/DailyMail 3.0.0 test split (in order)."""
    if num_samples < 1:
        raise DatasetError(f"--num-samples must be >= 1, got {num_samples}")
    if dataset_file is not None:
        return read_dataset_file(dataset_file)[:num_samples]
    rows = load_hub_split("test", num_samples, cache_dir, "pass --dataset-file FILE.jsonl instead")
    return _check(rows, f"{HUB_DATASET[0]}:test")


def load_hub_split(split: str, num_rows: int, cache_dir: str | None, fallback: str) -> list[dict]:
    """The first `num_rows` rows of a split of the hub's CNN/DailyMail 3.0.0 (`fallback`: what to do instead,
    said in the one-line error when `datasets` or the hub is missing)."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError(f"the hub's CNN/DailyMail needs `datasets`: pip install 'trt-minitron[eval]', "
                                     f"or {fallback}") from None
    name, config = HUB_DATASET
    try:
        ds = datasets.load_dataset(name, config, split=f"{split}[:{num_rows}]", cache_dir=cache_dir)
    except Exception as e:  # network/hub failures surface as many exception types
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        raise DatasetError(f"cannot load {name} {config} {split} from the hub ({type(e).__name__}: {detail}); "
                           f"{fallback}") from None
    return [dict(r) for r in ds]


@dataclass(frozen=True)
class PromptBuilder:
    """Article -> prompt token ids under one template, input budget and special-token rule."""

    tokenizer: object
    template: str = DEFAULT_TEMPLATE
    max_input_len: int = 923
    add_special_tokens: bool = True

    def __post_init__(self):
        if self.template != CHAT and "{article}" not in self.template:
            raise DatasetError(f"--prompt-template must contain '{{article}}' or be '{CHAT}', got {self.template!r}")
        if self.max_input_len < 8:
            raise DatasetError(f"--max-input-len must be >= 8, got {self.max_input_len}")
        self.tokenizer.truncation_side = "left"  # keep the end of the article and the " TL;DR:" cue

    def _render(self, article: str) -> tuple[str, bool]:
        """Prompt text, and whether tokenisation should add the tokenizer's special tokens."""
        if self.template == CHAT:
            if not getattr(self.tokenizer, "chat_template", None):
                raise DatasetError("--prompt-template chat: this tokenizer has no chat template")
            msgs = [{"role": "user", "content": CHAT_INSTRUCTION.format(article=article)}]
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return text, False  # the chat template writes its own special tokens
        return self.template.replace("{article}", article).strip(), self.add_special_tokens

    def build(self, article: str) -> list[int]:
        """Token ids of the prompt; the article loses tokens from its start when over budget."""
        article = article.replace(" n't", "n't")
        text, special = self._render(article)
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        if len(ids) <= self.max_input_len:
            return list(ids)
        head, tail = self._render(_SENTINEL)[0].split(_SENTINEL)
        if not head.strip():
            # Nothing before the article: summarize.py's whole-string left truncation.
            return list(self.tokenizer(text, add_special_tokens=special, truncation=True,
                                       max_length=self.max_input_len)["input_ids"])
        head_ids = self.tokenizer(head, add_special_tokens=special)["input_ids"]
        tail_ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        budget = self.max_input_len - len(head_ids) - len(tail_ids)
        if budget < 1:
            raise DatasetError(f"--max-input-len {self.max_input_len} leaves no room for the article after "
                               f"the template's {len(head_ids) + len(tail_ids)} tokens")
        body = self.tokenizer(article, add_special_tokens=False)["input_ids"]
        return list(head_ids) + list(body[-budget:]) + list(tail_ids)
