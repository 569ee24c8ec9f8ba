"""The research assistant's prompts (rayflow's own wording) and the parsers of their answers.

One prompt per model step of the flow: route, clarify, rewrite, decompose, filter a source, answer a
sub-question, write the final answer, critique it, refine it. Every prompt is a chat conversation (the
engine renders it with the model's chat template). Each parser reads the model's text as data, never runs
it, and says when it found nothing it could use, so the flow falls back to a safe default and records that
in its trace. Change a template's wording -> bump `PROMPT_VERSION`: saved traces name the version they ran.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rayflow.llm import Message

PROMPT_VERSION = "rayflow-assistant-v1"

SYSTEM = (
    "You are a careful research assistant. You answer questions about research papers, "
    "using only the passages you are given when you are given passages."
)

ROUTE = """Decide how to answer the question below.
Reply RETRIEVE if a good answer needs facts from research papers (results, methods, datasets, who did what).
Reply DIRECT if it is small talk or general knowledge that needs no papers.
Reply with the single word RETRIEVE or DIRECT.

Question: {question}"""

CLARIFY = """Read the question below. If it could mean clearly different things, so that research on it would \
go in the wrong direction without knowing which, reply with [ASK] followed by one short clarifying question. \
If it is clear enough to research, reply with [CLEAR] only.

Question: {question}"""

REWRITE = """Here is a conversation, followed by the user's latest message.
Rewrite the latest message as one standalone question that can be understood without the conversation: \
resolve pronouns and references to earlier turns. Reply with the question only.

Conversation:
{history}

Latest message: {question}"""

DECOMPOSE = """Break the research question below into at most {n} independent sub-questions, each answerable \
on its own from research papers. If the question asks one thing, repeat it as the only sub-question.
Write one sub-question per line, numbered 1., 2., ...

Question: {question}"""

FILTER = """Here is a question and passages from one paper. Does the paper help answer the question?
Reply [YES] or [NO].

Question: {question}

Paper: {title}
{passages}"""

SUB_ANSWER = """Answer the question using only the numbered passages. Be brief and factual; if the passages do \
not answer it, say so.

Passages:
{passages}

Question: {question}"""

FINAL = """Write the answer to the research question from the findings below, in a few clear sentences. \
Use only what the findings and passages say.

Passages:
{passages}

Findings:
{findings}

Question: {question}"""

DIRECT = """Answer the question briefly.

Question: {question}"""

CRITIQUE = """Review the answer to the question below. If it answers the question fully and is supported by \
the passages, reply [YES]. Otherwise reply [NO] followed by one sentence saying what is wrong or missing.

Passages:
{passages}

Question: {question}

Answer: {answer}"""

REFINE = """Improve the answer to the research question. A reviewer said: {critique}
Use only what the passages say. Reply with the improved answer only.

Passages:
{passages}

Question: {question}

Previous answer: {answer}"""


def chat(user: str) -> list[Message]:
    """One user turn under the assistant's system prompt."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def format_history(history: Sequence[Message]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in history)


def format_passages(texts: Sequence[str], start: int = 1) -> str:
    """`[1] text` lines, numbered from `start`."""
    return "\n".join(f"[{start + i}] {t}" for i, t in enumerate(texts))


# --- parsers: each returns None (or an empty list) when the text holds nothing usable ---

_WORD = re.compile(r"\b(RETRIEVE|DIRECT)\b", re.IGNORECASE)
_ASK = re.compile(r"\[ASK\]\s*(.+?\?)", re.IGNORECASE | re.DOTALL)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")
_VERDICT = re.compile(r"\[(YES|NO)\]", re.IGNORECASE)
_TOKEN = re.compile(r"\w\w+")


def parse_route(text: str) -> str | None:
    """ "retrieve" or "direct": the first of the two words the model wrote; None when it wrote neither."""
    found = _WORD.search(text)
    return found.group(1).lower() if found else None


def parse_clarify(text: str) -> str | None:
    """The clarifying question after `[ASK]` (up to its first question mark), or None (clear, or unparsed)."""
    found = _ASK.search(text)
    return " ".join(found.group(1).split()) if found else None


def parse_rewrite(text: str) -> str | None:
    """The first non-empty line, without quotes; None when the text is blank."""
    for line in text.splitlines():
        line = line.strip().strip("\"'").strip()
        if line:
            return line
    return None


def content_words(text: str) -> set[str]:
    """Lower-cased words of 4+ letters: enough to tell whether two texts are about the same thing."""
    return {w for w in _TOKEN.findall(text.lower()) if len(w) >= 4}


def parse_subqueries(text: str, question: str, limit: int) -> list[str]:
    """Numbered or bulleted lines, deduplicated, at most `limit`. A line sharing no content word with the
    question is dropped: a sub-question that drifted off the topic would retrieve papers about something
    else."""
    keep, seen = [], set()
    anchor = content_words(question)
    for line in text.splitlines():
        line = _NUMBERING.sub("", line).strip()
        key = line.lower()
        if len(line) < 8 or key in seen or not (content_words(line) & anchor):
            continue
        seen.add(key)
        keep.append(line)
        if len(keep) == limit:
            break
    return keep


def parse_verdict(text: str) -> tuple[str, str] | None:
    """`("yes", "")` or `("no", reason)` from the first `[YES]`/`[NO]` in the text; None when neither."""
    found = _VERDICT.search(text)
    if not found:
        return None
    verdict = found.group(1).lower()
    reason = " ".join(text[found.end() :].split()) if verdict == "no" else ""
    return verdict, reason
