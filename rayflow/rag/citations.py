"""Inline citations attached after the answer is written: each sentence is matched by BM25 against the passages
the answer was written from, and cites the best passages whose score passes a threshold.

This is OpenResearcher's way of citing (per-sentence BM25 over the retrieved chunks, top-2 above a score),
so a citation says "this passage shares this sentence's words", whatever the model wrote. Markers the model
wrote itself (`[3]`) are removed first: the only markers in the answer are the ones checked here.

BM25 scores depend on the collection (here: the few passages of one answer), so the threshold is relative to
that collection, not comparable to scores over a whole corpus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import bm25s
import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MODEL_MARKER = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_CLOSING = re.compile(r"[.!?]*$")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, split after `.`, `!` or `?` followed by whitespace; blanks dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def sentence_matches(
    sentences: Sequence[str], passages: Sequence[str], threshold: float, per_sentence: int
) -> list[list[int]]:
    """For each sentence, the indices of up to `per_sentence` passages with BM25 score > `threshold`, best
    first (ties: lower index first)."""
    if not passages:
        return [[] for _ in sentences]
    index = bm25s.BM25()
    index.index(_tokens(passages), show_progress=False)
    out = []
    for words in _tokens(sentences):
        scores = index.get_scores(words) if words else np.zeros(len(passages))
        order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
        out.append([i for i in order[:per_sentence] if scores[i] > threshold])
    return out


def attach_citations(
    answer: str, passages: Sequence[str], threshold: float, per_sentence: int = 2
) -> tuple[str, list[int]]:
    """`answer` with `[n]` markers at the end of each sentence that matches a passage, and the cited passage
    indices in citation order: marker `[n]` refers to `passages[cited[n - 1]]`.

    Sentences are rejoined with single spaces. A sentence that matches no passage stays uncited.
    """
    cleaned = _MODEL_MARKER.sub("", answer)
    sentences = split_sentences(cleaned)
    numbers: dict[int, int] = {}  # passage index -> its citation number
    out = []
    for sentence, matched in zip(sentences, sentence_matches(sentences, passages, threshold, per_sentence)):
        if matched:
            marks = "".join(f"[{numbers.setdefault(i, len(numbers) + 1)}]" for i in matched)
            # Before the sentence's closing punctuation: "... search [1][2]."
            closing = _CLOSING.search(sentence).start()
            sentence = f"{sentence[:closing].rstrip()} {marks}{sentence[closing:]}"
        out.append(sentence)
    return " ".join(out), list(numbers)
