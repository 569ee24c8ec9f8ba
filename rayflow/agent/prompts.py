"""TestAgent's prompts and their parsers: strategy and criterion drafting, criterion verification, the
examiner's next question, and the rubric grader. Written for rayflow (the paper publishes none); bump
`PROMPT_VERSION` when a prompt changes, as items and sessions record it.

Every parser is total: text a model wrote that does not follow the format parses to None (or drops the
line), and the caller counts it; nothing a model writes is executed.
"""

from __future__ import annotations

import re

from rayflow.llm import Message

PROMPT_VERSION = "testagent-v1"

TYPE_INSTRUCTIONS = {
    "follow_up": "Ask a natural follow-up question on the last answer, about a detail it mentioned.",
    "deepen": "Ask a harder question that goes one level deeper into the same point: conditions, exceptions, "
    "amounts, deadlines or the reason behind the rule.",
    "challenge": "Challenge the last answer: state politely that it may be wrong and ask the examinee to "
    "confirm or correct it.",
    "clarify": "Ask the examinee to restate the last answer in other words, precisely.",
    "switch_topic": "Ask about another aspect of the topic that the conversation has not covered yet.",
}
# What the examiner asks when its model writes no usable question (an empty or overlong reply).
FALLBACK_QUESTIONS = {
    "follow_up": "Could you say more about what you just described? ({seed})",
    "deepen": "What are the exact conditions, exceptions and deadlines here? ({seed})",
    "challenge": "Are you sure? I have read otherwise. Please check your answer again: {seed}",
    "clarify": "Could you restate your answer in other words, precisely? ({seed})",
    "switch_topic": "On another aspect of {topic}: {point}",
}


def strategy_prompt(topic: str, evidence: list[str]) -> list[Message]:
    """Draft a questioning strategy for `topic` from evidence passages."""
    passages = "\n".join(f"[{i + 1}] {e}" for i, e in enumerate(evidence))
    return [{"role": "user", "content": (
        f"You build an exam for a domain expert on the topic: {topic}.\nEvidence:\n{passages}\n\n"
        "Write the first question to ask and a plan for probing deeper, in exactly this format:\n"
        "QUESTION: <one question answerable from the evidence>\nSTRATEGY: <how to follow up and what to press on>"
    )}]  # fmt: skip


def parse_strategy(text: str) -> tuple[str, str] | None:
    """(seed question, strategy) from a strategy reply, or None when either line is missing or empty."""
    question = re.search(r"^\s*QUESTION:\s*(.+)$", text, re.MULTILINE)
    strategy = re.search(r"^\s*STRATEGY:\s*(.+)$", text, re.MULTILINE)
    if not question or not strategy or not question.group(1).strip() or not strategy.group(1).strip():
        return None
    return question.group(1).strip(), strategy.group(1).strip()


def draft_prompt(question: str, strategy: str, evidence: list[str], max_points: int) -> list[Message]:
    """Stage 1 of the criterion: checkable points a good answer contains, from the strategy and evidence."""
    passages = "\n".join(f"[{i + 1}] {e}" for i, e in enumerate(evidence))
    return [{"role": "user", "content": (
        f"Question: {question}\nStrategy: {strategy}\nEvidence:\n{passages}\n\n"
        f"List at most {max_points} checkable points a correct answer must contain, each stated by the "
        "evidence, one per line starting with '- '."
    )}]  # fmt: skip


def parse_points(text: str, max_points: int) -> list[str]:
    """The '- ' (or '* ', '1. ') lines of a draft, at most `max_points`; other lines are ignored."""
    points = [m.group(1).strip() for m in re.finditer(r"^\s*(?:[-*]|\d+[.)])\s+(.+)$", text, re.MULTILINE)]
    return [p for p in points if p][:max_points]


def verify_prompt(point: str, evidence: list[str]) -> list[Message]:
    """Stage 2: keep, rewrite or drop one point by checking it against the evidence."""
    passages = "\n".join(f"[{i + 1}] {e}" for i, e in enumerate(evidence))
    return [{"role": "user", "content": (
        f"Evidence:\n{passages}\n\nRubric point: {point}\n\n"
        "Check the point against the evidence. Reply with exactly one line: KEEP if the evidence states it, "
        "REWRITE: <the corrected point> if it is partly right, DROP if the evidence contradicts it or says nothing."
    )}]  # fmt: skip


def parse_verdict(text: str) -> tuple[str, str | None] | None:
    """("keep", None), ("rewrite", new text), ("drop", None) from the first line, or None when unreadable."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = re.match(r"^(KEEP|DROP|REWRITE)\b\s*:?\s*(.*)$", first, re.IGNORECASE)
    if not m:
        return None
    verdict, rest = m.group(1).lower(), m.group(2).strip()
    if verdict == "rewrite":
        return ("rewrite", rest) if rest else None
    return verdict, None


def examiner_prompt(topic: str, strategy: str, history: list[tuple[str, str]], qtype: str) -> list[Message]:
    """The examiner's next question of type `qtype`, from the strategy and the (question, answer) history."""
    turns = "\n".join(f"Q{i + 1}: {q}\nA{i + 1}: {a}" for i, (q, a) in enumerate(history))
    return [{"role": "user", "content": (
        f"You examine an expert on: {topic}.\nStrategy: {strategy}\nConversation so far:\n{turns}\n\n"
        f"{TYPE_INSTRUCTIONS[qtype]} Reply with the question only."
    )}]  # fmt: skip


def parse_question(text: str, max_chars: int = 600) -> str | None:
    """The examiner's question: its reply's first non-empty line without a 'Question:' label; None when
    empty or longer than `max_chars`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    question = re.sub(r"^(?:Q\d*|Question)\s*:\s*", "", lines[0], flags=re.IGNORECASE).strip()
    return question if question and len(question) <= max_chars else None


def grader_prompt(question: str, answer: str, points: list[str]) -> list[Message]:
    """The rubric grader: one line per criterion point, `P<n>: <0|1|2> - <reason>`."""
    rubric = "\n".join(f"P{i + 1}: {p}" for i, p in enumerate(points))
    return [{"role": "user", "content": (
        f"Grade the answer against each rubric point.\nQuestion: {question}\nAnswer: {answer}\nRubric:\n{rubric}\n\n"
        "For every point write one line 'P<number>: <score> - <short reason>', score 2 if the answer states "
        "the point correctly, 1 if partly, 0 if it is missing or wrong."
    )}]  # fmt: skip


_GRADE_LINE = re.compile(r"^\s*\**P(\d+)\**\s*[:=]\s*([012])(?:\s*/\s*2)?\b\s*[-–:|]?\s*(.*)$", re.IGNORECASE)


def parse_grade(text: str, n_points: int) -> tuple[list[float | None], list[str]]:
    """Per point its score in {0, 0.5, 1} (None when the reply has no line for it) and its reason.

    The first line for each point counts; lines for points that do not exist are ignored.
    """
    scores: list[float | None] = [None] * n_points
    reasons = [""] * n_points
    for line in text.splitlines():
        m = _GRADE_LINE.match(line)
        if not m:
            continue
        j = int(m.group(1)) - 1
        if 0 <= j < n_points and scores[j] is None:
            scores[j] = int(m.group(2)) / 2
            reasons[j] = m.group(3).strip()[:300]
    return scores, reasons
