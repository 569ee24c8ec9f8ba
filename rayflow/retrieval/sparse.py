"""The sparse index: BM25 on bm25s (eager scoring: a document x term score matrix built once).

    index = SparseIndex([tokenize(t) for t in texts])
    scores = index.scores(tokenize("graph neural networks"))      # (n_docs,) float32, 0 where no term matches

BM25's idf and average document length are corpus statistics. A shard of a larger corpus is built with the
whole corpus's `TermStats` (document frequencies, document count, total length), so every document scores
exactly as it would in one index over the whole corpus, and merging shards' top-k equals the unsharded top-k.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np
from bm25s.scoring import _build_idf_array, _build_scores_and_indices_for_matrix, _select_idf_scorer
from bm25s.stopwords import STOPWORDS_EN
from pydantic import Field

from rayflow.config import Config

_WORD = re.compile(r"\w+")
_STOP = frozenset(STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """BM25 terms of `text`: lower-cased words, English stop words (bm25s's list) removed."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class SparseConfig(Config):
    """BM25 parameters."""

    k1: float = Field(1.5, gt=0, description="BM25 term-frequency saturation")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation")
    method: Literal["lucene", "robertson", "atire"] = Field("lucene", description="BM25 variant (bm25s)")


@dataclass
class TermStats:
    """Corpus statistics BM25 needs: documents, their total length in terms, document frequency per term."""

    n_docs: int = 0
    total_len: int = 0
    df: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, token_lists: list[list[str]]) -> TermStats:
        stats = cls()
        stats.update(token_lists)
        return stats

    def update(self, token_lists: list[list[str]]) -> None:
        """Count more documents in."""
        for tokens in token_lists:
            self.n_docs += 1
            self.total_len += len(tokens)
            self.df.update(set(tokens))

    @property
    def avg_len(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0


class _BM25(bm25s.BM25):
    """bm25s's BM25 building its score matrix from given corpus statistics instead of its own documents'."""

    stats: TermStats
    id_to_term: list[str]

    def build_index_from_ids(
        self, unique_token_ids, corpus_token_ids, show_progress=False, leave_progress=False
    ):
        self.nonoccurrence_array = None  # lucene, robertson and atire score absent terms 0
        local_df = Counter(t for doc in corpus_token_ids for t in set(doc))
        global_df = {i: self.stats.df[self.id_to_term[i]] for i in unique_token_ids}
        idf = _build_idf_array(
            global_df,
            n_docs=self.stats.n_docs,
            compute_idf_fn=_select_idf_scorer(self.idf_method),
            dtype=self.dtype,
        )
        data, rows, cols = _build_scores_and_indices_for_matrix(
            corpus_token_ids=corpus_token_ids,
            idf_array=idf,
            avg_doc_len=self.stats.avg_len,
            doc_frequencies={i: local_df[i] for i in unique_token_ids},
            k1=self.k1,
            b=self.b,
            delta=self.delta,
            nonoccurrence_array=None,
            method=self.method,
            dtype=self.dtype,
            int_dtype=self.int_dtype,
            show_progress=False,
        )
        data, indices, indptr = self._np_csc(
            data=data, rows=rows, cols=cols, shape=(len(corpus_token_ids), len(unique_token_ids))
        )
        return {
            "data": data.astype(self.dtype),
            "indices": indices,
            "indptr": indptr,
            "num_docs": len(corpus_token_ids),
        }


class SparseIndex:
    """BM25 over a fixed list of tokenised documents (ids are positions), scored with `stats` (default: their own)."""

    def __init__(
        self, token_lists: list[list[str]], cfg: SparseConfig | None = None, stats: TermStats | None = None
    ):
        cfg = self.cfg = cfg or SparseConfig()
        self.n_docs = len(token_lists)
        self.bm25 = _BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
        if not self.n_docs:
            return
        vocab = {t: i for i, t in enumerate(dict.fromkeys(t for doc in token_lists for t in doc))}
        self.bm25.stats = stats if stats is not None else TermStats.of(token_lists)
        self.bm25.id_to_term = list(vocab)
        ids = [[vocab[t] for t in doc] for doc in token_lists]
        self.bm25.index((ids, vocab), create_empty_token=False, show_progress=False)

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        """BM25 score of every document for the query terms (a term repeated counts again), `(n_docs,)`."""
        if not self.n_docs:
            return np.zeros(0, np.float32)
        vocab = self.bm25.vocab_dict
        ids = [vocab[t] for t in query_tokens if t in vocab]
        if not ids:
            return np.zeros(self.n_docs, np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), np.float32)

    def save(self, directory: str | Path) -> None:
        """Write the score matrix and vocabulary (bm25s's format) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sparse.json").write_text(
            json.dumps({"n_docs": self.n_docs, "config": self.cfg.model_dump()})
        )
        if self.n_docs:
            self.bm25.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: str | Path) -> SparseIndex:
        directory = Path(directory)
        meta = json.loads((directory / "sparse.json").read_text())
        index = cls([], SparseConfig(**meta["config"]))
        index.n_docs = meta["n_docs"]
        if index.n_docs:
            index.bm25 = bm25s.BM25.load(str(directory), show_progress=False)
        return index
