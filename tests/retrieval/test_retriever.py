"""The Retriever with the real offline embedder on the shipped papers: unit 384-d vectors, N shards returning
what one shard returns (dense, sparse, hybrid, filtered), filters, live adds, save/load."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rayflow.retrieval import (
    DEFAULT_EMBEDDER,
    Document,
    Embedder,
    Filters,
    IndexConfig,
    Reranker,
    RerankerConfig,
    Retriever,
    chunk_document,
    resolve_model_path,
)
from tests.conftest import REPO

PAPERS = [Document(**json.loads(line)) for line in (REPO / "examples/papers/papers.jsonl").open()][:80]
QA = [json.loads(line) for line in (REPO / "examples/papers/qa.jsonl").open()]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def corpus(embedder):
    """The first 80 papers' chunks and their vectors, embedded once for every index built here."""
    chunks = [c for d in PAPERS for c in chunk_document(d)]
    return chunks, embedder.encode([c.search_text for c in chunks])


def test_offline_embedder_is_the_shipped_minilm_with_unit_384d_vectors(embedder):
    path = Path(resolve_model_path(DEFAULT_EMBEDDER))
    assert path.is_relative_to(Path(os.environ["RAYFLOW_CACHE"])) and (path / "modules.json").is_file()
    assert not (path / "2_Normalize").exists()  # the module modules.json names is missing: normalised by us
    v = embedder.encode(
        ["faiss searches vectors by inner product", "a cat sat on the mat", "vector search engine"]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[2] @ v[0] > v[2] @ v[1]


def build(corpus, embedder, num_shards: int, **cfg) -> Retriever:
    chunks, vectors = corpus
    retriever = Retriever.empty(IndexConfig(**cfg), num_shards=num_shards, embedder=embedder)
    retriever.add_chunks(chunks, vectors)
    return retriever


def results(retriever: Retriever, queries, filters=None):
    """Per query and mode: the chunk ids found, and their scores (to 1e-5: a query embedded again can differ
    in the last bits, as CPU kernels vary with the threads they get)."""
    found = [retriever.search(q, 8, mode, filters) for q in queries for mode in ("dense", "sparse", "hybrid")]
    return [[h.chunk_id for h in hits] for hits in found], [
        [round(h.score, 5) for h in hits] for hits in found
    ]


def test_two_and_three_shards_return_what_one_shard_returns(corpus, embedder, tmp_path):
    queries = [q["query"] for q in QA[:6]]
    one = build(corpus, embedder, 1, hybrid_depth=20)
    for n in (2, 3):
        sharded = build(corpus, embedder, n, hybrid_depth=20)
        assert all(len(s) for s in sharded.shards)
        assert results(sharded, queries) == results(one, queries)
        assert results(sharded, queries, Filters(year_min=2018)) == results(
            one, queries, Filters(year_min=2018)
        )
    sharded.save(tmp_path / "index")
    loaded = Retriever.load(tmp_path / "index", embedder=embedder)
    assert len(loaded.shards) == 3 and results(loaded, queries) == results(one, queries)


def test_filters_modes_and_live_adds(corpus, embedder):
    retriever = build(corpus, embedder, 1)
    nlp_recent = Filters(field=["nlp"], year_min=2016, year_max=2022)
    for mode in ("dense", "sparse", "hybrid"):
        hits = retriever.search("a benchmark result above the baseline", 10, mode, nlp_recent)
        assert hits and all(nlp_recent.matches(h.metadata) for h in hits)
    allowed = sum(nlp_recent.matches(c.metadata) for c in corpus[0])
    assert len(retriever.search("method", 500, "dense", nlp_recent)) == allowed  # filtered before top-k
    # A lexical question finds its gold chunk first in sparse and hybrid search.
    q = next(
        q for q in QA if q["gold_doc_ids"][0] in {d.doc_id for d in PAPERS} and q["query"].startswith("What")
    )
    for mode in ("sparse", "hybrid"):
        assert retriever.search(q["query"], 3, mode)[0].chunk_id in q["gold_chunk_ids"]
    hybrid = retriever.search(q["query"], 5, "hybrid")
    assert hybrid[0].dense_score is not None or hybrid[0].sparse_score is not None
    # Documents added live are searchable at once, by either list.
    before = len(retriever)
    added = retriever.add_documents(
        [
            {
                "doc_id": "live-1",
                "text": "Quokkanet counts marsupials in drone footage.",
                "metadata": {"year": 2025},
            }
        ]
    )
    assert [c.chunk_id for c in added] == ["live-1#0"] and len(retriever) == before + 1
    assert retriever.search("Quokkanet marsupials", 1, "sparse")[0].doc_id == "live-1"
    assert retriever.search("counting marsupials from drone video", 1, "dense")[0].doc_id == "live-1"
    assert retriever.search("Quokkanet", 5, "hybrid", Filters(year_max=2024))[0].doc_id != "live-1"


def test_cross_encoder_reranker_reorders_by_its_own_scores(corpus, embedder):
    # Any CrossEncoder id or path: here MiniLM's encoder with a fresh classification head (offline).
    reranker = Reranker(RerankerConfig(model=DEFAULT_EMBEDDER))
    hits = build(corpus, embedder, 1).search(QA[0]["query"], 6, "hybrid")
    reranked = reranker.rerank(QA[0]["query"], hits, top_k=4)
    expected = reranker.model.predict([(QA[0]["query"], h.text) for h in hits])
    by_id = {h.chunk_id: float(s) for h, s in zip(hits, expected)}
    assert [h.chunk_id for h in reranked] == sorted(by_id, key=lambda c: (-by_id[c], c))[:4]
    assert [h.score for h in reranked] == pytest.approx([by_id[h.chunk_id] for h in reranked], abs=1e-5)
    assert reranker.rerank("q", []) == []
