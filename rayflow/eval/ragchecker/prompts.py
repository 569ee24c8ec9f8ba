"""rayflow's own prompts for claim extraction and claim checking, and the parsers of their answers.

Extraction turns a text (with the question it answers) into knowledge triplets `(subject, predicate, object)`,
one per line, or the single word `Abstain` when the text states no fact. Checking asks whether a reference
entails, contradicts or says nothing about a claim: one claim per prompt, or up to `joint_check_num` claims
per prompt, numbered, each answered on its own numbered line. A label the model leaves out or garbles counts
as Neutral (RAGChecker pads joint answers the same way). Model output is data: it is matched, never run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rayflow.eval.ragchecker.metrics import CONTRADICTION, ENTAILMENT, NEUTRAL

PROMPT_VERSION = "rayflow-ragchecker-v1"
Claim = list[str]  # a (subject, predicate, object) triplet

EXTRACT_TEMPLATE = """You read a text written to answer a question and list every fact it states.
Write each fact as one knowledge triplet on its own line, in the form (subject, predicate, object).
Keep each triplet short and self-contained: resolve pronouns to the names they stand for.
If the text states no fact at all, write only the word Abstain.

Question: {question}

Text: {text}

Triplets:"""

CHECK_TEMPLATE = """Decide whether the reference supports a claim.
Answer Entailment if the reference states or clearly implies the claim, Contradiction if the reference \
states something that makes the claim false, and Neutral if the reference does not settle it.

Reference: {reference}

Claim: {claim}

Answer with one word (Entailment, Neutral or Contradiction):"""

JOINT_CHECK_TEMPLATE = """Decide whether the reference supports each numbered claim.
For each claim answer Entailment if the reference states or clearly implies it, Contradiction if the \
reference states something that makes it false, and Neutral if the reference does not settle it.
Write one line per claim, in order, as the claim's number, a period and the one-word answer, e.g. "1. Neutral".

Reference: {reference}

Claims:
{claims}

Answers:"""

_TRIPLET = re.compile(r"\(([^(),]+),([^(),]+),([^()]+)\)")
_LABEL = re.compile(
    r"\b(entailment|entails|entailed|neutral|contradiction|contradicts|contradicted)\b", re.IGNORECASE
)
_NUMBERED = re.compile(r"^\s*\(?(\d+)[.):\]]?\s*(.*)$")


def claim_text(claim: Claim | str) -> str:
    """A claim as the checker reads it: `(subject, predicate, object)`; a plain-text claim as it is."""
    return claim if isinstance(claim, str) else "(" + ", ".join(claim) + ")"


def extraction_prompt(question: str, text: str) -> str:
    return EXTRACT_TEMPLATE.format(question=question.strip(), text=text.strip())


def parse_triplets(output: str) -> list[Claim]:
    """Every `(subject, predicate, object)` in the output, stripped, duplicates dropped (order kept).
    `Abstain` or no triplet at all is an empty list."""
    claims: list[Claim] = []
    for match in _TRIPLET.finditer(output):
        triplet = [part.strip().strip("\"'") for part in match.groups()]
        if all(triplet) and triplet not in claims:
            claims.append(triplet)
    return claims


def check_prompt(claim: Claim | str, reference: str) -> str:
    return CHECK_TEMPLATE.format(reference=reference.strip(), claim=claim_text(claim))


def joint_check_prompt(claims: Sequence[Claim | str], reference: str) -> str:
    numbered = "\n".join(f"{i}. {claim_text(c)}" for i, c in enumerate(claims, 1))
    return JOINT_CHECK_TEMPLATE.format(reference=reference.strip(), claims=numbered)


def _label_of(text: str) -> str | None:
    match = _LABEL.search(text)
    if match is None:
        return None
    word = match.group(1).lower()
    return ENTAILMENT if word.startswith("entail") else NEUTRAL if word == "neutral" else CONTRADICTION


def parse_label(output: str) -> str:
    """The first label word in a single-claim answer (Entailment / Neutral / Contradiction); Neutral if none."""
    return _label_of(output) or NEUTRAL


def parse_joint_labels(output: str, n: int) -> list[str]:
    """`n` labels from a joint answer: line `k. <label>` gives claim k's; unnumbered label lines fill the
    claims in order when no line is numbered. Missing labels are Neutral."""
    numbered: dict[int, str] = {}
    loose: list[str] = []
    for line in output.splitlines():
        label = _label_of(line)
        if label is None:
            continue
        match = _NUMBERED.match(line)
        if match and 1 <= int(match.group(1)) <= n:
            numbered.setdefault(int(match.group(1)), label)
        else:
            loose.append(label)
    if numbered:
        return [numbered.get(k, NEUTRAL) for k in range(1, n + 1)]
    return (loose + [NEUTRAL] * n)[:n]


def merge_labels(labels: Sequence[str]) -> str:
    """One label over several reference segments: Entailment if any segment entails, else Contradiction if
    any contradicts, else Neutral (also for no segments)."""
    for label in (ENTAILMENT, CONTRADICTION):
        if label in labels:
            return label
    return NEUTRAL
