"""Retrieval: chunking, embeddings, faiss and BM25 indexes, metadata filters, RRF fusion, reranking, shards.

Plain Python (no Ray). Usage, everything imported from `rayflow.retrieval`:

    from rayflow.retrieval import Document, Filters, IndexConfig, Retriever, rrf_fuse

    # A live in-memory index (one shard); the embedder is the offline all-MiniLM-L6-v2 (384-d) by default.
    retriever = Retriever.empty(IndexConfig())            # IndexConfig(dense=DenseConfig(kind="hnsw"), ...)
    chunks = retriever.add_documents([
        {"doc_id": "p1", "text": "...", "metadata": {"title": "...", "field": "nlp", "year": 2021,
                                                     "url": "https://...", "source": "arxiv"}},
    ])                                                    # -> [Chunk(doc_id, chunk_id="p1#0", text, start, end, ...)]
    hits = retriever.search("graph neural networks", top_k=5, mode="hybrid",     # or "dense" / "sparse"
                            filters=Filters(field=["nlp"], year_min=2020, year_max=2023, source=["arxiv"]))
    hits[0].chunk_id, hits[0].doc_id, hits[0].text, hits[0].score, hits[0].metadata
    hits[0].dense_score, hits[0].sparse_score            # the chunk's score in each list (None: not in it)

    # An index built by jobs/build_index.py (any num_shards; fanned out and merged here).
    retriever = Retriever.load("outputs/build_index/index")
    retriever.save("some/dir")                            # manifest.json + shard-00000/ ...

    rrf_fuse([["a", "b"], ["b", "c"]], k=60)              # [("b", 1/62 + 1/61), ("a", 1/61), ("c", 1/62)]
    Embedder(EmbedderConfig()).encode(["text"])           # (1, 384) float32, unit rows
    Reranker(RerankerConfig(model="<cross-encoder id or path>")).rerank(query, hits, top_k=10)

Hits are `Hit` dataclasses (`to_dict()` for JSON). Dense scores are cosine similarities, sparse ones BM25,
hybrid ones RRF of the two lists (`IndexConfig.rrf_k`, `dense_weight`, `sparse_weight`, `hybrid_depth`).
Filters apply before ranking. Searching is thread-safe; `add_documents` is not (serialise ingests).

Modules: `chunking` (Document, Chunk, ChunkConfig), `embedder`, `dense` (faiss Flat/IVF/HNSW, GPU copies when
faiss-gpu sees a GPU), `sparse` (bm25s with corpus-wide statistics), `filters`, `fusion` (rrf_fuse), `shard`
(IndexShard, Hit), `retriever` (Retriever, IndexConfig), `rerank` (cross-encoders).
"""

from rayflow.retrieval.chunking import Chunk, ChunkConfig, Document, chunk_document
from rayflow.retrieval.dense import DenseConfig, DenseIndex
from rayflow.retrieval.embedder import DEFAULT_EMBEDDER, Embedder, EmbedderConfig, resolve_model_path
from rayflow.retrieval.filters import Filters
from rayflow.retrieval.fusion import rrf_fuse
from rayflow.retrieval.rerank import Reranker, RerankerConfig
from rayflow.retrieval.retriever import IndexConfig, Mode, Retriever, merge_hits, shard_of
from rayflow.retrieval.shard import Hit, IndexShard
from rayflow.retrieval.sparse import SparseConfig, SparseIndex, TermStats, tokenize

__all__ = [
    "DEFAULT_EMBEDDER",
    "Chunk",
    "ChunkConfig",
    "DenseConfig",
    "DenseIndex",
    "Document",
    "Embedder",
    "EmbedderConfig",
    "Filters",
    "Hit",
    "IndexConfig",
    "IndexShard",
    "Mode",
    "Reranker",
    "RerankerConfig",
    "Retriever",
    "SparseConfig",
    "SparseIndex",
    "TermStats",
    "chunk_document",
    "merge_hits",
    "resolve_model_path",
    "rrf_fuse",
    "shard_of",
    "tokenize",
]
