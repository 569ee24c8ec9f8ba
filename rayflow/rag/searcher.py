"""The assistant's view of a `rayflow.retrieval` index: search with filters, rerank, the fields it holds, live ingest.

    searcher = IndexSearcher(SearchConfig())                      # an empty live index (all-MiniLM-L6-v2)
    searcher.add(read_documents("examples/papers/papers.jsonl"))
    searcher = IndexSearcher(SearchConfig(index_dir="outputs/build_index/index"))   # what the job built

Rerank uses a cross-encoder when `reranker` names one; otherwise it re-scores each candidate by the cosine
between the sub-query and the chunk (the embedder the index already loaded), so a hybrid list ordered by RRF
ranks comes back ordered by similarity to the sub-query that found it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from rayflow.config import Config
from rayflow.jsonl import loads_object
from rayflow.rag.flow import Mode, Passage
from rayflow.retrieval import (
    Document,
    Filters,
    Hit,
    IndexConfig,
    Reranker,
    RerankerConfig,
    Retriever,
)


class SearchConfig(Config):
    """Where the assistant's chunks come from and how candidates are reranked."""

    index: IndexConfig = Field(IndexConfig(), description="a live index's chunking, embedder and indexes")
    index_dir: str | None = Field(None, description="load this built index (jobs/build_index.py) instead")
    reranker: RerankerConfig | None = Field(
        None, description="cross-encoder reranker; None = cosine with the sub-query (the index's embedder)"
    )


def read_documents(path: str | Path) -> list[Document]:
    """Documents from a JSONL file of `{doc_id, text, metadata}`; a bad line is an error naming it."""
    documents = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            obj, problem = loads_object(line)
            if problem is None:
                try:
                    documents.append(Document.model_validate(obj))
                    continue
                except ValueError as err:
                    problem = str(err).replace("\n", " ")
            raise ValueError(f"{path}, line {number}: {problem}")
    return documents


class IndexSearcher:
    """A `rayflow.rag.Searcher` over a `Retriever`. Searches and ingests take one lock: an ingest rebuilds
    the BM25 statistics every search reads."""

    def __init__(self, cfg: SearchConfig):
        self.retriever = Retriever.load(cfg.index_dir) if cfg.index_dir else Retriever.empty(cfg.index)
        self.reranker = Reranker(cfg.reranker) if cfg.reranker else None
        self._lock = threading.Lock()
        self._fields = sorted(
            {
                str(c.metadata["field"])
                for s in self.retriever.shards
                for c in s.chunks
                if c.metadata.get("field")
            }
        )

    def size(self) -> int:
        """Chunks indexed."""
        return len(self.retriever)

    def fields(self) -> list[str]:
        return list(self._fields)

    def add(self, documents: Sequence[Document]) -> int:
        """Chunk, embed and index `documents`; returns the number of chunks added."""
        with self._lock:
            chunks = self.retriever.add_documents(documents)
            self._fields = sorted(
                set(self._fields) | {str(d.metadata["field"]) for d in documents if d.metadata.get("field")}
            )
        return len(chunks)

    def search(self, query: str, top_k: int, mode: Mode, filters: Filters | None) -> list[Passage]:
        with self._lock:
            return [_passage(h) for h in self.retriever.search(query, top_k, mode, filters)]

    def rerank(self, query: str, passages: list[Passage]) -> list[Passage]:
        if not passages:
            return []
        if self.reranker is not None:
            hits = [Hit(p.chunk_id, p.doc_id, p.text, p.score, 0, 0) for p in passages]
            scores = {h.chunk_id: h.score for h in self.reranker.rerank(query, hits)}
        else:
            vectors = self.retriever.embedder.encode([query, *(p.text for p in passages)])
            scores = {p.chunk_id: float(v @ vectors[0]) for p, v in zip(passages, vectors[1:])}
        rescored = [
            Passage(p.doc_id, p.chunk_id, p.text, scores[p.chunk_id], p.title, p.url) for p in passages
        ]
        return sorted(rescored, key=lambda p: (-p.score, p.chunk_id))


def _passage(hit: Hit) -> Passage:
    return Passage(
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        text=hit.text,
        score=hit.score,
        title=str(hit.metadata.get("title") or ""),
        url=str(hit.metadata.get("url") or ""),
    )
