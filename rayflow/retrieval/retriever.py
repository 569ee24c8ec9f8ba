"""Search over one or many shards: dense, sparse (BM25) or hybrid (RRF of both), with metadata filters.

    retriever = Retriever.empty(IndexConfig())              # a live in-memory index (one shard)
    retriever.add_documents([Document(doc_id="p1", text="...", metadata={"title": "...", "year": 2021})])
    hits = retriever.search("graph neural networks", top_k=5, mode="hybrid", filters=Filters(year_min=2020))
    retriever = Retriever.load("outputs/index/index")       # what jobs/build_index.py built (any num_shards)

A query goes to every shard; each returns its best `depth` chunks per list, and the lists are merged by score
(ties by chunk id). Hybrid fuses the merged dense and sparse lists with `rrf_fuse`. Because sparse shards score
with the whole corpus's BM25 statistics and Flat search is exact, N shards return what one shard returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from rayflow.config import Config
from rayflow.retrieval.chunking import Chunk, ChunkConfig, Document, chunk_document
from rayflow.retrieval.dense import DenseConfig
from rayflow.retrieval.embedder import Embedder, EmbedderConfig
from rayflow.retrieval.filters import Filters
from rayflow.retrieval.fusion import rrf_fuse
from rayflow.retrieval.shard import Hit, IndexShard
from rayflow.retrieval.sparse import SparseConfig, TermStats, tokenize

Mode = Literal["dense", "sparse", "hybrid"]
MANIFEST = "manifest.json"


class IndexConfig(Config):
    """An index: how documents are chunked and embedded, the dense and sparse indexes, and hybrid fusion."""

    chunk: ChunkConfig = ChunkConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    dense: DenseConfig = DenseConfig()
    sparse: SparseConfig = SparseConfig()
    rrf_k: int = Field(60, ge=0, description="RRF constant k in w / (k + rank)")
    dense_weight: float = Field(1.0, ge=0, description="RRF weight of the dense list")
    sparse_weight: float = Field(1.0, ge=0, description="RRF weight of the sparse list")
    hybrid_depth: int = Field(50, ge=1, description="candidates per list fused by hybrid search")


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard holding a document's chunks (a stable hash of its id)."""
    return int.from_bytes(hashlib.sha1(doc_id.encode()).digest()[:8], "big") % num_shards


class Retriever:
    """Fans searches out to its shards and merges; `add_documents` chunks, embeds and indexes live."""

    def __init__(self, cfg: IndexConfig, shards: Sequence[IndexShard], embedder: Embedder | None = None):
        if not shards:
            raise ValueError("a retriever needs at least one shard")
        self.cfg = cfg
        self.shards = list(shards)
        self._embedder = embedder

    @classmethod
    def empty(cls, cfg: IndexConfig | None = None, num_shards: int = 1, embedder: Embedder | None = None):
        """An index with no documents yet (the embedder loads on first use unless given)."""
        cfg = cfg or IndexConfig()
        embedder = embedder or Embedder(cfg.embedder)
        shards = [IndexShard(embedder.dim, cfg.dense, cfg.sparse) for _ in range(num_shards)]
        return cls(cfg, shards, embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.cfg.embedder)
        return self._embedder

    def __len__(self) -> int:
        """Chunks indexed, over all shards."""
        return sum(len(s) for s in self.shards)

    def add_documents(self, documents: Sequence[Document | dict]) -> list[Chunk]:
        """Chunk, embed and index `documents` (each a `Document` or its dict); returns their chunks.

        Every shard's BM25 is rebuilt with the new corpus statistics: meant for small corpora (a live index);
        large ones are built by jobs/build_index.py.
        """
        docs = [d if isinstance(d, Document) else Document.model_validate(d) for d in documents]
        chunks = [c for d in docs for c in chunk_document(d, self.cfg.chunk)]
        vectors = self.embedder.encode([c.search_text for c in chunks])
        self.add_chunks(chunks, vectors)
        return chunks

    def add_chunks(self, chunks: Sequence[Chunk], vectors) -> None:
        """Index chunks with their precomputed unit vectors, each in its document's shard."""
        n = len(self.shards)
        for i, shard in enumerate(self.shards):
            mine = [j for j, c in enumerate(chunks) if shard_of(c.doc_id, n) == i]
            shard.add([chunks[j] for j in mine], vectors[mine], rebuild_sparse=False)
        stats = TermStats()
        for shard in self.shards:
            stats.update(shard.terms())
        for shard in self.shards:
            shard.rebuild_sparse(stats)

    def search(
        self, query: str, top_k: int = 10, mode: Mode = "hybrid", filters: Filters | None = None
    ) -> list[Hit]:
        """The `top_k` best chunks for `query`, best first. Dense scores are cosine similarities, sparse ones
        BM25, hybrid ones RRF (`cfg.rrf_k`, weights `cfg.dense_weight`/`cfg.sparse_weight`) over the best
        `max(cfg.hybrid_depth, top_k)` of each list."""
        if mode == "dense":
            return self.dense_search(query, top_k, filters)
        if mode == "sparse":
            return self.sparse_search(query, top_k, filters)
        if mode != "hybrid":
            raise ValueError(f"mode must be dense, sparse or hybrid, not {mode!r}")
        depth = max(self.cfg.hybrid_depth, top_k)
        dense = self.dense_search(query, depth, filters)
        sparse = self.sparse_search(query, depth, filters)
        found = {h.chunk_id: h for h in sparse}
        found.update({h.chunk_id: h for h in dense})
        dense_scores = {h.chunk_id: h.score for h in dense}
        sparse_scores = {h.chunk_id: h.score for h in sparse}
        fused = rrf_fuse(
            [[h.chunk_id for h in dense], [h.chunk_id for h in sparse]],
            k=self.cfg.rrf_k,
            weights=[self.cfg.dense_weight, self.cfg.sparse_weight],
        )
        return [
            replace(
                found[cid],
                score=score,
                dense_score=dense_scores.get(cid),
                sparse_score=sparse_scores.get(cid),
            )
            for cid, score in fused[:top_k]
        ]

    def dense_search(self, query: str, top_k: int, filters: Filters | None = None) -> list[Hit]:
        vector = self.embedder.encode([query])
        return merge_hits([shard.dense_hits(vector, top_k, filters)[0] for shard in self.shards], top_k)

    def sparse_search(self, query: str, top_k: int, filters: Filters | None = None) -> list[Hit]:
        terms = tokenize(query)
        return merge_hits([shard.sparse_hits(terms, top_k, filters) for shard in self.shards], top_k)

    def save(self, directory: str | Path) -> None:
        """Write `manifest.json` and one `shard-NNNNN/` directory per shard (what `load` reads)."""
        directory = Path(directory)
        for i, shard in enumerate(self.shards):
            shard.save(directory / shard_dir(i))
        write_manifest(directory, self.cfg, self.embedder.dim, [len(s) for s in self.shards])

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> Retriever:
        """The index in `directory` (from `save` or jobs/build_index.py), every shard loaded here."""
        directory = Path(directory)
        manifest = json.loads((directory / MANIFEST).read_text())
        cfg = IndexConfig.model_validate(manifest["config"])
        shards = [
            IndexShard.load(directory / shard_dir(i), cfg.dense, manifest["dimension"])
            for i in range(manifest["num_shards"])
        ]
        return cls(cfg, shards, embedder)


def merge_hits(per_shard: Sequence[Sequence[Hit]], top_k: int) -> list[Hit]:
    """The best `top_k` of several shards' hit lists: by score descending, ties by chunk id."""
    hits = [h for hits in per_shard for h in hits]
    return sorted(hits, key=lambda h: (-h.score, h.chunk_id))[:top_k]


def shard_dir(i: int) -> str:
    return f"shard-{i:05d}"


def write_manifest(directory: Path, cfg: IndexConfig, dim: int, chunks_per_shard: list[int], **extra) -> dict:
    """`manifest.json`: model id, dimension, metric, index type and parameters, counts, the config."""
    manifest = {
        "embedder_model": cfg.embedder.model,
        "dimension": dim,
        "metric": "inner_product (unit vectors: cosine)",
        "index_type": cfg.dense.kind,
        "index_params": cfg.dense.model_dump(),
        "sparse": {"library": "bm25s", **cfg.sparse.model_dump()},
        "num_shards": len(chunks_per_shard),
        "chunks": sum(chunks_per_shard),
        "chunks_per_shard": chunks_per_shard,
        "config": cfg.model_dump(),
        **extra,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
