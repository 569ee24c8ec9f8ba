"""faiss and BM25 indexes without a model: exactness of IVF at full probe, HNSW recall, filters before
ranking, BM25 equal to bm25s's own, shards scoring with corpus-wide statistics, and chunk offsets."""

import bm25s
import numpy as np
import pytest

from rayflow.retrieval import (
    ChunkConfig,
    DenseConfig,
    DenseIndex,
    Document,
    Filters,
    SparseIndex,
    TermStats,
    chunk_document,
    tokenize,
)


def clustered(n: int, dim: int, seed: int, centres: int = 50) -> np.ndarray:
    """Unit vectors around `centres` random directions (embedding-like, unlike i.i.d. Gaussians)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivf_with_nprobe_nlist_equals_flat():
    points = clustered(2050, 32, 0)
    base, queries = points[:2000], points[2000:]
    flat = DenseIndex(32, DenseConfig(kind="flat"))
    ivf = DenseIndex(32, DenseConfig(kind="ivf", nlist=20, nprobe=20))
    flat.add(base)
    ivf.add(base)
    (fs, fi), (vs, vi) = flat.search(queries, 10), ivf.search(queries, 10)
    np.testing.assert_array_equal(vi, fi)
    np.testing.assert_allclose(vs, fs, rtol=1e-5)


def test_hnsw_recall_at_10_on_10k_clustered_vectors():
    points = clustered(10_200, 32, 2)  # queries from the same mixture, outside the base set
    base, queries = points[:10_000], points[10_000:]
    hnsw = DenseIndex(32, DenseConfig(kind="hnsw", hnsw_m=16, ef_construction=40, ef_search=64))
    hnsw.add(base)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    found = hnsw.search(queries, 10)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95, recall
    # Every base vector is its own nearest neighbour.
    assert (hnsw.search(base[:500], 1)[1][:, 0] == np.arange(500)).all()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_dense_filters_apply_before_ranking(kind):
    points = clustered(3005, 16, 4)
    base, queries = points[:3000], points[3000:]
    index = DenseIndex(16, DenseConfig(kind=kind, nlist=10, nprobe=10, ef_search=200, exact_below=100))
    index.add(base)
    for allowed_ids in (np.arange(0, 3000, 7), np.array([5, 17, 2999])):  # selector path, exact path
        mask = np.zeros(3000, bool)
        mask[allowed_ids] = True
        scores, ids = index.search(queries, 10, allowed=mask)
        sims = queries @ base[allowed_ids].T
        n = min(10, len(allowed_ids))
        for q in range(len(queries)):
            # k results from the allowed set (not the global top-k filtered afterwards), best first.
            assert set(ids[q, :n]) <= set(allowed_ids) and (ids[q, n:] == -1).all()
            expected = allowed_ids[np.argsort(-sims[q])[:n]]
            assert len(set(ids[q, :n]) & set(expected)) >= n - 1
            assert np.all(np.diff(scores[q, :n]) <= 1e-6)


def test_bm25_equals_bm25s_and_shards_share_corpus_statistics():
    texts = [
        "graph neural networks for molecules",
        "sparse retrieval with bm25 and sparse vectors",
        "graph retrieval over citation graphs",
        "dense vectors and faiss",
        "neural retrieval of passages",
    ]
    terms = [tokenize(t) for t in texts]
    query = tokenize("graph retrieval neural")
    reference = bm25s.BM25()
    reference.index(terms, show_progress=False)
    whole = SparseIndex(terms).scores(query)
    np.testing.assert_allclose(whole, reference.get_scores(query), rtol=1e-6)  # float32 summation order
    # Shards built with the whole corpus's statistics score every document exactly as one index does.
    stats = TermStats.of(terms)
    shards = np.concatenate(
        [SparseIndex(terms[:2], stats=stats).scores(query), SparseIndex(terms[2:], stats=stats).scores(query)]
    )
    np.testing.assert_array_equal(shards, whole)
    # ...and with their own statistics they do not.
    assert not np.array_equal(
        np.concatenate([SparseIndex(terms[:2]).scores(query), SparseIndex(terms[2:]).scores(query)]), shards
    )
    assert (SparseIndex(terms).scores(["unknownterm"]) == 0).all()


def test_chunks_are_token_windows_with_exact_offsets():
    text = " ".join(f"w{i}." for i in range(50))  # 100 tokens: words and full stops
    doc = Document(doc_id="d", text=text, metadata={"title": "T", "year": 2020})
    chunks = chunk_document(doc, ChunkConfig(size=30, overlap=10))
    assert [c.chunk_id for c in chunks] == ["d#0", "d#1", "d#2", "d#3", "d#4"]
    assert [(c.token_start, c.token_end) for c in chunks] == [
        (0, 30),
        (20, 50),
        (40, 70),
        (60, 90),
        (80, 100),
    ]
    for c in chunks:
        assert c.text == text[c.start : c.end] and c.metadata["year"] == 2020
    assert chunks[0].text.startswith("w0.") and chunks[-1].text.endswith("w49.")
    assert chunks[0].search_text == "T\n" + chunks[0].text
    assert chunk_document(Document(doc_id="e", text="  \n "), ChunkConfig()) == []
    with pytest.raises(ValueError, match="overlap"):
        ChunkConfig(size=10, overlap=10)


def test_filters():
    f = Filters(field="NLP", year_min=2019, year_max=2021, source=["arxiv", "acl-anthology"])
    assert f.matches({"field": "nlp", "year": 2020, "source": "ArXiv"})
    assert not f.matches({"field": "nlp", "year": 2022, "source": "arxiv"})
    assert not f.matches({"field": "cv", "year": 2020, "source": "arxiv"})
    assert not f.matches({"field": "nlp", "source": "arxiv"})  # no year: excluded by a year bound
    assert Filters(year_max=2020).matches({"year": "2019"}) and not Filters().active
    with pytest.raises(ValueError, match="year_min"):
        Filters(year_min=2022, year_max=2020)
