"""Optional cross-encoder reranking: any sentence-transformers `CrossEncoder` id or local path.

    reranker = Reranker(RerankerConfig(model="BAAI/bge-reranker-v2-m3"))
    hits = reranker.rerank("query", hits, top_k=10)      # re-scored by the cross-encoder, best first
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pydantic import Field

from rayflow.config import Config
from rayflow.retrieval.embedder import resolve_model_path
from rayflow.retrieval.shard import Hit


class RerankerConfig(Config):
    """A cross-encoder that re-scores (query, chunk) pairs."""

    model: str = Field(..., description="sentence-transformers CrossEncoder id or local path")
    batch_size: int = Field(32, ge=1, description="pairs per forward pass")
    device: str | None = Field(None, description="torch device (None: cuda when available, else cpu)")


class Reranker:
    """A loaded cross-encoder; `rerank` orders hits by its score of (query, chunk text)."""

    def __init__(self, cfg: RerankerConfig):
        from sentence_transformers import CrossEncoder

        self.cfg = cfg
        self.model = CrossEncoder(resolve_model_path(cfg.model), device=cfg.device)

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """`hits` re-scored (`score` = the cross-encoder's), best first, ties by chunk id; the first `top_k`."""
        if not hits:
            return []
        scores = self.model.predict(
            [(query, h.text) for h in hits], batch_size=self.cfg.batch_size, show_progress_bar=False
        )
        rescored = [replace(h, score=float(s)) for h, s in zip(hits, scores)]
        rescored.sort(key=lambda h: (-h.score, h.chunk_id))
        return rescored[:top_k] if top_k is not None else rescored
