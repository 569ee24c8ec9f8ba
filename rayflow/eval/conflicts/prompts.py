"""The generator's and the LLM detector's prompts (rayflow's own wording) and the parsers of their answers.

Every prompt is one user chat message, rendered by the engine with the model's own chat template. Parsers
never fail: text they cannot use gives an empty result, which the pipeline counts and drops.
"""

from __future__ import annotations

import re

from rayflow.llm import Message

PROMPT_VERSION = "econ-rayflow-v1"
# Two registers, so the two evidence texts of one answer differ even under greedy decoding.
EVIDENCE_STYLES = ("a short news report", "a short encyclopedia entry")
MAX_ANSWER_CHARS = 120


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def answers_prompt(question: str, n: int) -> list[Message]:
    """Ask for `n` different plausible short answers, one per line."""
    return _user(
        f"Question: {question}\n"
        f"Give {n} different short answers to this question that a reader could believe. "
        "Write one answer per line, without numbering or explanation."
    )


def evidence_prompt(question: str, answer: str, style: str) -> list[Message]:
    """Ask for a web-style passage, in `style`, that states `answer` as the answer to `question`."""
    return _user(
        f"Write {style} of two or three sentences which states, as a plain fact, that the answer to the "
        f'question below is "{answer}". Write only the passage.\n'
        f"Question: {question}"
    )


def readback_prompt(question: str, passage: str) -> list[Message]:
    """Ask for the answer the passage gives, as a short phrase."""
    return _user(
        "Answer the question using only the passage, with a short phrase.\n"
        f"Passage: {passage}\nQuestion: {question}\nAnswer:"
    )


def edit_prompt(question: str, passage: str, old: str, new: str) -> list[Message]:
    """Ask for a minimal edit of `passage` that gives `new` instead of `old` as the answer."""
    return _user(
        "Change as few words as possible in the passage so that it gives "
        f'"{new}" instead of "{old}" as the answer to the question. Write only the changed passage.\n'
        f"Question: {question}\nPassage: {passage}"
    )


def negation_prompt(fact: str) -> list[Message]:
    """Ask for the statement that says the opposite of `fact` with the fewest changed words."""
    return _user(
        "Rewrite the statement so that it says the opposite, changing as few words as possible. "
        f"Write only the new statement.\nStatement: {fact}"
    )


def conflict_prompt(passage_a: str, passage_b: str, question: str | None = None) -> list[Message]:
    """The LLM detector's yes/no question: can the two passages both be true?"""
    about = f"Both passages concern this question: {question}\n" if question else ""
    return _user(
        f"{about}Passage 1: {passage_a}\nPassage 2: {passage_b}\n"
        "Do these two passages contradict each other, so that they cannot both be true? Answer Yes or No."
    )


YES, NO = "Yes", "No"

_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.)]|[a-z][.)])\s*")


def parse_answers(text: str, n: int) -> list[str]:
    """Up to `n` distinct answers, one per non-empty line, without bullets or numbering; answers longer
    than `MAX_ANSWER_CHARS` are dropped (a sentence, not an answer)."""
    out: list[str] = []
    for line in text.splitlines():
        answer = _BULLET.sub("", line).strip().strip('"').rstrip(".").strip()
        if answer and len(answer) <= MAX_ANSWER_CHARS and answer.lower() not in {a.lower() for a in out}:
            out.append(answer)
    return out[:n]


def parse_passage(text: str) -> str:
    """A generated passage, stripped; empty when the model wrote nothing usable."""
    return text.strip().strip('"').strip()


def parse_short(text: str) -> str:
    """The first non-empty line of a short answer."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def statement(question: str, answer: str) -> str:
    """ECon's "q? a": the question followed by an answer, the hypothesis that evidence must entail."""
    q = question.strip()
    return f"{q}{'' if q.endswith('?') else '?'} {answer.strip()}"


def normalize(text: str) -> str:
    """Lower case, punctuation and articles removed, spaces collapsed: for exact-match comparisons."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})
