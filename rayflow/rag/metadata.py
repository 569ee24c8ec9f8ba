"""Metadata routing: the field and year filters a question asks for, read from its words.

OpenResearcher asks an LLM to pick a field and a date range; here the question is matched against the
fields the index actually holds and against year phrases, so a filter is never a value the index lacks and
the same question always routes the same way.

    route_metadata("RAG papers in nlp since 2021", ["nlp", "vision"])
    # Filters(field=["nlp"], year_min=2021)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rayflow.retrieval.filters import Filters

_YEAR = r"((?:19|20)\d\d)"
# Ordered: ranges first, so "between 2019 and 2021" is not read as "in 2019".
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\bbetween\s+{_YEAR}\s+and\s+{_YEAR}\b", re.IGNORECASE), "range"),
    (re.compile(rf"\bfrom\s+{_YEAR}\s+(?:to|until|through)\s+{_YEAR}\b", re.IGNORECASE), "range"),
    (re.compile(rf"\b{_YEAR}\s*(?:-|–|to)\s*{_YEAR}\b", re.IGNORECASE), "range"),
    (re.compile(rf"\b(?:since|from)\s+{_YEAR}\b", re.IGNORECASE), "since"),
    (re.compile(rf"\b(?:after)\s+{_YEAR}\b", re.IGNORECASE), "after"),
    (re.compile(rf"\b(?:before|prior to)\s+{_YEAR}\b", re.IGNORECASE), "before"),
    (re.compile(rf"\b(?:until|up to|through)\s+{_YEAR}\b", re.IGNORECASE), "until"),
    (re.compile(rf"\b(?:in|during|from the year)\s+{_YEAR}\b", re.IGNORECASE), "in"),
]


def years_in(question: str) -> tuple[int | None, int | None]:
    """(year_min, year_max), inclusive, from the first year phrase in `question`; (None, None) when none."""
    for pattern, kind in _RULES:
        found = pattern.search(question)
        if not found:
            continue
        a = int(found.group(1))
        if kind == "range":
            b = int(found.group(2))
            return min(a, b), max(a, b)
        return {
            "since": (a, None),
            "after": (a + 1, None),
            "before": (None, a - 1),
            "until": (None, a),
            "in": (a, a),
        }[kind]
    return None, None


def field_in(question: str, fields: Iterable[str]) -> str | None:
    """The index field named in `question` as whole words (case-insensitive); the longest name wins
    ("computer vision" over "vision"); None when no field or two unrelated fields are named."""
    text = question.lower()
    named = [f for f in fields if f and re.search(rf"(?<!\w){re.escape(f.lower())}(?!\w)", text)]
    named = [f for f in named if not any(f != g and f.lower() in g.lower() for g in named)]
    return named[0] if len(named) == 1 else None


def route_metadata(question: str, fields: Iterable[str]) -> Filters:
    """The filters `question` asks for, given the field values the index holds (`rayflow.retrieval`'s
    `Filters`, applied by the index before ranking)."""
    year_min, year_max = years_in(question)
    field = field_in(question, fields)
    return Filters(field=[field] if field else None, year_min=year_min, year_max=year_max)
