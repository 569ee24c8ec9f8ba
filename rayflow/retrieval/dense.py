"""The dense index: faiss over unit vectors, inner product (= cosine), Flat, IVF or HNSW by config.

    index = DenseIndex(384, DenseConfig(kind="hnsw"))
    index.add(vectors)                                   # ids are positions: 0, 1, 2, ... in adding order
    scores, ids = index.search(queries, k=10, allowed=mask)   # (q, k) each; id -1 where fewer than k exist

`allowed` (a boolean mask over positions) is applied inside the search, before ranking: faiss skips the
excluded vectors (an `IDSelector`), and when only a few vectors are allowed they are scored exactly instead
(HNSW's graph walk can stall on a very selective filter). IVF trains on its first `add` (nlist 0 means
4 * sqrt(n)). With faiss-gpu and a GPU, Flat and IVF searches without a filter run on a GPU copy of the index
(same code path, `gpu=true`); the CPU index stays the one that is saved and filtered.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import Field

from rayflow.config import Config


class DenseConfig(Config):
    """faiss index type and its parameters."""

    kind: Literal["flat", "ivf", "hnsw"] = Field("flat", description="flat (exact), ivf or hnsw")
    nlist: int = Field(0, ge=0, description="ivf: inverted lists (0: 4*sqrt(vectors at training))")
    nprobe: int = Field(16, ge=1, description="ivf: lists visited per query")
    hnsw_m: int = Field(32, ge=2, description="hnsw: neighbours per node")
    ef_construction: int = Field(80, ge=1, description="hnsw: candidate list size while building")
    ef_search: int = Field(128, ge=1, description="hnsw: candidate list size per query (>= k)")
    exact_below: int = Field(2048, ge=0, description="filtered searches allowing fewer vectors are exact")
    gpu: bool = Field(True, description="search a GPU copy when faiss-gpu sees a GPU (flat, ivf)")


class DenseIndex:
    """faiss inner-product index over unit vectors; ids are insertion positions."""

    def __init__(self, dim: int, cfg: DenseConfig | None = None, index: faiss.Index | None = None):
        self.dim, self.cfg = dim, cfg or DenseConfig()
        self.index = index if index is not None else _new_index(dim, self.cfg)
        self._gpu = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append `(n, dim)` float32 vectors (unit length); their ids continue from `ntotal`."""
        vectors = _as_matrix(vectors, self.dim)
        if not len(vectors):
            return
        if not self.index.is_trained:
            self._train(vectors)
        self.index.add(vectors)
        self._gpu = None  # rebuilt on the next unfiltered search

    def _train(self, vectors: np.ndarray) -> None:
        nlist = self.cfg.nlist or max(1, int(4 * math.sqrt(len(vectors))))
        if len(vectors) < nlist:
            raise ValueError(
                f"an ivf index with nlist={nlist} needs at least {nlist} vectors in its first add"
            )
        quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.train(vectors)
        self.index.make_direct_map()  # exact scoring of a filtered subset reconstructs vectors

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` `(scores, ids)`, each `(n_queries, k)`, best first; ids -1 (score -inf) past the end.

        `allowed`: boolean mask of length `ntotal`; only those vectors can be returned.
        """
        queries = _as_matrix(queries, self.dim)
        if k <= 0 or self.ntotal == 0:
            return np.full((len(queries), max(k, 0)), -np.inf, np.float32), np.full(
                (len(queries), max(k, 0)), -1
            )
        if allowed is None:
            scores, ids = self._searcher().search(queries, k, params=self._params(None))
        else:
            chosen = np.flatnonzero(allowed).astype(np.int64)
            if len(chosen) <= self.cfg.exact_below:
                scores, ids = self._exact(queries, k, chosen)
            else:
                params = self._params(faiss.IDSelectorBatch(chosen))
                scores, ids = self.index.search(queries, k, params=params)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _exact(self, queries: np.ndarray, k: int, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if not len(chosen):
            return scores, ids
        sims = queries @ self.index.reconstruct_batch(chosen).T  # (q, |chosen|)
        n = min(k, len(chosen))
        for q in range(len(queries)):
            # Best n by score, ties by position (as Flat orders them).
            order = np.lexsort((chosen, -sims[q]))[:n]
            scores[q, :n], ids[q, :n] = sims[q, order], chosen[order]
        return scores, ids

    def _params(self, selector) -> faiss.SearchParameters:
        if self.cfg.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=min(self.cfg.nprobe, self.index.nlist))
        if self.cfg.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.cfg.ef_search)
        return faiss.SearchParameters(sel=selector)

    def _searcher(self) -> faiss.Index:
        if not (self.cfg.gpu and self.cfg.kind != "hnsw" and gpu_count() > 0):
            return self.index
        if self._gpu is None:
            self._gpu = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu

    def save(self, path: str | Path) -> None:
        """Write the (CPU) index to `path` (faiss's own format); an IVF index never trained (no vectors) is
        saved as an empty Flat index, which searches the same (nothing)."""
        index = self.index if self.index.is_trained else faiss.IndexFlatIP(self.dim)
        faiss.write_index(index, str(path))

    @classmethod
    def load(cls, path: str | Path, dim: int, cfg: DenseConfig) -> DenseIndex:
        index = faiss.read_index(str(path))
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()
        return cls(dim, cfg, index)


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def _new_index(dim: int, cfg: DenseConfig) -> faiss.Index:
    if cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        return index
    if cfg.kind == "ivf":
        # Untrained until the first add: a placeholder that reports is_trained=False.
        return _UntrainedIVF(dim)
    return faiss.IndexFlatIP(dim)


class _UntrainedIVF:
    """Stands in for an IVF index until its first `add` trains it (nlist depends on the data)."""

    def __init__(self, dim: int):
        self.d, self.ntotal, self.is_trained = dim, 0, False


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {vectors.shape}")
    return vectors
