"""Documents into overlapping chunks, measured in tokens, each chunk a slice of its document's text.

    chunks = chunk_document(Document(doc_id="p1", text=abstract, metadata={"title": ..., "year": 2021}),
                            ChunkConfig(size=128, overlap=16))
    chunks[0].chunk_id, chunks[0].start, chunks[0].end     # "p1#0", character offsets into the text

Tokens are words and punctuation marks (`tokenizer="words"`, no model needed) or the tokens of any Hugging
Face fast tokenizer (a hub id or a local path, e.g. the embedder's own), through its offset mapping. A chunk
covers `size` tokens and starts `size - overlap` tokens after the previous one; its `text` is exactly
`document.text[start:end]`, so a citation can point at the characters it came from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, model_validator

from rayflow.config import Config

_WORDS = re.compile(r"\w+|[^\w\s]")


class Document(BaseModel):
    """One input document: an id, its text, and metadata (title, field, year, url, source, ...)."""

    doc_id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] = {}


@dataclass(frozen=True)
class Chunk:
    """A window of a document: `text == document.text[start:end]` (character offsets), tokens
    `[token_start, token_end)` of the document, and the document's metadata."""

    doc_id: str
    chunk_id: str
    text: str
    start: int
    end: int
    token_start: int
    token_end: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def search_text(self) -> str:
        """What is embedded and indexed for BM25: the document's title (when it has one), then the chunk."""
        title = self.metadata.get("title")
        return f"{title}\n{self.text}" if title else self.text


class ChunkConfig(Config):
    """How documents are cut into chunks."""

    size: int = Field(128, ge=1, description="tokens per chunk")
    overlap: int = Field(16, ge=0, description="tokens shared by consecutive chunks (< size)")
    tokenizer: str = Field(
        "words", description="'words' (words and punctuation, no model) or a HF fast tokenizer id/path"
    )

    @model_validator(mode="after")
    def _overlap_below_size(self):
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


def chunk_id(doc_id: str, index: int) -> str:
    """The id of a document's `index`-th chunk (0-based)."""
    return f"{doc_id}#{index}"


def chunk_document(doc: Document, cfg: ChunkConfig | None = None) -> list[Chunk]:
    """`doc` as chunks of `cfg.size` tokens overlapping by `cfg.overlap` (default `ChunkConfig()`); a text
    with no tokens gives none."""
    cfg = cfg or ChunkConfig()
    spans = token_spans(cfg.tokenizer)(doc.text)
    step = cfg.size - cfg.overlap
    chunks = []
    for first in range(0, max(len(spans) - cfg.overlap, 1), step):
        window = spans[first : first + cfg.size]
        if not window:
            break
        start, end = window[0][0], window[-1][1]
        chunks.append(
            Chunk(
                doc_id=doc.doc_id,
                chunk_id=chunk_id(doc.doc_id, len(chunks)),
                text=doc.text[start:end],
                start=start,
                end=end,
                token_start=first,
                token_end=first + len(window),
                metadata=doc.metadata,
            )
        )
    return chunks


@functools.lru_cache(maxsize=4)
def token_spans(tokenizer: str) -> Callable[[str], list[tuple[int, int]]]:
    """A function from text to its tokens' `(start, end)` character spans under `tokenizer`."""
    if tokenizer == "words":
        return lambda text: [m.span() for m in _WORDS.finditer(text)]
    from transformers import AutoTokenizer

    from rayflow.retrieval.embedder import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer))
    if not tok.is_fast:
        raise ValueError(f"chunk.tokenizer: {tokenizer!r} has no fast tokenizer (offsets are needed)")

    def spans(text: str) -> list[tuple[int, int]]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(a, b) for a, b in enc["offset_mapping"] if b > a]

    return spans
