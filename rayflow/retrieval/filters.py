"""Metadata filters (field, year range, source), applied before ranking: a mask over an index's chunks.

    Filters(field=["nlp"], year_min=2020)               # chunks of NLP papers from 2020 on
    Filters(source="arxiv").matches({"source": "arxiv"})

Fields and sources compare case-insensitively; a chunk without the metadata a filter asks for is excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from rayflow.config import Config


class Filters(Config):
    """Which chunks a search may return; unset parts do not filter."""

    field: list[str] | None = Field(None, description="research fields to keep (any of)")
    year_min: int | None = Field(None, description="earliest publication year kept")
    year_max: int | None = Field(None, description="latest publication year kept")
    source: list[str] | None = Field(None, description="sources to keep (any of)")

    @field_validator("field", "source", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _year_range(self):
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"year_min ({self.year_min}) is after year_max ({self.year_max})")
        return self

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.field, self.year_min, self.year_max, self.source))

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether one chunk's (or document's) metadata passes."""
        return bool(self.mask(MetadataColumns([metadata]))[0])

    def mask(self, columns: MetadataColumns) -> np.ndarray:
        """Boolean mask over the chunks of `columns`."""
        keep = np.ones(len(columns.years), bool)
        if self.field is not None:
            keep &= np.isin(columns.fields, [f.lower() for f in self.field])
        if self.source is not None:
            keep &= np.isin(columns.sources, [s.lower() for s in self.source])
        with np.errstate(invalid="ignore"):  # a missing year (nan) fails every bound
            if self.year_min is not None:
                keep &= columns.years >= self.year_min
            if self.year_max is not None:
                keep &= columns.years <= self.year_max
        return keep


class MetadataColumns:
    """The filterable metadata of many chunks as arrays: fields and sources lower-cased, years (nan: none)."""

    def __init__(self, metadata: Sequence[Mapping[str, Any]]):
        self.fields = np.array([str(m.get("field") or "").lower() for m in metadata], dtype=object)
        self.sources = np.array([str(m.get("source") or "").lower() for m in metadata], dtype=object)
        self.years = np.array([_year(m.get("year")) for m in metadata], dtype=np.float64)


def _year(value) -> float:
    try:
        return float(int(value))
    except (TypeError, ValueError):
        return float("nan")
