"""The question-type policy of Assessment+: state, action, reward, and the policies that map one to the other.

    state = State(turn=2, max_turns=8, scores=[0.5, 0.75], types=["seed", "deepen"], uncovered=0.33)
    policy = load_policy("examples/agent/policy.json")        # LinUCB, trained by jobs/train_agent_policy.py
    policy.choose(state, turn_rng(seed, item_index, turn))     # -> "deepen"
    RandomPolicy().choose(...), FixedPolicy().choose(...)      # the baselines

Action: one of `QUESTION_TYPES`. The first turn of every item asks its seed question (type `seed`); the
policy picks every later turn's type. Formulas (docs/agent.md):

    uncertainty  u_n = sqrt((SS_n + n0 v0) / ((n + n0 - 1)(n + n0)))   SS_n = sum (s_i - mean s)^2, n scores
                 (n0 = 2 pseudo-scores of variance v0 = 1/12, a uniform score: u_0 = 0.289)
    reward       r_t = 1 - u_t / u_{t-1} - lambda * [a_t == a_{t-1}]     (the relative drop in uncertainty)
    state x_t    [1, t/k, s_last, s_last - mean(s_<last), u, uncovered, onehot(a_{t-1}), share of each type]
    LinUCB       A_a = I + sum x x^T,  b_a = sum r x,  score_a(x) = x . A_a^-1 b_a + alpha sqrt(x . A_a^-1 x)

The learned policy is a disjoint LinUCB contextual bandit (Li et al., 2010): one ridge regression of the
reward on the state per action; it explores with `alpha` while training and picks the best mean (alpha 0) when
deployed. Plain numpy: tested and used without Ray.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QUESTION_TYPES = ("follow_up", "deepen", "challenge", "clarify", "switch_topic")
SEED = "seed"  # the type of an item's first turn: its seed question, asked before the policy chooses
PRIOR_N = 2.0  # pseudo-scores of the uncertainty's prior
PRIOR_VAR = 1.0 / 12.0  # their variance: a score uniform on [0, 1]
FEATURES = (
    "bias",
    "turn_fraction",
    "last_score",
    "trend",
    "uncertainty",
    "uncovered",
    *(f"last_{t}" for t in QUESTION_TYPES),
    *(f"share_{t}" for t in QUESTION_TYPES),
)


@dataclass
class State:
    """What the policy sees before choosing turn `turn` (0-based) of an item with at most `max_turns` turns.

    `scores` are the graded turns' criterion fulfilment in [0, 1] (turns whose grade did not parse are left
    out); `types` the types asked so far (the first is `seed`); `uncovered` the share of criterion points no
    answer has reached yet (scored above 0).
    """

    turn: int
    max_turns: int
    scores: list[float] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    uncovered: float = 1.0

    def features(self) -> np.ndarray:
        """The state vector x_t, shape (len(FEATURES),), in the order of `FEATURES`."""
        last = self.scores[-1] if self.scores else 0.5
        trend = last - float(np.mean(self.scores[:-1])) if len(self.scores) >= 2 else 0.0
        previous = self.types[-1] if self.types else SEED
        asked = [t for t in self.types if t != SEED]
        share = [asked.count(t) / max(1, len(asked)) for t in QUESTION_TYPES]
        head = [
            1.0,
            self.turn / max(1, self.max_turns),
            last,
            trend,
            uncertainty(self.scores),
            self.uncovered,
        ]
        return np.array([*head, *(float(previous == t) for t in QUESTION_TYPES), *share])


def uncertainty(scores: Sequence[float]) -> float:
    """u_n: the standard error of the mean score, shrunk towards a uniform score's (2 pseudo-scores)."""
    n = len(scores)
    ss = float(np.sum((np.asarray(scores) - np.mean(scores)) ** 2)) if n else 0.0
    return math.sqrt((ss + PRIOR_N * PRIOR_VAR) / ((n + PRIOR_N - 1) * (n + PRIOR_N)))


def reward(before: Sequence[float], after: Sequence[float], action: str, previous: str | None,
           redundancy_penalty: float) -> float:  # fmt: skip
    """r_t: the relative drop in uncertainty of the ability estimate, minus a penalty for repeating the last
    type. Relative, so early and late turns weigh alike (u shrinks like 1/n)."""
    return 1.0 - uncertainty(after) / uncertainty(before) - redundancy_penalty * float(action == previous)


def turn_rng(seed: int, item_index: int, turn: int) -> np.random.Generator:
    """The random stream of one turn: the same (seed, item, turn) always draws the same, so a resumed session
    chooses what an uninterrupted one would have."""
    return np.random.default_rng([seed, item_index, turn])


class RandomPolicy:
    """Baseline: a uniformly random type every turn."""

    name = "random"

    def choose(self, state: State, rng: np.random.Generator) -> str:
        return QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]


class FixedPolicy:
    """Baseline: the types in a fixed cycle (follow_up, deepen, challenge, clarify, switch_topic)."""

    name = "fixed"

    def choose(self, state: State, rng: np.random.Generator) -> str:
        return QUESTION_TYPES[(state.turn - 1) % len(QUESTION_TYPES)]


class LinUCBPolicy:
    """Disjoint LinUCB over `QUESTION_TYPES`: per action a, A_a (d x d) and b_a (d,); d = len(FEATURES)."""

    name = "learned"

    def __init__(self, alpha: float = 0.0, ridge: float = 1.0, A: np.ndarray | None = None,
                 b: np.ndarray | None = None, info: dict | None = None):  # fmt: skip
        d, k = len(FEATURES), len(QUESTION_TYPES)
        self.alpha = alpha
        self.A = np.stack([ridge * np.eye(d)] * k) if A is None else np.asarray(A, dtype=float)
        self.b = np.zeros((k, d)) if b is None else np.asarray(b, dtype=float)
        self.info = info or {}
        self._inv: np.ndarray | None = None  # A^-1, kept until A changes

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Per action: x . A^-1 b + alpha sqrt(x . A^-1 x), shape (len(QUESTION_TYPES),)."""
        if self._inv is None:
            self._inv = np.linalg.inv(self.A)
        inv = self._inv
        mean = np.einsum("kij,kj,i->k", inv, self.b, x)
        width = np.sqrt(np.einsum("i,kij,j->k", x, inv, x))
        return mean + self.alpha * width

    def choose(self, state: State, rng: np.random.Generator) -> str:
        s = self.scores(state.features())
        best = np.flatnonzero(s >= s.max() - 1e-12)  # ties (an untrained policy): drawn at random
        return QUESTION_TYPES[int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])]

    def update(self, x: np.ndarray, action: str, r: float) -> None:
        """One observation: A_a += x x^T, b_a += r x."""
        a = QUESTION_TYPES.index(action)
        self.A[a] += np.outer(x, x)
        self.b[a] += r * x
        self._inv = None

    def merge(self, dA: np.ndarray, db: np.ndarray) -> None:
        """Add other workers' sufficient statistics (sums of x x^T and r x per action)."""
        self.A += dA
        self.b += db
        self._inv = None

    def to_json(self) -> dict:
        return {"kind": "linucb", "version": 1, "features": list(FEATURES), "actions": list(QUESTION_TYPES),
                "alpha": self.alpha, "A": self.A.tolist(), "b": self.b.tolist(), "info": self.info}  # fmt: skip

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json()) + "\n")


def load_policy(path: str | Path, alpha: float = 0.0) -> LinUCBPolicy:
    """A saved LinUCB policy (deployed greedy: `alpha` 0); an error names the file when it does not fit."""
    data = json.loads(Path(path).read_text())
    if (
        data.get("kind") != "linucb"
        or data.get("features") != list(FEATURES)
        or data.get("actions") != list(QUESTION_TYPES)
    ):
        raise ValueError(f"{path}: not a LinUCB policy over this state and these question types")
    return LinUCBPolicy(alpha=alpha, A=data["A"], b=data["b"], info=data.get("info", {}))


def make_policy(name: str, path: str | Path | None = None):
    """`learned` (the LinUCB policy at `path`), `random` or `fixed`."""
    if name == "learned":
        if path is None:
            raise ValueError("policy: 'learned' needs a policy file (policy_path)")
        return load_policy(path)
    if name == "random":
        return RandomPolicy()
    if name == "fixed":
        return FixedPolicy()
    raise ValueError(f"policy: {name!r} is not learned, random or fixed")
