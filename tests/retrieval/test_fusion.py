"""rrf_fuse against its definition: score(d) = sum of w_i / (k + rank_i(d)) over the lists containing d."""

import pytest

from rayflow.retrieval import rrf_fuse


def test_scores_follow_each_lists_own_ranks():
    # Lists of different lengths: zipping them by position would misrank "x" (rank 1 of the short list).
    fused = dict(rrf_fuse([["a", "b", "c", "d"], ["x"], ["c", "a"]], k=60))
    assert fused == pytest.approx(
        {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 64, "x": 1 / 61}
    )
    order = [doc for doc, _ in rrf_fuse([["a", "b", "c", "d"], ["x"], ["c", "a"]], k=60)]
    assert order == ["a", "c", "x", "b", "d"]


def test_ties_by_id_and_weights_and_k():
    # Symmetric lists tie exactly (whatever the order of the additions); ties go by id ascending.
    fused = rrf_fuse([["c", "a", "b"], ["b", "c", "a"], ["a", "b", "c"]], k=1)
    assert [d for d, _ in fused] == ["a", "b", "c"]
    assert fused[0][1] == fused[1][1] == fused[2][1] == pytest.approx(1 / 2 + 1 / 3 + 1 / 4)
    assert [d for d, _ in rrf_fuse([["z"], ["y"]])] == ["y", "z"]
    fused = rrf_fuse([["a", "b"], ["b", "a"]], k=0, weights=[2.0, 0.5])
    assert fused == [("a", pytest.approx(2 / 1 + 0.5 / 2)), ("b", pytest.approx(2 / 2 + 0.5 / 1))]


def test_empty_lists_contribute_nothing_and_wrong_weights_raise():
    assert rrf_fuse([]) == []
    assert rrf_fuse([[], []]) == []
    assert rrf_fuse([["a"], []], weights=[1.0, 5.0]) == [("a", pytest.approx(1 / 61))]
    with pytest.raises(ValueError, match="weights"):
        rrf_fuse([["a"], ["b"]], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        rrf_fuse([["a"]], weights=[1.0, 1.0])
