"""The offline length index: every sample reduced to (vision tiles, LLM tokens).

Balancing never needs pixels or text, only how much work each sample brings to the two halves of a
vision-language model. The index is built once per dataset and is what the ISF grouper, the Q search
and the per-rank schedules read.

- ``vit``: vision-encoder tiles; a text-only sample counts one dummy tile, because the packed ViT
  forward still runs on it (InternVL's convention, which keeps the ViT stage busy on every rank).
- ``tok``: final LLM sequence length, image tokens included.

- ``source``: the data source a sample comes from (optional), for grouping each source apart
  (``BalanceConfig.multi_group``).

The rayflow image-text format is JSONL, one object per line::

    {"id": "s17", "images": [3, 0], "text": "a red image and a blue image ...", "source": "captions"}

``images`` holds one entry per image (here a synthetic colour class; a real pipeline would hold paths
and count dynamic-resolution tiles per image, which is what :class:`ImageTextFormat` isolates); ``source``
is optional. :func:`read_length_files` reads OmniBal's own length statistics instead (its meta JSON files
naming ``*_token_lengths.json`` lists of ``{"vit_num", "token_num", "image_flag"}``), one source per meta
file as its ``multi_group`` has it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayflow.jsonl import loads_object

__all__ = [
    "ImageTextFormat",
    "LengthIndex",
    "build_index",
    "parse_sample",
    "read_jsonl_index",
    "read_length_files",
]


@dataclass(frozen=True)
class ImageTextFormat:
    """How one image-text record turns into (tiles, tokens).

    ``tiles_per_image`` ViT tiles per image; ``tokens_per_tile`` LLM tokens each tile becomes after the
    projector; ``count_text`` maps text to its token count (the tokenizer's length).
    """

    tiles_per_image: int
    tokens_per_tile: int
    count_text: Callable[[str], int]

    def lengths(self, num_images: int, text: str) -> tuple[int, int]:
        tiles = num_images * self.tiles_per_image
        tokens = self.count_text(text) + tiles * self.tokens_per_tile
        return max(tiles, 1), tokens


@dataclass(frozen=True)
class LengthIndex:
    """Per-sample (vit, tok) arrays, aligned with ``ids`` (the dataset's row ids); ``source`` [N] str, "" when
    the data names none."""

    ids: np.ndarray  # [N] str
    vit: np.ndarray  # [N] int64, tiles
    tok: np.ndarray  # [N] int64, LLM tokens
    source: np.ndarray | None = None  # [N] str

    def __post_init__(self) -> None:
        if self.source is None:
            object.__setattr__(self, "source", np.full(len(self.ids), "", dtype=object).astype(str))
        if not (len(self.ids) == len(self.vit) == len(self.tok) == len(self.source)):
            raise ValueError("ids, vit, tok and source must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: str | Path) -> None:
        """Write a compressed ``.npz`` holding ids, vit, tok and source."""
        np.savez_compressed(
            path, ids=self.ids.astype(str), vit=self.vit, tok=self.tok, source=self.source.astype(str)
        )

    @classmethod
    def load(cls, path: str | Path) -> LengthIndex:
        with np.load(path) as data:
            source = data["source"] if "source" in data.files else None
            return cls(
                ids=data["ids"],
                vit=data["vit"].astype(np.int64),
                tok=data["tok"].astype(np.int64),
                source=source,
            )

    @classmethod
    def from_lengths(cls, vit: Iterable[int], tok: Iterable[int]) -> LengthIndex:
        """An index over anonymous samples (ids ``"0"``, ``"1"``, ...), e.g. synthesised length statistics."""
        vit_a, tok_a = np.asarray(list(vit), dtype=np.int64), np.asarray(list(tok), dtype=np.int64)
        return cls(ids=np.arange(len(vit_a)).astype(str), vit=vit_a, tok=tok_a)


def parse_sample(line: str) -> tuple[dict | None, str | None]:
    """Parse one JSONL line into ``{"id", "images", "text"}``, or return the reason it is unusable."""
    obj, error = loads_object(line)
    if obj is None:
        return None, error
    text, images = obj.get("text"), obj.get("images", [])
    if not isinstance(text, str) or not text.strip():
        return None, "field 'text' must be a non-empty string"
    if not isinstance(images, list) or not all(isinstance(c, int) and c >= 0 for c in images):
        return None, "field 'images' must be a list of non-negative integers (one per image)"
    if "id" not in obj:
        return None, "missing field 'id'"
    source = obj.get("source", "")
    if not isinstance(source, str):
        return None, "field 'source' must be a string"
    return {"id": str(obj["id"]), "images": images, "text": text, "source": source}, None


def build_index(samples: Iterable[dict], fmt: ImageTextFormat) -> LengthIndex:
    """Index already-parsed samples (as returned by :func:`parse_sample`)."""
    ids, vit, tok, source = [], [], [], []
    for sample in samples:
        tiles, tokens = fmt.lengths(len(sample["images"]), sample["text"])
        ids.append(sample["id"])
        vit.append(tiles)
        tok.append(tokens)
        source.append(sample.get("source", ""))
    return LengthIndex(
        np.asarray(ids, dtype=str),
        np.asarray(vit, dtype=np.int64),
        np.asarray(tok, dtype=np.int64),
        np.asarray(source, dtype=str),
    )


def read_jsonl_index(
    path: str | Path, fmt: ImageTextFormat, *, max_tokens: int | None = None
) -> tuple[LengthIndex, list[dict], list[dict]]:
    """Read a JSONL file into ``(index, samples, errors)``.

    Every line ends either in the index (and ``samples``, same order) or in ``errors`` as
    ``{"source", "line", "reason"}``; one bad line never stops the read. ``max_tokens`` rejects samples
    whose LLM length exceeds the model's context. Duplicate ids are errors, since the schedule and resume
    state refer to samples by position and the output by id.
    """
    samples, errors, seen = [], [], set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            sample, reason = parse_sample(line)
            if sample is not None and sample["id"] in seen:
                sample, reason = None, f"duplicate id {sample['id']!r}"
            if sample is not None and max_tokens is not None:
                tokens = fmt.lengths(len(sample["images"]), sample["text"])[1]
                if tokens > max_tokens:
                    sample, reason = None, f"{tokens} LLM tokens exceed max_tokens={max_tokens}"
            if sample is None:
                errors.append({"source": str(path), "line": lineno, "reason": reason})
                continue
            seen.add(sample["id"])
            samples.append(sample)
    return build_index(samples, fmt), samples, errors


def read_length_files(meta_files: Iterable[str | Path]) -> LengthIndex:
    """An index from OmniBal's length statistics (``internvl_sft_1.2M.json``-style meta files).

    Each meta file maps dataset names to ``{"token_lengths": path, ...}`` (a path relative to the meta file's
    folder, or absolute); each length file is a JSON list of ``{"vit_num", "token_num", "image_flag"}``.
    A sample's source is its meta file's stem (the unit the reference's ``multi_group`` groups by), its id
    ``<stem>/<dataset>/<row>``. A text-only sample gets a placeholder tile when its ``vit_num`` is 0, as the
    reference does (its length files already count the fake image as one; its collator maps 0 to 1).
    Raises ValueError naming the file and row of a malformed entry.
    """
    ids, vit, tok, source = [], [], [], []
    for meta in map(Path, meta_files):
        with open(meta, encoding="utf-8") as fh:
            datasets = json.load(fh)
        for name, info in datasets.items():
            if "token_lengths" not in info:  # the reference skips such entries too
                continue
            path = Path(info["token_lengths"])
            path = path if path.is_absolute() else meta.parent / path
            with open(path, encoding="utf-8") as fh:
                rows = json.load(fh)
            for row, item in enumerate(rows):
                entry = item if isinstance(item, dict) else {}
                v, t = entry.get("vit_num"), entry.get("token_num")
                if not (isinstance(v, int) and isinstance(t, int) and v >= 0 and t >= 1):
                    raise ValueError(
                        f"{path} row {row}: need integer vit_num >= 0 and token_num >= 1, got {item!r}"
                    )
                ids.append(f"{meta.stem}/{name}/{row}")
                vit.append(max(v, 1))
                tok.append(t)
                source.append(meta.stem)
    return LengthIndex(
        np.asarray(ids, dtype=str),
        np.asarray(vit, dtype=np.int64),
        np.asarray(tok, dtype=np.int64),
        np.asarray(source, dtype=str),
    )
