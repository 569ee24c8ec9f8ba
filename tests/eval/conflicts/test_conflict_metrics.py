"""Conflict-detection metrics on hand-counted predictions: per class, per type/kind, per intensity, the plot."""

import pytest

from rayflow.eval.conflicts.metrics import detector_metrics, plot_metrics, prf


def row(conflict, pred, kind="answer", type_=None, intensity=None):
    return {"conflict": conflict, "pred": pred, "kind": kind, "type": type_, "intensity": intensity}


def test_prf_counts_by_hand_and_is_zero_on_empty_sets():
    gold = [True, True, True, False, False]
    pred = [True, False, True, True, False]
    m = prf(gold, pred)  # tp 2, predicted 3, support 3
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["support"] == 3 and m["accuracy"] == pytest.approx(3 / 5)
    neg = prf(gold, pred, positive=False)  # tp 1, predicted 2, support 2
    assert (neg["precision"], neg["recall"], neg["support"]) == (0.5, 0.5, 2)
    assert prf([], []) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "accuracy": 0.0}
    assert prf([False, False], [False, False])["f1"] == 0.0  # no positives: 0, never NaN


def test_detector_metrics_group_by_type_kind_and_intensity(tmp_path):
    rows = [
        row(True, True, "answer", "entity"),
        row(True, False, "answer", "entity"),
        row(False, True, "answer", "entity"),
        row(True, True, "lexical", "number"),
        row(False, False, "lexical", "number"),
        row(True, True, "factoid", "negation", "negated:1"),
        row(True, False, "factoid", "negation", "negated:2"),
        row(True, True, "factoid", None, "negated:10"),
        row(True, False, "factoid", "negation", "shared:0"),
    ]
    m = detector_metrics(rows)
    assert m["n"] == 9 and m["accuracy"] == pytest.approx(5 / 9)
    assert m["classes"]["conflict"]["support"] == 7 and m["classes"]["no_conflict"]["support"] == 2
    assert m["classes"]["conflict"]["precision"] == pytest.approx(4 / 5)
    assert m["classes"]["no_conflict"]["recall"] == pytest.approx(1 / 2)
    entity = m["by_type"]["entity"]
    assert (entity["n"], entity["precision"], entity["recall"]) == (3, 0.5, 0.5)
    assert set(m["by_type"]) == {"entity", "number", "negation"}  # untyped pairs count only overall
    assert m["by_kind"]["lexical"]["f1"] == 1.0 and m["by_kind"]["factoid"]["recall"] == 0.5
    assert list(m["by_intensity"]) == ["negated:1", "negated:2", "negated:10", "shared:0"]  # numeric order
    assert m["by_intensity"]["negated:2"] == {"n": 1, "accuracy": 0.0}
    plot_metrics(tmp_path / "conflicts.png", {"a": m, "b": detector_metrics(rows[:5])})
    assert (tmp_path / "conflicts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
