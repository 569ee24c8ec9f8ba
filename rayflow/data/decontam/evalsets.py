"""Evaluation sets as the examples the rules check: each row's chosen fields joined with a newline.

An evaluation set is a JSONL or Parquet file; `fields` names what to check (e.g. question and answer), joined with
`\\n` into the one example `check_example` sees. Each example belongs to a split (train, dev or test: CONDA's three
columns), read from `split_field` or given for the whole set. Small data, read on the driver; a bad row is an
`InputError` naming the file, the line and the field, before any cluster starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from rayflow.config import Config
from rayflow.workflow import InputError

Split = Literal["train", "dev", "test"]
_SPLITS = {"train": "train", "dev": "dev", "development": "dev", "validation": "dev", "valid": "dev",
           "val": "dev", "test": "test"}  # fmt: skip


class EvalSetConfig(Config):
    """One evaluation set: where it is, which fields make an example, which split each row is."""

    name: str = Field(description="the evaluation dataset's name (CONDA's 'Evaluation Dataset')")
    path: str = Field(description="JSONL or Parquet file")
    fields: list[str] = Field(["question", "answer"], min_length=1, description="fields joined by \\n")
    id_field: str | None = Field("id", description="row id field (missing: the row number)")
    split_field: str | None = Field("split", description="per-row split field; None = `split` for all")
    split: Split = Field("test", description="split of rows without a split field value")
    subset: str = Field("", description="CONDA's 'Subset' (e.g. a config name); empty = none")


@dataclass(frozen=True)
class Example:
    dataset: str
    subset: str
    split: str
    idx: int  # row number within its set (0-based, blank lines skipped)
    id: str
    text: str


def _rows(path: Path) -> list[tuple[int, dict]]:
    """`(line number, row)` of a JSONL file or `(row number + 1, row)` of a Parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"eval_sets: {path}: line {line_no}: invalid JSON: {err.msg}") from None
        if not isinstance(obj, dict):
            raise InputError(f"eval_sets: {path}: line {line_no}: expected a JSON object")
        rows.append((line_no, obj))
    return rows


def _text(value) -> str:
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def read_eval_set(cfg: EvalSetConfig) -> list[Example]:
    """The set's examples in file order. Raises `InputError` for a missing file, a row without one of `fields`,
    or a split value that is not train/dev/test (validation and development count as dev)."""
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise InputError(f"eval_sets: {cfg.name}: path {cfg.path!r} does not exist")
    examples = []
    for idx, (line_no, row) in enumerate(_rows(path)):
        where = f"eval_sets: {cfg.name}: {cfg.path}: line {line_no}"
        missing = [f for f in cfg.fields if row.get(f) is None]
        if missing:
            raise InputError(f"{where}: missing field {missing[0]!r}")
        raw_split = row.get(cfg.split_field) if cfg.split_field else None
        split = _SPLITS.get(str(raw_split).lower()) if raw_split is not None else cfg.split
        if split is None:
            raise InputError(f"{where}: field {cfg.split_field!r} is {raw_split!r}, not train/dev/test")
        row_id = row.get(cfg.id_field) if cfg.id_field else None
        text = "\n".join(_text(row[f]) for f in cfg.fields)
        examples.append(Example(cfg.name, cfg.subset, split, idx, str(row_id if row_id is not None else idx), text))
    return examples
