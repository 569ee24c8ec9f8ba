"""One index shard: chunks with their metadata, a dense (faiss) and a sparse (BM25) index over them.

A shard answers `dense_hits` (query vectors) and `sparse_hits` (query terms) with filters applied before
ranking, best first, ties by chunk id; `Retriever` fans a query out to its shards and merges. Positions are the
ids both indexes share. On disk a shard is a directory: `chunks.parquet`, `dense.faiss`, `sparse/`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayflow.retrieval.chunking import Chunk
from rayflow.retrieval.dense import DenseConfig, DenseIndex
from rayflow.retrieval.filters import Filters, MetadataColumns
from rayflow.retrieval.sparse import SparseConfig, SparseIndex, TermStats, tokenize


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk: `score` is the search mode's (cosine, BM25 or fused RRF); `dense_score` and
    `sparse_score` are set for the lists the chunk was found in."""

    chunk_id: str
    doc_id: str
    text: str
    score: float
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)
    dense_score: float | None = None
    sparse_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IndexShard:
    """Chunks plus their dense and sparse indexes; `add` appends (the sparse index is rebuilt)."""

    def __init__(self, dim: int, dense: DenseConfig | None = None, sparse: SparseConfig | None = None):
        self.dim = dim
        self.dense = DenseIndex(dim, dense)
        self.sparse_cfg = sparse or SparseConfig()
        self.sparse = SparseIndex([], self.sparse_cfg)
        self.chunks: list[Chunk] = []
        self._columns = MetadataColumns([])
        self._chunk_ids = np.array([], dtype=object)

    def __len__(self) -> int:
        return len(self.chunks)

    def terms(self) -> list[list[str]]:
        """Every chunk's BM25 terms, in position order."""
        return [tokenize(c.search_text) for c in self.chunks]

    def add(
        self,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        stats: TermStats | None = None,
        rebuild_sparse: bool = True,
    ) -> None:
        """Append chunks and their `(n, dim)` unit vectors; BM25 is rebuilt with `stats` (None: this
        shard's own; a sharded corpus passes the whole corpus's), or later by `rebuild_sparse`."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        self.dense.add(vectors)
        self.chunks.extend(chunks)
        self._columns = MetadataColumns([c.metadata for c in self.chunks])
        self._chunk_ids = np.array([c.chunk_id for c in self.chunks], dtype=object)
        if rebuild_sparse:
            self.rebuild_sparse(stats)

    def rebuild_sparse(self, stats: TermStats | None = None) -> None:
        """Rebuild BM25 over the current chunks with `stats` (None: this shard's own)."""
        self.sparse = SparseIndex(self.terms(), self.sparse_cfg, stats)

    def _allowed(self, filters: Filters | None) -> np.ndarray | None:
        return filters.mask(self._columns) if filters is not None and filters.active else None

    def dense_hits(self, queries: np.ndarray, k: int, filters: Filters | None = None) -> list[list[Hit]]:
        """Per query vector, the top-`k` chunks by inner product among those `filters` allow."""
        scores, ids = self.dense.search(queries, k, self._allowed(filters))
        return [
            self._ranked([(int(i), float(s)) for s, i in zip(row_s, row_i) if i >= 0], "dense_score")
            for row_s, row_i in zip(scores, ids)
        ]

    def sparse_hits(self, terms: list[str], k: int, filters: Filters | None = None) -> list[Hit]:
        """The top-`k` chunks by BM25 for the query `terms` (only chunks matching a term) that `filters` allow."""
        scores = self.sparse.scores(terms)
        allowed = self._allowed(filters)
        candidates = np.flatnonzero((scores > 0) & (allowed if allowed is not None else True))
        if len(candidates) > k > 0:
            kth = np.partition(scores[candidates], -k)[-k]
            candidates = candidates[scores[candidates] >= kth]  # ties at the k-th score stay for the sort
        return self._ranked([(int(i), float(scores[i])) for i in candidates], "sparse_score")[:k]

    def _ranked(self, found: list[tuple[int, float]], kind: str) -> list[Hit]:
        found.sort(key=lambda item: (-item[1], self._chunk_ids[item[0]]))
        return [self.hit(i, s, **{kind: s}) for i, s in found]

    def hit(self, position: int, score: float, **scores: float) -> Hit:
        c = self.chunks[position]
        return Hit(c.chunk_id, c.doc_id, c.text, score, c.start, c.end, dict(c.metadata), **scores)

    def save(self, directory: str | Path) -> None:
        """Write the shard to `directory`: chunks.parquet, dense.faiss, sparse/."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(chunks_table(self.chunks), directory / "chunks.parquet")
        self.dense.save(directory / "dense.faiss")
        self.sparse.save(directory / "sparse")

    @classmethod
    def load(cls, directory: str | Path, dense: DenseConfig, dim: int) -> IndexShard:
        """A shard written by `save` (or by the build_index job)."""
        directory = Path(directory)
        sparse = SparseIndex.load(directory / "sparse")
        shard = cls(dim, dense, sparse.cfg)
        shard.dense = DenseIndex.load(directory / "dense.faiss", dim, dense)
        shard.sparse = sparse
        shard.chunks = chunks_from_table(pq.read_table(directory / "chunks.parquet"))
        shard._columns = MetadataColumns([c.metadata for c in shard.chunks])
        shard._chunk_ids = np.array([c.chunk_id for c in shard.chunks], dtype=object)
        if not (shard.dense.ntotal == sparse.n_docs == len(shard.chunks)):
            raise ValueError(
                f"{directory}: {len(shard.chunks)} chunks, {shard.dense.ntotal} vectors, {sparse.n_docs} BM25 docs"
            )
        return shard


CHUNK_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("chunk_id", pa.string()),
        ("text", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("token_start", pa.int64()),
        ("token_end", pa.int64()),
        ("metadata", pa.string()),  # JSON: documents' metadata keys vary
    ]
)


def chunks_table(chunks: Sequence[Chunk]) -> pa.Table:
    """Chunks as an Arrow table with `CHUNK_SCHEMA` (metadata as JSON)."""
    rows = [{**asdict(c), "metadata": json.dumps(dict(c.metadata), sort_keys=True)} for c in chunks]
    return pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA)


def chunks_from_table(table: pa.Table) -> list[Chunk]:
    return [
        Chunk(**{**row, "metadata": json.loads(row["metadata"])})
        for row in table.select(CHUNK_SCHEMA.names).to_pylist()
    ]
