"""Conflict sets as pairs of evidence texts, and how ECon's sets are assembled from validated evidence.

A conflict set is JSONL, one `ConflictPair` per line: two evidence texts, whether they conflict (gold), the
kind of set they come from, the conflict's type where known and, for factoid sets, its intensity.

Kinds (ECon, Cheng et al., EMNLP 2024, §4 of the RAG brief):

* `answer`: E1, E2 support answer a, E3 supports answer b: E1-E3 and E2-E3 conflict, E1-E2 corroborate.
* `lexical`: E1' is a minimal edit of E1 that supports b: E1-E1' and E2-E1' conflict, E3-E1' corroborate
  (E1' and E3 both support b although they share few words, while E1' and E1 differ in a few words only).
* `factoid`: a question's facts with k of them negated (`intensity = "negated:k"`), or one fact and its
  negation each with the same j other facts kept (`intensity = "shared:j"`); every factoid pair conflicts.

Types (entity, number, temporal, negation, degree) come from the words the two sides differ in
(`conflict_type`), so a pair is typed where its generator knows what it changed. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayflow.jsonl import loads_object

Kind = Literal["answer", "lexical", "factoid"]
ConflictType = Literal["entity", "number", "temporal", "negation", "degree"]
TYPES: tuple[str, ...] = ("entity", "number", "temporal", "negation", "degree")


class ConflictPair(BaseModel):
    """One line of a conflict set."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="unique within the set")
    set_id: str = Field("", description="the question or triple the pair was built from")
    question: str | None = Field(None, description="the question both texts answer, when there is one")
    evidence_a: str = Field(min_length=1)
    evidence_b: str = Field(min_length=1)
    conflict: bool = Field(description="gold: the two texts cannot both be true")
    kind: Kind = "answer"
    type: ConflictType | None = None
    intensity: str | None = Field(None, description="factoid sets: negated:<k> or shared:<j>")


# -- conflict types -----------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NEGATION = {"not", "no", "never", "none", "nor", "neither", "nobody", "nothing", "cannot", "without"}
# "may" is left out of the months: as a verb it is far more common.
_MONTHS = {"january", "february", "march", "april", "june", "july", "august", "september", "october",
           "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
           "sunday", "century", "decade", "bc", "ad", "spring", "summer", "autumn", "winter"}  # fmt: skip
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million",
                 "billion", "half", "dozen", "once", "twice", "first", "second", "third"}  # fmt: skip
_DEGREE = {"more", "less", "most", "least", "higher", "lower", "larger", "smaller", "bigger", "greater",
           "fewer", "better", "worse", "best", "worst", "slightly", "very", "extremely", "rarely", "often",
           "always", "sometimes", "mostly", "partly", "fully", "entirely", "hardly", "barely", "many",
           "few", "much", "little", "all", "some", "warmer", "colder", "faster", "slower", "older",
           "younger", "longer", "shorter", "taller", "cheaper", "dearer", "heavier", "lighter"}  # fmt: skip
_YEAR = re.compile(r"^(1\d{3}|20\d{2})s?$")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def conflict_type(a: str, b: str) -> ConflictType | None:
    """The type of the difference between two statements (or answers): the words one has and the other
    lacks decide, checked in the order negation, temporal, number, degree; any other difference is an
    entity conflict; None when the word sets are equal."""
    wa, wb = _words(a), _words(b)
    diff = set(wa).symmetric_difference(wb)
    if not diff:
        return None
    if diff & _NEGATION or any(w.endswith("n't") for w in diff):
        return "negation"
    if diff & _MONTHS or any(_YEAR.match(w) for w in diff):
        return "temporal"
    if diff & _NUMBER_WORDS or any(w[0].isdigit() for w in diff):
        return "number"
    if diff & _DEGREE:
        return "degree"
    return "entity"


def minimal_edit(text: str, old: str, new: str) -> str | None:
    """`text` with every whole-word occurrence of `old` replaced by `new` (case-insensitive), or None when
    `old` does not occur: the cheapest edit that moves a passage from answer `old` to answer `new`."""
    if not old.strip():
        return None
    pattern = re.compile(rf"(?<!\w){re.escape(old.strip())}(?!\w)", re.IGNORECASE)
    edited, count = pattern.subn(new.strip(), text)
    return edited if count else None


# -- assembling sets --------------------------------------------------------------------------------------


def answer_pairs(
    qid: str,
    question: str,
    answers: Sequence[str],
    evidence: dict[str, list[str]],
    edits: dict[tuple[str, str], str],
) -> list[ConflictPair]:
    """The answer and lexical pairs of one question.

    `evidence[a]` holds the validated evidence texts of answer `a` (in writing order), `edits[(a, b)]` the
    validated minimal edit of `evidence[a][0]` towards `b`. For every two answers, the one with two texts
    plays a (the first such in `answers` order) and the other b; a pair of answers without two texts for
    either, or without one for b, gives no set.
    """
    pairs: list[ConflictPair] = []
    for i, j in combinations(range(len(answers)), 2):
        a, b = answers[i], answers[j]
        if len(evidence.get(a, [])) < 2:
            a, b = b, a
        if len(evidence.get(a, [])) < 2 or not evidence.get(b):
            continue
        (e1, e2), e3 = evidence[a][:2], evidence[b][0]
        kind_type = conflict_type(a, b)
        set_id = f"{qid}/{i}-{j}"
        triple = [(e1, e3, True), (e2, e3, True), (e1, e2, False)]
        pairs += [
            ConflictPair(id=f"{set_id}/answer/{n}", set_id=set_id, question=question, evidence_a=x,
                         evidence_b=y, conflict=c, kind="answer", type=kind_type)
            for n, (x, y, c) in enumerate(triple)
        ]  # fmt: skip
        edited = edits.get((a, b))
        if edited:
            lexical = [(e1, edited, True), (e2, edited, True), (e3, edited, False)]
            pairs += [
                ConflictPair(id=f"{set_id}/lexical/{n}", set_id=set_id, question=question, evidence_a=x,
                             evidence_b=y, conflict=c, kind="lexical", type=kind_type)
                for n, (x, y, c) in enumerate(lexical)
            ]  # fmt: skip
    return pairs


def factoid_pairs(qid: str, question: str, facts: Sequence[str], negations: Sequence[str | None]) -> list[ConflictPair]:
    """The factoid pairs of one question: `negations[i]` is the validated negation of `facts[i]` (None: none).

    Intensity of conflict: all facts vs the same facts with the first k negatable ones negated, k = 1..K.
    Intensity of corroboration: the first negatable fact and its negation, each beside the same j other
    facts, j = 0..len(facts)-1. Texts keep the facts' order.
    """
    negatable = [i for i, neg in enumerate(negations) if neg]
    if not negatable:
        return []
    pairs: list[ConflictPair] = []
    base = " ".join(facts)

    def typed(changed: Sequence[int]) -> ConflictType | None:
        kinds = {conflict_type(facts[i], negations[i]) for i in changed}
        return kinds.pop() if len(kinds) == 1 else None

    for k in range(1, len(negatable) + 1):
        changed = set(negatable[:k])
        other = " ".join(negations[i] if i in changed else f for i, f in enumerate(facts))
        pairs.append(ConflictPair(id=f"{qid}/factoid/negated-{k}", set_id=qid, question=question,
                                  evidence_a=base, evidence_b=other, conflict=True, kind="factoid",
                                  type=typed(sorted(changed)), intensity=f"negated:{k}"))  # fmt: skip
    m = negatable[0]
    others = [i for i in range(len(facts)) if i != m]
    for j in range(len(others) + 1):
        keep = sorted([m, *others[:j]])
        side_a = " ".join(facts[i] for i in keep)
        side_b = " ".join(negations[m] if i == m else facts[i] for i in keep)
        pairs.append(ConflictPair(id=f"{qid}/factoid/shared-{j}", set_id=qid, question=question,
                                  evidence_a=side_a, evidence_b=side_b, conflict=True, kind="factoid",
                                  type=typed([m]), intensity=f"shared:{j}"))  # fmt: skip
    return pairs


# -- reading -----------------------------------------------------------------------------------------------


def parse_pair(line: str) -> tuple[ConflictPair | None, str | None]:
    """One JSONL line -> a `ConflictPair`, or the reason it is not one (naming the field)."""
    obj, error = loads_object(line)
    if obj is None:
        return None, error
    try:
        return ConflictPair.model_validate(obj), None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "line"
        return None, f"field {field!r}: {first['msg']}"


def read_pairs(path: str) -> tuple[list[dict], list[dict]]:
    """Pairs (as dicts with `source` and `line`) and error records (`source, line, reason, raw`) of a JSONL
    file or a directory of `*.jsonl`, in file and line order; a repeated id is an error for its later line."""
    source = Path(path)
    files = sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    rows: list[dict] = []
    errors: list[dict] = []
    seen: set[str] = set()
    for file in files:
        with file.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                pair, reason = parse_pair(line)
                if pair is not None and pair.id in seen:
                    pair, reason = None, f"field 'id': {pair.id!r} repeats an earlier line's id"
                if pair is None:
                    errors.append({"source": str(file), "line": number, "reason": reason, "raw": line[:500]})
                    continue
                seen.add(pair.id)
                rows.append({**pair.model_dump(), "source": str(file), "line": number})
    return rows, errors
