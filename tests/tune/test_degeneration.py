"""Degeneration checks against hand-computed values."""

import math

import pytest

from rayflow.tune.degeneration import degeneration_reasons, repetition_rate


def test_repetition_rate_hand_values():
    assert repetition_rate([1, 2, 3, 4, 5, 6], n=2) == 0.0  # 5 distinct bigrams
    # "a b a b a b": bigrams ab ba ab ba ab -> 2 distinct of 5
    assert repetition_rate([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(1 - 2 / 5)
    assert repetition_rate([7] * 11, n=4) == pytest.approx(1 - 1 / 8)  # a single 4-gram, 8 times
    assert repetition_rate([1, 2, 3], n=4) == 0.0  # too short to repeat anything
    with pytest.raises(ValueError, match="n must be"):
        repetition_rate([1, 2], n=0)


def test_degeneration_reasons_name_each_cause():
    healthy = degeneration_reasons(
        train_metrics={"loss": 0.5},
        mean_length=30.0,
        baseline_mean_length=20.0,
        mean_repetition=0.1,
    )
    assert healthy == []
    reasons = degeneration_reasons(
        train_metrics={"eval/loss": math.nan, "eval/h": math.inf, "step": 6.0},
        mean_length=50.0,
        baseline_mean_length=20.0,
        mean_repetition=0.8,
        max_repetition=0.5,
        max_length_ratio=2.0,
    )
    assert len(reasons) == 3
    assert reasons[0] == "nan: eval/h, eval/loss"
    assert reasons[1].startswith("repetition: 0.80")
    assert reasons[2].startswith("length: 2.5x")
    # A starting model that repeats as much already: not degeneration caused by training.
    assert (
        degeneration_reasons(
            train_metrics={},
            mean_length=20.0,
            baseline_mean_length=20.0,
            mean_repetition=0.6,
            baseline_mean_repetition=0.7,
        )
        == []
    )
    # Without an evaluation stage only the training metrics count.
    assert (
        degeneration_reasons(
            train_metrics={}, mean_length=None, baseline_mean_length=None, mean_repetition=None
        )
        == []
    )
