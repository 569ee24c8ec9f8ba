"""Simulated sessions: targets of known ability answering typed questions, for training and measuring policies.

    sim = SimConfig(informative="deepen", sigma_informative=0.05, sigma_other=0.3)
    run = simulate(policy, SimTarget(ability=0.7), sim, max_turns=12, seed=3)   # types, scores, rewards, states
    separation_turn(run_a.scores, run_b.scores)                                # turns until 95% apart, or None

A simulated answer to a question of type q from a target of ability theta is graded on `points` criterion
points, each p_j = clip(mu_q + e + h_j, 0, 1), and the turn's score is their mean:

    mu_q = theta                                   (follow_up, clarify, switch_topic, seed)
    mu_q = theta * stability                       (challenge: an unstable target gives in)
    mu_q = theta - depth_decay * depth             (deepen; depth counts deepen turns since the last switch)
    e ~ N(0, sigma_q^2),  sigma_q = sigma_informative for the informative type, sigma_other for the rest
    h_j ~ N(0, sigma_point^2)

and asking the type just asked again gets a correlated answer, e = rho e_prev + sqrt(1 - rho^2) e_new (the
target repeats itself: less is learnt). Only one type tells much about theta; a policy that learns which
needs fewer turns to tell two targets apart. Plain Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from rayflow.agent.policy import QUESTION_TYPES, SEED, State, reward, uncertainty
from rayflow.config import Config

Z95 = 1.959964  # two-sided 95% normal quantile


class SimTarget(Config):
    """A simulated target: its true ability (mean criterion fulfilment) and how it behaves when pressed."""

    ability: float = Field(0.5, ge=0, le=1, description="mean criterion fulfilment in [0, 1]")
    stability: float = Field(1.0, ge=0, le=1, description="share of its ability it keeps when challenged")
    depth_decay: float = Field(0.0, ge=0, description="fulfilment lost per deepen turn")


class SimConfig(Config):
    """The simulated environment: which question type is informative and how noisy the others are."""

    informative: str = Field("deepen", description="the question type whose answers reveal the ability")
    sigma_informative: float = Field(
        0.05, ge=0, description="answer noise (score sd) of the informative type"
    )
    sigma_other: float = Field(0.3, ge=0, description="answer noise of every other type")
    sigma_point: float = Field(0.05, ge=0, description="per-point noise around the turn's fulfilment")
    repeat_correlation: float = Field(
        0.7, ge=0, lt=1, description="correlation of the noise when the same type is asked twice in a row"
    )
    points: int = Field(3, ge=1, description="criterion points per item")
    redundancy_penalty: float = Field(
        0.01, ge=0, description="lambda: reward lost for repeating the last type"
    )


@dataclass
class SimRun:
    """One simulated item session: per turn the type asked, the score, the state before it and the reward."""

    types: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


def simulate(policy, target: SimTarget, sim: SimConfig, max_turns: int, seed: int, learner=None) -> SimRun:
    """Run `max_turns` turns (the first a seed question) of `policy` against `target`.

    `learner`, when given (a `LinUCBPolicy`), receives every (state, action, reward) as it happens.
    """
    if sim.informative not in QUESTION_TYPES:
        raise ValueError(f"informative: {sim.informative!r} is not one of {', '.join(QUESTION_TYPES)}")
    rng = np.random.default_rng(seed)
    run = SimRun()
    noise, depth, covered = 0.0, 0, np.zeros(sim.points, dtype=bool)
    for turn in range(max_turns):
        state = State(turn, max_turns, list(run.scores), list(run.types), 1.0 - covered.mean())
        qtype = SEED if turn == 0 else policy.choose(state, rng)
        sigma = sim.sigma_informative if qtype == sim.informative else sim.sigma_other
        fresh = rng.normal(0.0, sigma)
        repeated = bool(run.types) and qtype == run.types[-1]
        rho = sim.repeat_correlation
        noise = rho * noise + math.sqrt(1 - rho * rho) * fresh if repeated else fresh
        depth = depth + 1 if qtype == "deepen" else (0 if qtype == "switch_topic" else depth)
        mean = target.ability
        if qtype == "challenge":
            mean *= target.stability
        elif qtype == "deepen":
            mean -= target.depth_decay * depth
        points = np.clip(mean + noise + rng.normal(0.0, sim.sigma_point, sim.points), 0.0, 1.0)
        covered |= points > 0
        score = float(points.mean())
        if turn > 0:
            x = state.features()
            r = reward(run.scores, [*run.scores, score], qtype, run.types[-1], sim.redundancy_penalty)
            run.states.append(x)
            run.rewards.append(r)
            if learner is not None:
                learner.update(x, qtype, r)
        run.types.append(qtype)
        run.scores.append(score)
    return run


def separation_turn(scores_a: list[float], scores_b: list[float]) -> int | None:
    """The number of turns n from which on the two targets' mean scores differ with 95% confidence,
    |mean_a - mean_b| > 1.96 sqrt(u_a^2 + u_b^2) (u: `uncertainty` of each's first n scores) at n and at
    every later turn given; None if they are not apart at the last one."""
    found = None
    for n in range(min(len(scores_a), len(scores_b)), 0, -1):
        a, b = scores_a[:n], scores_b[:n]
        if abs(np.mean(a) - np.mean(b)) <= Z95 * math.hypot(uncertainty(a), uncertainty(b)):
            break
        found = n
    return found
