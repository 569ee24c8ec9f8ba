"""Label-level metrics with unsafe as positive; unreadable and controversial predictions count as unsafe."""

import pytest

from rayflow.eval.safety.metrics import label_metrics, label_report, normalize_gold


def test_counts_and_scores():
    gold = ["unsafe", "unsafe", "unsafe", "safe", "safe", "safe"]
    pred = ["unsafe", "unknown", "safe", "safe", "controversial", "safe"]
    ok = [True, False, True, True, True, True]
    m = label_metrics(gold, pred, ok)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert m["parse_failure_rate"] == pytest.approx(1 / 6)
    assert m["predicted"] == {"safe": 3, "unsafe": 1, "controversial": 1, "unknown": 1}


def test_undefined_scores_are_zero_and_lengths_must_match():
    m = label_metrics(["safe"], ["safe"], [True])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="length"):
        label_metrics(["safe"], [], [])


def test_report_splits_by_language():
    rows = [
        {"label": "unsafe", "pred": "unsafe", "parse_ok": True, "lang": "en"},
        {"label": "safe", "pred": "unsafe", "parse_ok": True, "lang": "zh"},
        {"label": "unsafe", "pred": "unsafe", "parse_ok": True, "lang": "zh"},
    ]
    report = label_report(rows)
    assert report["overall"]["n"] == 3 and report["overall"]["accuracy"] == pytest.approx(2 / 3)
    assert report["by_lang"]["en"]["accuracy"] == 1.0 and report["by_lang"]["zh"]["precision"] == 0.5


@pytest.mark.parametrize(
    ("raw", "gold"), [("Safe", "safe"), ("UNSAFE", "unsafe"), ("安全", "safe"), (" 不安全 ", "unsafe")]
)
def test_gold_labels(raw, gold):
    assert normalize_gold(raw) == gold


@pytest.mark.parametrize("raw", ["maybe", 1, None, "controversial"])
def test_bad_gold_labels_are_named(raw):
    with pytest.raises(ValueError, match="label must be safe/unsafe"):
        normalize_gold(raw)
