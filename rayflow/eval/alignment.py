"""Alignment-evaluation math: pairwise win rates, length control, MT-bench scores, Bradley–Terry ratings.

Pure Python + numpy; the judges that produce verdicts live elsewhere and reach models through the engine
layer. Conventions follow the public leaderboards so numbers are comparable in spirit:

* Pairwise judging shows the two answers in both orders ("position swap"); a tie counts half a win.
* The length-controlled win rate is AlpacaEval 2's `length_controlled_v1` (tatsu-lab/alpaca_eval,
  `metrics/glm_winrate.py`): an L1-penalised logistic GLM on the standardised length difference, the
  instruction's difficulty and a model term, regularised towards the baseline's own verbose and concise
  variants, read at zero length difference. The instruction term and the regularisation are used when their
  inputs are given; without them it is AlpacaEval's `length_controlled_minimal`.
* MT-bench scores are read from ``[[x]]`` with ``[x]`` as the fallback.
* Bradley–Terry ratings are Arena-Hard's: logistic regression on verdicts, strong verdicts counted three
  times, ties half a win each way, Elo = 400·coef + 1000 with the baseline anchored at 1000, and bootstrap
  confidence intervals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
"""Pairwise verdicts, from "A much better" to "B much better". A and B are display positions."""

# Score of the answer shown in position A for each verdict (a tie is half a win).
_SCORE_A = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}


def parse_pairwise_verdict(text: str) -> str | None:
    """Read a judge's pairwise verdict: Arena-Hard `[[A>B]]`-style, or MT-bench `[[A]]`/`[[B]]`/`[[C]]` (tie).

    Returns one of `VERDICTS`, or None when the output holds no verdict (or contradictory ones).
    """
    found = {m.replace(" ", "") for m in re.findall(r"\[\[\s*([AB]\s*(?:>>|>|=|<<|<)\s*[AB])\s*\]\]", text)}
    found |= {{"A": "A>B", "B": "B>A", "C": "A=B"}[m] for m in re.findall(r"\[\[\s*([ABC])\s*\]\]", text)}
    normalised = {_normalise(v) for v in found} - {None}
    return normalised.pop() if len(normalised) == 1 else None


def _normalise(v: str) -> str | None:
    if v in VERDICTS:
        return v
    flipped = {"B<<A": "A>>B", "B<A": "A>B", "B=A": "A=B", "A<B": "B>A", "A<<B": "B>>A"}
    return flipped.get(v)


@dataclass(frozen=True)
class WinRate:
    """Win rate of a model against a baseline over position-swapped games (a tie counts half)."""

    win_rate: float  # in [0, 1]
    wins: int
    ties: int
    losses: int
    n_games: int
    consistency: float  # fraction of prompts whose two games agree once positions are accounted for
    per_prompt: list[float]  # the model's mean score per prompt, in [0, 1]


def pairwise_win_rate(model_first: Sequence[str | None], model_second: Sequence[str | None]) -> WinRate:
    """Win rate from two games per prompt: `model_first[i]` is the verdict with the model's answer in position
    A, `model_second[i]` with it in position B. Verdicts are `VERDICTS` strings; None (unparseable) games
    are skipped, and a prompt with both games unparseable is left out.
    """
    if len(model_first) != len(model_second):
        raise ValueError(
            f"got {len(model_first)} first-position verdicts but {len(model_second)} swapped ones"
        )
    scores, per_prompt, agree, both = [], [], 0, 0
    for i, (a, b) in enumerate(zip(model_first, model_second)):
        games = []
        if a is not None:
            games.append(_check(a, i) and _SCORE_A[a])
        if b is not None:
            games.append(1.0 - _SCORE_A[_check(b, i) and b])
        if len(games) == 2:
            both += 1
            agree += games[0] == games[1]
        if games:
            scores.extend(games)
            per_prompt.append(sum(games) / len(games))
    if not scores:
        raise ValueError("no parseable verdicts")
    return WinRate(
        win_rate=sum(scores) / len(scores),
        wins=sum(s == 1.0 for s in scores),
        ties=sum(s == 0.5 for s in scores),
        losses=sum(s == 0.0 for s in scores),
        n_games=len(scores),
        consistency=agree / both if both else float("nan"),
        per_prompt=per_prompt,
    )


def _check(verdict: str, row: int) -> str:
    if verdict not in _SCORE_A:
        raise ValueError(f"row {row}: unknown verdict {verdict!r}; expected one of {VERDICTS} or None")
    return verdict


@dataclass(frozen=True)
class GamedGames:
    """AlpacaEval's regularisation data (its `df_gamed.csv`): the baseline's own verbose and concise variants
    judged against the baseline, one row per game. Arrays of length M.

    ``preference``: the variant's preference in [0, 1]; ``std_delta_len``: (baseline length − variant length)
    / std, already standardised; ``instruction_difficulty``: the game's instruction's difficulty.
    """

    preference: np.ndarray
    std_delta_len: np.ndarray
    instruction_difficulty: np.ndarray


# AlpacaEval's defaults: 5 folds (groups = games), C on np.logspace(-4, 4, 10), gamed rows weighted λ/2 each.
_LC_CS = np.logspace(-4, 4, 10)
LC_REGULARIZE_LAMBDA = 0.2


def length_controlled_win_rate(
    preferences: Sequence[float],
    model_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    *,
    instruction_difficulty: Sequence[float] | None = None,
    gamed: GamedGames | None = None,
    regularize_lambda: float = LC_REGULARIZE_LAMBDA,
    folds: int = 5,
    min_samples: int = 20,
) -> float | None:
    """AlpacaEval 2's length-controlled win rate, in [0, 1], or None with fewer than `min_samples` games.

    One game per row: `preferences[i]` ∈ [0, 1] is the model's preference (soft, e.g. a judge's probability;
    a tie is 0.5), lengths in characters. Features: tanh(d) with d = (baseline_len − model_len) / std (sample
    std, ddof 1), `instruction_difficulty` when given, and a model term θ (1 for the model's games, 0 for the
    `gamed` rows, which weigh `regularize_lambda`/2 each and pull the length and difficulty weights towards
    the baseline's). The GLM has no intercept and an L1 penalty whose strength is chosen by `folds`-fold
    cross-validated log loss; the result is mean_i σ(θ + w·difficulty_i), the win rate with no length
    difference. With neither input it fits tanh(d) and θ only (AlpacaEval's `length_controlled_minimal`).
    """
    p = np.asarray(preferences, dtype=float)
    if not (len(p) == len(model_lengths) == len(baseline_lengths)):
        raise ValueError("preferences, model_lengths and baseline_lengths must have the same length")
    if instruction_difficulty is not None and len(instruction_difficulty) != len(p):
        raise ValueError("instruction_difficulty must have one value per game")
    if gamed is not None and instruction_difficulty is None:
        raise ValueError("the gamed-baseline regularisation needs instruction_difficulty as well")
    if len(p) < min_samples:
        return None
    if np.any((p < 0) | (p > 1)):
        raise ValueError("preferences must lie in [0, 1]")
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    std = delta.std(ddof=1)
    length = np.tanh(delta / std) if std > 0 else np.zeros_like(delta)
    columns = (
        [length] if instruction_difficulty is None else [length, np.asarray(instruction_difficulty, float)]
    )
    x = np.stack([*columns, np.ones_like(p)], axis=1)
    y, w = p, np.ones_like(p)
    if gamed is not None:
        g = np.stack(
            [np.tanh(gamed.std_delta_len), gamed.instruction_difficulty, np.zeros(len(gamed.preference))],
            axis=1,
        )
        x, y = np.concatenate([g, x]), np.concatenate([np.asarray(gamed.preference, float), p])
        w = np.concatenate([np.full(len(g), regularize_lambda / 2), w])
    theta = _l1_logistic_cv(x, y, w if gamed is not None else None, folds)
    at_zero_length = x[-len(p) :].copy()
    at_zero_length[:, 0] = 0.0
    return float(_sigmoid(at_zero_length @ theta).mean())


def _l1_logistic_cv(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, folds: int) -> np.ndarray:
    """AlpacaEval's fit: min ||θ||₁ + C·Σ wᵢ·CE(yᵢ, σ(xᵢθ)) on soft labels, C chosen by `folds`-fold CV.

    Folds are by row, row g in fold (n−1−g) mod folds (scikit-learn's `GroupKFold` on equal-size groups);
    a fold's score is the mean weighted log loss of its rows (weights only when `w` is given, as AlpacaEval
    scores); the first C with the best total score is refitted on all rows.
    """
    n = len(y)
    folds = min(folds, n)  # scikit-learn refuses more folds than rows; a tiny sample gets one row per fold
    weights = np.ones(n) if w is None else w
    fold = (n - 1 - np.arange(n)) % folds
    scores = np.zeros(len(_LC_CS))
    for f in range(folds):
        train, test = fold != f, fold == f
        for k, c in enumerate(_LC_CS):
            theta = _l1_logistic(x[train], y[train], weights[train], c)
            q = np.clip(_sigmoid(x[test] @ theta), 1e-15, 1 - 1e-15)
            loss = y[test] * np.log(q) + (1 - y[test]) * np.log(1 - q)
            scores[k] += np.mean(loss * (weights[test] if w is not None else 1.0))
    return _l1_logistic(x, y, weights, _LC_CS[int(np.argmax(scores))])


def _l1_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float, iters: int = 100) -> np.ndarray:
    """argmin ||θ||₁ + c·Σ wᵢ·CE(yᵢ, σ(xᵢθ)) by proximal Newton: coordinate descent on the quadratic model,
    then a backtracking line search on the true objective."""

    def objective(t: np.ndarray) -> float:
        z = x @ t
        return float(np.abs(t).sum() + c * np.sum(w * (np.logaddexp(0, z) - y * z)))

    theta = np.zeros(x.shape[1])
    for _ in range(iters):
        prob = _sigmoid(x @ theta)
        grad = c * x.T @ (w * (prob - y))
        hess = c * (x * (w * prob * (1 - prob))[:, None]).T @ x + 1e-12 * np.eye(len(theta))
        d = np.zeros_like(theta)
        for _ in range(200):
            before = d.copy()
            for j in range(len(theta)):
                if hess[j, j] <= 0:
                    continue
                # Minimise the model over d_j: grad_j + (H d)_j, with |θ_j + d_j| soft-thresholded.
                rest = grad[j] + hess[j] @ d - hess[j, j] * d[j]
                z = theta[j] - rest / hess[j, j]
                d[j] = np.sign(z) * max(abs(z) - 1.0 / hess[j, j], 0.0) - theta[j]
            if np.max(np.abs(d - before)) < 1e-14:
                break
        base, step = objective(theta), 1.0
        decrease = grad @ d + np.abs(theta + d).sum() - np.abs(theta).sum()
        while step > 1e-10 and objective(theta + step * d) > base + 1e-4 * step * decrease:
            step /= 2
        theta = theta + step * d
        if np.max(np.abs(step * d)) < 1e-12:
            break
    return theta


def parse_mt_bench_score(text: str) -> float | None:
    """MT-bench judge rating: the first `[[x]]`, else the first `[x]`; None when absent (FastChat's -1)."""
    for pattern in (r"\[\[(\d+\.?\d*)\]\]", r"\[(\d+\.?\d*)\]"):
        match = re.search(pattern, text)
        if match:
            return float(match.group(1))
    return None


def mt_bench_score(ratings: Sequence[float | None]) -> float:
    """Mean rating over turns, dropping unparseable ones (None), as MT-bench reports it."""
    valid = [r for r in ratings if r is not None]
    if not valid:
        raise ValueError("no parseable MT-bench ratings")
    return sum(valid) / len(valid)


@dataclass(frozen=True)
class Rating:
    elo: float
    ci_low: float  # 2.5th bootstrap percentile
    ci_high: float  # 97.5th bootstrap percentile
    win_rate: float  # against the baseline, in [0, 1]


def bradley_terry(
    battles: Sequence[tuple[str, str, str]],
    *,
    baseline: str,
    bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, Rating]:
    """Arena-Hard-style ratings from `(model_a, model_b, verdict)` battles (verdict as in `VERDICTS`).

    Strong verdicts (`A>>B`, `B>>A`) weigh 3, others 1; a tie is half a win for each side. The baseline is
    anchored at Elo 1000; win rate vs baseline = 1 / (1 + 10^((R_baseline − R_model) / 400)).
    """
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} appears in no battle")
    for i, (_, _, v) in enumerate(battles):
        _check(v, i)
    elo = _bt_fit(battles, models, baseline)
    rng = np.random.default_rng(seed)
    samples = np.array([_bt_fit([battles[j] for j in rng.integers(0, len(battles), len(battles))], models, baseline)
                        for _ in range(bootstrap)]) if bootstrap else elo[None, :]  # fmt: skip
    out = {}
    for k, m in enumerate(models):
        win = 1.0 / (1.0 + 10 ** ((1000.0 - elo[k]) / 400.0))
        lo, hi = np.percentile(samples[:, k], [2.5, 97.5])
        out[m] = Rating(float(elo[k]), float(lo), float(hi), float(win))
    return out


def _bt_fit(battles, models: list[str], baseline: str) -> np.ndarray:
    """Elo per model (baseline = 1000). Features are ±ln 10 so coefficients are in log10-odds units."""
    free = [m for m in models if m != baseline]
    col = {m: i for i, m in enumerate(free)}
    rows, labels, weights = [], [], []
    for a, b, verdict in battles:
        x = np.zeros(len(free))
        if a in col:
            x[col[a]] += math.log(10)
        if b in col:
            x[col[b]] -= math.log(10)
        weight = 3.0 if verdict in ("A>>B", "B>>A") else 1.0
        rows.append(x)
        labels.append(_SCORE_A[verdict])
        weights.append(weight)
    coef = _logistic_fit(np.array(rows), np.array(labels), np.array(weights)) if free else np.zeros(0)
    elo = {baseline: 1000.0, **{m: 1000.0 + 400.0 * coef[col[m]] for m in free}}
    return np.array([elo[m] for m in models])


def _logistic_fit(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-6, iters: int = 100
) -> np.ndarray:
    """Weighted logistic regression on soft labels y ∈ [0, 1] by Newton's method (no intercept added).

    A tiny L2 term keeps coefficients finite when one side wins every game (the unregularised optimum is
    at infinity); it moves well-posed fits by far less than their bootstrap spread.
    """
    theta = np.zeros(x.shape[1])
    for _ in range(iters):
        prob = _sigmoid(x @ theta)
        grad = x.T @ (w * (prob - y)) + l2 * theta
        hess = (x * (w * prob * (1 - prob))[:, None]).T @ x + l2 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))
