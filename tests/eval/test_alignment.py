"""Alignment-evaluation math against hand-computed values."""

import math

import pytest

from rayflow.eval.alignment import (
    bradley_terry,
    length_controlled_win_rate,
    mt_bench_score,
    pairwise_win_rate,
    parse_mt_bench_score,
    parse_pairwise_verdict,
)


@pytest.mark.parametrize(
    "text,verdict",
    [
        ("My final verdict is [[A>>B]].", "A>>B"),
        ("[[ B > A ]]", "B>A"),
        ("[[B<A]]", "A>B"),
        ("Verdict: [[A]]", "A>B"),
        ("[[B]]", "B>A"),
        ("It is a tie: [[C]]", "A=B"),
        ("[[A=B]]", "A=B"),
        ("no verdict here [A]", None),
        ("[[A]] ... on reflection [[B]]", None),
        ("[[A>B]] and again [[A>B]]", "A>B"),
    ],
)
def test_parse_pairwise_verdict(text, verdict):
    assert parse_pairwise_verdict(text) == verdict


def test_position_swapped_win_rate_by_hand():
    # prompt 0: model wins both games; prompt 1: tie then loss (inconsistent); prompt 2: one loss, one unreadable
    wr = pairwise_win_rate(["A>B", "A=B", "B>A"], ["B>A", "A>B", None])
    assert wr.win_rate == pytest.approx(2.5 / 5)
    assert (wr.wins, wr.ties, wr.losses, wr.n_games) == (2, 1, 2, 5)
    assert wr.consistency == pytest.approx(1 / 2)
    assert wr.per_prompt == pytest.approx([1.0, 0.25, 0.0])


def test_win_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="row 1"):
        pairwise_win_rate(["A>B", "A>>>B"], ["B>A", "B>A"])
    with pytest.raises(ValueError, match="2 first-position"):
        pairwise_win_rate(["A>B", "A>B"], ["B>A"])


def test_length_control_is_near_the_raw_rate_when_lengths_match():
    prefs = [1.0] * 14 + [0.0] * 6
    # AlpacaEval's L1 penalty (strength chosen by cross-validation) shrinks the model term a little towards 0.5.
    assert length_controlled_win_rate(prefs, [100] * 20, [100] * 20) == pytest.approx(0.7, abs=0.01)
    assert length_controlled_win_rate([0.5] * 20, [100] * 20, [100] * 20) == pytest.approx(0.5, abs=1e-9)


def test_length_control_discounts_wins_bought_with_length():
    # The model wins every game where it is much longer and loses most games at equal length.
    prefs = [1.0] * 15 + [1.0, 0.0, 0.0, 0.0, 0.0] * 3
    model = [400] * 15 + [100] * 15
    base = [100] * 30
    raw = sum(prefs) / len(prefs)
    lc = length_controlled_win_rate(prefs, model, base)
    assert lc < raw - 0.15
    assert length_controlled_win_rate(prefs[:5], model[:5], base[:5]) is None


@pytest.mark.parametrize(
    "text,score",
    [
        ("Rating: [[7]]", 7.0),
        ("[[8.5]]", 8.5),
        ("I'd say [6]", 6.0),
        ("[[9]] not [3]", 9.0),
        ("great!", None),
    ],
)
def test_mt_bench_parsing(text, score):
    assert parse_mt_bench_score(text) == score


def test_mt_bench_mean_drops_failures():
    assert mt_bench_score([8.0, None, 6.0]) == 7.0


def test_bradley_terry_by_hand():
    battles = [("m", "base", "A>B")] * 3 + [("base", "m", "A>B")]  # m wins 3 of 4
    r = bradley_terry(battles, baseline="base", bootstrap=50)
    assert r["base"].elo == pytest.approx(1000.0)
    assert r["m"].elo == pytest.approx(1000 + 400 * math.log10(3), abs=1e-3)
    assert r["m"].win_rate == pytest.approx(0.75, abs=1e-6)
    assert r["m"].ci_low <= r["m"].elo <= r["m"].ci_high


def test_bradley_terry_ties_and_strong_verdicts():
    ties = [("m", "base", "A>B"), ("m", "base", "A=B"), ("base", "m", "A=B"), ("m", "base", "B>A")]
    assert bradley_terry(ties, baseline="base", bootstrap=0)["m"].elo == pytest.approx(1000.0, abs=1e-6)
    strong = [("m", "base", "A>>B"), ("m", "base", "B>A")]  # weights 3 : 1 -> p = 0.75
    assert bradley_terry(strong, baseline="base", bootstrap=0)["m"].win_rate == pytest.approx(0.75, abs=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        bradley_terry(strong, baseline="gpt")
